"""Step-wise evaluation of a model bundle over whole runs, exactly as the agent scores, and its metrics.

`score_runs` feeds every run's windows through `edge_agent.scorer.Scorer` one window per sensor per
step (runs are sensors; many are stepped in one onnxruntime call, as the agent batches sensors), from
a fresh state at each run's first window, and keeps the scores and the alarm states the scorer's own
state machine produced. Features come from `edge_agent.features.extract_batch` with the bundle's
feature spec (via `trainer.sequences`), the code the agent runs on every window.

`evaluate` adds the targets the trainer uses (degraded := the loader's label OR remaining life <=
`horizon_s`; fault classes named by the bundle's `p_<class>` outputs) and `summarize` computes the
metrics of `trainer.metrics` into the `metrics.json` layout documented in docs/evaluation.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edge_agent.alarms import STATE_NAMES
from edge_agent.scorer import Scorer
from trainer.data.runs import Run
from trainer.metrics import RunEval, cell_of, fault_classes_of, quality, summary_row
from trainer.sequences import FeatureSequence, build_sequences

STATE_CODES = {name: i for i, name in enumerate(STATE_NAMES)}
MAX_BATCH_SENSORS = 4096


def score_runs(
    scorer: Scorer, seqs: Sequence[FeatureSequence], *, progress: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scores [N, K], states int8 [N]) per run, stepping the runs side by side as sensors.

    Each run is its own sensor id with a fresh state; step k scores window k of every run that is
    that long, in one `Scorer.score_features` call (at most MAX_BATCH_SENSORS runs at a time).
    """
    K = len(scorer.outputs)
    out: list[tuple[np.ndarray, np.ndarray]] = [
        (np.empty((len(s), K), np.float32), np.empty(len(s), np.int8)) for s in seqs
    ]
    total = sum(len(s) for s in seqs)
    bar = tqdm(total=total, desc="scoring", unit="window", disable=not progress)
    for g0 in range(0, len(seqs), MAX_BATCH_SENSORS):
        group = list(range(g0, min(g0 + MAX_BATCH_SENSORS, len(seqs))))
        ids = {i: f"eval{i:06d}" for i in group}
        for i in group:
            scorer.forget(ids[i])
        longest = max((len(seqs[i]) for i in group), default=0)
        for k in range(longest):
            live = [i for i in group if len(seqs[i]) > k]
            x = np.stack([seqs[i].extracted[k] for i in live])
            batch = scorer.score_features([ids[i] for i in live], x)
            for j, i in enumerate(live):
                out[i][0][k] = batch.scores[j]
                out[i][1][k] = STATE_CODES[batch.states[j]]
            bar.update(len(live))
        for i in group:
            scorer.forget(ids[i])
    bar.close()
    return out


def runs_the_model_accepts(trained_on: Any, runs: Sequence[Run]) -> tuple[list[Run], list[dict[str, Any]]]:
    """(runs the agent would score, [{"run_id", "windows", "reason"}] for the ones it would refuse).

    The agent refuses a window whose sample rate, length or shaft speed is not one the model was
    trained on (`model_mismatch`, edge_agent.trained_on); evaluating such runs would measure what no
    gateway does, so they are left out and named. A card without `trained_on` (None) keeps every run.
    """
    if trained_on is None:
        return list(runs), []
    kept: list[Run] = []
    left_out: list[dict[str, Any]] = []
    for run in runs:
        reason = trained_on.mismatch(int(run.windows.shape[1]), float(run.fs), float(run.rpm))
        if reason is None:
            kept.append(run)
        else:
            left_out.append({"run_id": run.run_id, "windows": len(run.windows), "reason": reason})
    return kept, left_out


def evaluate_runs(
    scorer: Scorer,
    runs: Sequence[Run],
    *,
    horizon_s: float | None = None,
    progress: bool = True,
) -> tuple[list[RunEval], list[FeatureSequence], dict[str, float]]:
    """Features, targets and step-wise scores for every run. Returns (results, sequences, timings)."""
    classes = fault_classes_of(scorer.outputs)
    t0 = time.perf_counter()
    seqs = build_sequences(runs, scorer.spec, horizon_s=horizon_s, classes=classes, progress=progress)
    t1 = time.perf_counter()
    scored = score_runs(scorer, seqs, progress=progress)
    t2 = time.perf_counter()
    results = [
        RunEval(
            run_id=run.run_id,
            machine=run.machine,
            sensor=run.sensor,
            source=run.source,
            ts=np.asarray(seq.ts, np.float64),
            scores=sc,
            states=st,
            target=seq.target,
            fault=seq.fault,
            failed_at_end=bool(run.labels is not None and run.labels.failed_at_end),
            failure_after_end_s=None if run.labels is None else run.labels.failure_after_end_s,
        )
        for run, seq, (sc, st) in zip(runs, seqs, scored, strict=True)
    ]
    windows = sum(len(s) for s in seqs)
    timings = {
        "features_s": t1 - t0,
        "scoring_s": t2 - t1,
        "windows": float(windows),
        "scoring_us_per_window": (t2 - t1) / windows * 1e6 if windows else 0.0,
    }
    return results, seqs, timings


def evaluate_bundle(
    bundle: Any,
    runs: Sequence[Run],
    *,
    signature: str,
    horizon_s: float | None = None,
    train_runs: Sequence[Run] = (),
    baselines: bool = False,
    lstm_epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    data_paths: Sequence[str] = (),
    held_out: bool = False,
    fit_split: tuple[Sequence[Run], Sequence[Run]] | None = None,
) -> tuple[dict[str, Any], list[RunEval]]:
    """metrics.json's content (docs/evaluation.md) and the per-run results, for a loaded bundle.

    `signature` is what the caller established ("verified" or "not verified"); with `baselines`,
    they are fitted on `train_runs` (trainer.baselines; `fit_split` as there) and compared on the
    same `runs`.
    """
    from datetime import UTC, datetime

    scorer = Scorer.from_loaded(bundle)
    classes = fault_classes_of(bundle.outputs)
    results, seqs, timings = evaluate_runs(scorer, runs, horizon_s=horizon_s, progress=progress)
    q = quality(results, classes)
    card = bundle.card
    out: dict[str, Any] = {
        "schema": 1,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "signature": signature,
        "signature_key_id": bundle.key_id if signature == "verified" else None,
        "model": {
            "path": str(bundle.path),
            "model_version": bundle.model_version,
            "parent_version": card.get("parent_version"),
            "mode": card.get("mode"),
            "outputs": list(bundle.outputs),
            "state_shape": list(bundle.state_shape),
            "thresholds": bundle.thresholds.to_dict(),
        },
        "data": {
            "paths": [str(p) for p in data_paths],
            "held_out": bool(held_out),
            "runs": len(runs),
            "sources": sorted({r.source for r in runs}),
            "horizon_s": horizon_s,
        },
        "windows": q["windows"],
        "alarms": q["alarms"],
        "fault_types": q["fault_types"],
        "runs": q["runs"],
        "timing": timings,
        "baselines": None,
    }
    if baselines:
        if not train_runs:
            raise ValueError("baselines need training runs")
        from trainer.baselines import run_baselines

        out["baselines"] = run_baselines(
            bundle,
            train_runs,
            seqs,
            results,
            horizon_s=horizon_s,
            gru_row=summary_row(f"{cell_of(card).upper()} (bundle)", q),
            lstm_epochs=lstm_epochs,
            seed=seed,
            progress=progress,
            fit_split=fit_split,
        )
    return out, results
