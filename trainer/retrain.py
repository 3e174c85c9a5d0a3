"""Retraining from what the edge agents collected: labels from maintenance events, champion vs challenger.

`retrain(...)` is `gruwatch retrain` without its command line (trainer/retrain_cli.py):

1. **Collected data**: agent exports (`gruwatch agent export`), read with
   `trainer.data.agent.load_agent_features`: the features the agent computed and scored for EVERY
   window, in time order. The challenger trains on exactly those, at the agent's cadence (one GRU
   step per window); raw samples (kept for a sampled share and around alarms) are not needed.
   Sensors whose stored features have another width than the current model's (scored by a model
   with another feature spec) are left out and counted.
2. **Labels** from a maintenance-events CSV (`machine,sensor,ts,event`; trainer/data/events.py):
   a window is degraded when a failure of its bearing follows within `horizon_s`. Without events a
   forecast-mode model (healthy-only) can still retrain; a supervised one needs failures.
3. **Split by machine**: `holdout_fraction` of the machines (failing and healthy ones stratified) are
   held out for the comparison; the rest train the challenger (with the trainer's own validation
   split for its best epoch and its alarm thresholds).
4. **Challenger**: the current model fine-tuned (its weights read back from model.onnx,
   trainer/champion.py; scaler, mode and fault head kept), or a fresh model (`from_scratch`).
5. **Comparison** on the same held-out windows, step by step through `edge_agent.scorer.Scorer` as the
   agent scores, with `gruwatch evaluate`'s metrics (trainer/evaluate.py); each held-out sensor's
   history is cut into bearing lives at its failures and replacements. The challenger wins only if it
   is better by more than `min_improvement` on `metric` and (unless `allow_more_false_alarms`) raises
   no more false alarms than the champion. OUT/comparison.json is written either way; the challenger
   bundle (signed) is kept in OUT/bundle only when it wins.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from edge_agent.baseline import BaselineSpec, normalise_run
from edge_agent.errors import GruwatchError
from gruwatch.options import check_output_dir, check_signing_key
from trainer.data.agent import CollectedStream, is_agent_export, load_agent_features
from trainer.data.events import LIFE_ENDING, MaintenanceEvent, label_from_events, load_events_csv
from trainer.data.runs import DataError
from trainer.sequences import FeatureSequence

#: metric name -> True when higher is better. Values come from trainer.evaluate.summary_row.
METRICS: dict[str, bool] = {
    "auroc": True,
    "detected": True,
    "lead_fraction_median": True,
    "false_alarms_per_machine_day": False,
}
FINE_TUNE_EPOCHS = 15
FINE_TUNE_LR = 1e-3
SCRATCH_EPOCHS = 30


@dataclass
class RetrainOptions:
    collected: Sequence[str]
    current: str
    out: str
    signing_key: str | None = None
    events: str | None = None
    trusted_keys: Sequence[str] = ()
    from_scratch: bool = False
    horizon_s: float | None = None
    metric: str = "auroc"
    min_improvement: float = 0.0
    allow_more_false_alarms: bool = False
    holdout_fraction: float = 0.3
    epochs: int | None = None
    lr: float | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class Labelled:
    """One collected sensor stream with its targets and its bearing lives (index ranges)."""

    stream: CollectedStream
    seq: FeatureSequence
    lives: list[tuple[int, int, bool]]  # [start, stop) windows, and whether the life ended in a failure
    machine: str = ""
    labels: Any = None  # split_by_machine reads .labels.failed_at_end

    def __post_init__(self) -> None:
        self.machine = self.stream.machine
        self.labels = SimpleNamespace(failed_at_end=any(f for _, _, f in self.lives))


@dataclass
class Outcome:
    winner: str
    reason: str
    comparison: dict[str, Any]
    bundle: Path | None  # OUT/bundle when the challenger won
    table: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- checks
def _check_options(opts: RetrainOptions) -> tuple[Any, list[MaintenanceEvent] | None]:
    """Everything that can fail fast, before any data is read: the bundle, the key, the events, OUT."""
    from edge_agent.bundle import load_bundle

    if opts.metric not in METRICS:
        raise GruwatchError(f"--metric {opts.metric!r}: choose one of {', '.join(METRICS)}")
    if not 0.0 < opts.holdout_fraction < 1.0:
        raise GruwatchError("--holdout-fraction must be within (0, 1)")
    check_output_dir(opts.out, fresh=True)
    if opts.signing_key is None:
        raise GruwatchError(
            "--signing-key is needed: agents accept only signed bundles "
            "(create a pair with `gruwatch keys new --out keys/`)"
        )
    check_signing_key(opts.signing_key)
    for path in opts.collected:
        if not is_agent_export(Path(path)):
            raise GruwatchError(
                f"--collected {path}: not an agent export (no manifest.json of format "
                "gruwatch-agent-export); make one with `gruwatch agent export --store PATH --out DIR`"
            )
    if opts.trusted_keys:
        bundle = load_bundle(opts.current, trusted_keys=[Path(k) for k in opts.trusted_keys])
    else:
        bundle = load_bundle(opts.current, allow_unsigned=True)
    events = load_events_csv(opts.events) if opts.events else None
    return bundle, events


def _horizon(opts: RetrainOptions, card: dict[str, Any]) -> float | None:
    if opts.horizon_s is not None:
        if not opts.horizon_s > 0:
            raise GruwatchError("--horizon must be a positive duration")
        return float(opts.horizon_s)
    h = (card.get("training") or {}).get("horizon_s")
    return float(h) if isinstance(h, int | float) and h > 0 else None


# --------------------------------------------------------------------------------------------- data
def _lives(t_abs: np.ndarray, events: Sequence[MaintenanceEvent]) -> list[tuple[int, int, bool]]:
    """Bearing lives as index ranges: each failure/repair/replacement ends the life it falls in."""
    ends = sorted((e for e in events if e.event in LIFE_ENDING), key=lambda e: e.ts_s)
    out: list[tuple[int, int, bool]] = []
    start = 0
    for e in ends:
        stop = int(np.searchsorted(t_abs, e.ts_s, side="right"))  # windows at or before the event
        if stop > start:
            out.append((start, stop, e.event == "failure"))
            start = stop
    if start < t_abs.size:
        out.append((start, int(t_abs.size), False))
    return out


def label_streams(
    streams: Sequence[CollectedStream],
    events: Sequence[MaintenanceEvent] | None,
    horizon_s: float | None,
    baseline: BaselineSpec | None = None,
) -> list[Labelled]:
    """Targets (1 = a failure follows within horizon_s, 0 = healthy) and lives of every stream.

    With the model's per-sensor `baseline`, the model's inputs are the stored (extracted) features
    normalised as the agent does, a new baseline per life (a replacement resets it).
    """
    out = []
    for s in streams:
        t_abs = s.ts_ns.astype(np.float64) / 1e9
        mine = [e for e in events or () if e.machine == s.machine and e.sensor in (None, s.sensor)]
        if horizon_s is not None:
            labels = label_from_events(t_abs, mine, horizon_s=horizon_s)
            target = np.isfinite(labels.rul_s).astype(np.float32)
        else:  # forecast mode without a horizon: every window counts as healthy
            target = np.zeros(len(s), np.float32)
        seq = FeatureSequence(
            run_id=f"collected-{s.agent_id or Path(s.export).name}-{s.machine}-{s.sensor}",
            machine=s.machine,
            source="agent",
            features=s.features if baseline is None else _per_life(baseline, s.features, _lives(t_abs, mine)),
            ts=(s.ts_ns - s.ts_ns[0]).astype(np.float64) / 1e9,
            target=target,
            fault=np.full(len(s), -1, np.int64),
            raw=None if baseline is None else s.features,
        )
        out.append(Labelled(s, seq, _lives(t_abs, mine)))
    return out


def _per_life(
    baseline: BaselineSpec, feats: np.ndarray, lives: Sequence[tuple[int, int, bool]]
) -> np.ndarray:
    out = np.zeros(feats.shape, np.float32)
    for a, b, _ in lives:
        out[a:b] = normalise_run(baseline, feats[a:b])
    return out


def _fingerprint(streams: Sequence[CollectedStream]) -> str:
    h = hashlib.sha256()
    for s in sorted(streams, key=lambda x: (x.machine, x.sensor, int(x.ts_ns[0]) if len(x) else 0)):
        h.update(f"{s.machine}/{s.sensor}/{len(s)}".encode())
        h.update(s.ts_ns.tobytes())
        h.update(s.features.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- scoring
def evaluate_on(bundle_dir: Path, held_out: Sequence[Labelled], trusted: Sequence[str]) -> dict[str, Any]:
    """`gruwatch evaluate`'s quality metrics of a bundle on the held-out streams, cut into lives."""
    from edge_agent.bundle import load_bundle
    from edge_agent.scorer import Scorer
    from trainer.evaluate import RunEval, quality, score_runs, summary_row

    bundle = (
        load_bundle(bundle_dir, trusted_keys=[Path(k) for k in trusted])
        if trusted
        else load_bundle(bundle_dir, allow_unsigned=True)
    )
    scored = score_runs(Scorer.from_loaded(bundle), [h.seq for h in held_out], progress=False)
    results = []
    for h, (scores, states) in zip(held_out, scored, strict=True):
        for i, (a, b, failed) in enumerate(h.lives):
            results.append(
                RunEval(
                    run_id=f"{h.seq.run_id}-life{i}",
                    machine=h.machine,
                    sensor=h.stream.sensor,
                    source="agent",
                    ts=h.seq.ts[a:b],
                    scores=scores[a:b],
                    states=states[a:b],
                    target=h.seq.target[a:b],
                    fault=h.seq.fault[a:b],
                    failed_at_end=failed,
                )
            )
    q = quality(results)
    row = summary_row(bundle.model_version, q)
    row.pop("fault_accuracy", None)
    return {
        "model_version": bundle.model_version,
        "path": str(bundle_dir),
        **row,
        "windows": q["windows"]["count"],
        "healthy_machine_days": q["alarms"]["healthy_machine_days"],
        "missed": q["alarms"]["missed"],
    }


def decide(
    champion: dict[str, Any],
    challenger: dict[str, Any],
    metric: str,
    min_improvement: float,
    allow_more_fa: bool,
) -> tuple[str, str]:
    """("challenger" | "champion", why)."""
    a, b = champion.get(metric), challenger.get(metric)
    if b is None:
        return "champion", f"the challenger's {metric} is undefined on the held-out runs"
    if a is None:
        better, delta = True, math.inf
    else:
        delta = (b - a) if METRICS[metric] else (a - b)
        better = delta > min_improvement
    if not better:
        return (
            "champion",
            f"{metric}: challenger {b:.4g} vs champion {a:.4g}, not better by more than {min_improvement:g}",
        )
    if not allow_more_fa and challenger["false_alarms"] > champion["false_alarms"]:
        return (
            "champion",
            f"{metric} improved, but the challenger raised {challenger['false_alarms']} false alarms on the "
            f"held-out runs vs the champion's {champion['false_alarms']}",
        )
    shown = "n/a" if a is None else f"{a:.4g}"
    return "challenger", f"{metric}: challenger {b:.4g} vs champion {shown}"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def comparison_table(champion: dict[str, Any], challenger: dict[str, Any], metric: str) -> str:
    rows = [
        ("window AUROC", "auroc"),
        ("failing lives detected", "detected"),
        ("failing lives", "failing_runs"),
        ("median lead (s)", "lead_time_s_median"),
        ("median lead (fraction of life)", "lead_fraction_median"),
        ("false alarms", "false_alarms"),
        ("false alarms per machine-day", "false_alarms_per_machine_day"),
    ]
    lines = [f"  {'metric':<32} {'champion':>14} {'challenger':>14}"]
    for label, key in rows:
        mark = " *" if key == metric else ""
        lines.append(f"  {label + mark:<32} {_fmt(champion.get(key)):>14} {_fmt(challenger.get(key)):>14}")
    lines.append(
        f"  {'model':<32} {champion['model_version'][-14:]:>14} {challenger['model_version'][-14:]:>14}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- train
def _train_challenger(
    opts: RetrainOptions,
    bundle: Any,
    train_items: Sequence[Labelled],
    horizon_s: float | None,
    tmp: Path,
    fingerprint: str,
) -> Path:
    from trainer.champion import model_from_bundle
    from trainer.data import split_by_machine
    from trainer.export import write_model_bundle
    from trainer.train import TrainConfig, set_seeds, train

    card = bundle.card
    set_seeds(opts.seed)
    tr, va = split_by_machine(list(train_items), val_fraction=0.25, seed=opts.seed)
    known = {f.name for f in TrainConfig.__dataclass_fields__.values()}  # type: ignore[attr-defined]
    base = {k: v for k, v in (card.get("training") or {}).items() if k in known}
    base.update(
        progress=opts.progress,
        seed=opts.seed,
        horizon_s=horizon_s,
        device="cpu",
        keep="best",
        refit=False,
        mode=str(card.get("mode") or "auto"),
    )
    init = None
    if opts.from_scratch:
        base.update(epochs=opts.epochs or SCRATCH_EPOCHS)
        if opts.lr:
            base.update(lr=opts.lr)
    else:
        init = model_from_bundle(bundle)
        base.update(epochs=opts.epochs or FINE_TUNE_EPOCHS, lr=opts.lr or FINE_TUNE_LR)
    cfg = TrainConfig(**base)
    classes = tuple(init.fault_classes) if init is not None else ()
    result = train([x.seq for x in tr], [x.seq for x in va], cfg, classes=classes, init=init)
    training = {k: v for k, v in asdict(result.config).items() if k != "progress"}
    training["retrain"] = {"fine_tuned_from": None if opts.from_scratch else bundle.model_version}
    return write_model_bundle(
        tmp,
        result.model,
        held_out=[s.features for s in result.calibration_seqs],
        feature_spec=card["feature_spec"],
        thresholds=result.thresholds,
        validation=result.validation,
        training_data={
            "fingerprint": fingerprint,
            "runs": len(train_items),
            "sources": ["agent"],
            "train_runs": [x.seq.run_id for x in tr],
            "validation_runs": [x.seq.run_id for x in va],
        },
        parent_version=bundle.model_version,
        training=training,
        trained_on=_challenger_trained_on(card.get("trained_on"), tr + va),
        signing_key=opts.signing_key,
    )


def _challenger_trained_on(champion: Any, items: Sequence[Labelled]) -> Any:
    """The champion's accepted ranges (the collected windows passed its checks, and keeping them stops
    the range creeping from one retrain to the next) with the challenger's own window count."""
    if not isinstance(champion, dict):
        return champion
    return {**champion, "windows": int(sum(len(x.seq) for x in items))}


def retrain(opts: RetrainOptions) -> Outcome:
    """Run champion/challenger retraining; writes OUT/comparison.json (and OUT/bundle if the challenger won)."""
    from trainer.data import split_by_machine

    t0 = time.perf_counter()
    bundle, events = _check_options(opts)
    card = bundle.card
    mode = str(card.get("mode") or "supervised")
    horizon_s = _horizon(opts, card)
    if mode == "supervised" and horizon_s is None:
        raise GruwatchError(
            f"the current model ({bundle.model_version}) was not trained with a horizon: pass --horizon "
            "(how long before a failure a window counts as degraded, e.g. 1h)"
        )
    if mode == "supervised" and not events:
        raise GruwatchError(
            "--events CSV is needed to retrain a supervised model: the maintenance events say which "
            "bearings failed and when (`gruwatch simulate fleet --events-out` writes them for a simulated fleet)"
        )
    streams: list[CollectedStream] = []
    for path in opts.collected:
        streams.extend(load_agent_features(path))
    width = bundle.n_features
    usable = [s for s in streams if s.n_features == width and len(s) > 1]
    skipped = len(streams) - len(usable)
    if not usable:
        raise DataError(
            f"none of the {len(streams)} collected sensors has stored features of width {width} (the current "
            "model's); they were scored by a model with another feature spec"
        )
    items = label_streams(usable, events, horizon_s, bundle.spec.baseline)
    failing_lives = sum(f for x in items for _, _, f in x.lives)
    if mode == "supervised" and failing_lives == 0:
        raise DataError(
            "no failure in the events falls within the collected data, so nothing teaches the model what "
            "a failing bearing looks like; collect longer or check the events' machine/sensor names and times"
        )
    rest, held = split_by_machine(items, val_fraction=opts.holdout_fraction, seed=opts.seed)
    if not held or not rest:
        raise DataError(
            f"the collected data covers {len({x.machine for x in items})} machine(s); champion/challenger needs "
            "at least two (one to train on, one held out for the comparison)"
        )
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".challenger"
    fp = _fingerprint(usable)
    challenger_dir = _train_challenger(opts, bundle, rest, horizon_s, tmp, fp)
    trusted = list(opts.trusted_keys)
    champ = evaluate_on(Path(opts.current), held, trusted)
    chall = evaluate_on(challenger_dir, held, [])
    winner, reason = decide(champ, chall, opts.metric, opts.min_improvement, opts.allow_more_false_alarms)
    final: Path | None = None
    if winner == "challenger":
        final = out / "bundle"
        tmp.rename(final)
        chall["path"] = str(final)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        chall["path"] = None
    comparison = {
        "winner": winner,
        "reason": reason,
        "metric": opts.metric,
        "higher_is_better": METRICS[opts.metric],
        "min_improvement": opts.min_improvement,
        "champion": champ,
        "challenger": chall,
        "challenger_bundle": None if final is None else str(final),
        "fine_tuned": not opts.from_scratch,
        "held_out": {
            "machines": sorted({x.machine for x in held}),
            "sensors": len(held),
            "windows": int(sum(len(x.seq) for x in held)),
        },
        "training": {
            "machines": sorted({x.machine for x in rest}),
            "sensors": len(rest),
            "windows": int(sum(len(x.seq) for x in rest)),
        },
        "collected": {
            "paths": [str(p) for p in opts.collected],
            "sensors": len(streams),
            "skipped_other_feature_width": skipped,
            "failing_lives": int(failing_lives),
            "fingerprint": fp,
        },
        "horizon_s": horizon_s,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2, allow_nan=False) + "\n")
    return Outcome(winner, reason, comparison, final, comparison_table(champ, chall, opts.metric))
