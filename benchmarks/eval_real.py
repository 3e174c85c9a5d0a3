"""Benchmark (`make eval-real`): real bearings with the model a user gets from `gruwatch train` DEFAULTS.

Every model here is trained by `trainer.cli.main(["--data", ..., "--out", ...])` — the command a user
runs, no other flag — and scored step-wise through `edge_agent.scorer.Scorer` (the agent's code:
features, per-sensor baseline, GRU step, alarm state machine) by `trainer.evaluate.evaluate_runs`.
Nothing is tuned on the test side: the protocols are fixed here, the trainer's defaults were chosen
on training-side validation (benchmarks/tune_real.py, docs/training.md).

- FEMTO/PRONOSTIA, leave one bearing out over the four shared bearings: train on three (the trainer
  splits them itself), score both accelerometers of the fourth. Per held-out sensor: lead time of
  the sustained alarm (end of life minus the raise of the alarm still on at the end; minutes and %
  of life), false alarms = alarm raises in the first half of life, and AUROC of the health score
  against degraded := remaining life <= 1,800 s (fixed a priori; the trainer picks its own labels).
  Compared on the same split and the same (baseline-normalised) features with: logistic
  regression, a gradient-boosted model (scikit-learn), both calibrated with the bundle's settings on
  the bundle's validation runs, and the self-baseline RMS rule (log RMS above the sensor's own
  healthy mean + 6σ for 3 windows).
- CWRU: trained on load 0 (the 12 kHz files + the normal recording) and tested on load 1 and on
  load 2; trained on loads 0-1 and tested on load 2. Window accuracy of the fault-type output and the
  confusion matrix; windows whose class the bundle does not know are named, never silently dropped.

    .venv/bin/python benchmarks/eval_real.py                 # both protocols, prints tables
    .venv/bin/python benchmarks/eval_real.py --write-docs    # and replaces the tables in docs/evaluation.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.bundle import load_bundle  # noqa: E402
from edge_agent.scorer import Scorer  # noqa: E402
from trainer import rms_rule  # noqa: E402
from trainer.data import load_runs  # noqa: E402
from trainer.data.runs import Run  # noqa: E402

HORIZON_S = 1800.0  # AUROC labels only (fixed a priori); the trainer chooses its own horizon
RULE_SIGMA = rms_rule.SIGMA
RULE_WINDOWS = rms_rule.WINDOWS
DOC = REPO / "docs" / "evaluation.md"
BEGIN, END = "<!-- eval-real:begin -->", "<!-- eval-real:end -->"


def train_default(paths: Sequence[Path], out: Path) -> tuple[Path, str]:
    """`gruwatch train --data PATHS --out OUT` with no other flag; returns (bundle, what it printed)."""
    from trainer.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--data", *map(str, paths), "--out", str(out), "--no-progress"])
    if code != 0:
        raise SystemExit(f"gruwatch train failed ({code}):\n{err.getvalue()}")
    return out, err.getvalue()


def scored(
    bundle_dir: Path, runs: Sequence[Run], horizon_s: float | None
) -> tuple[Any, list[Any], list[Any]]:
    from trainer.evaluate import evaluate_runs

    bundle = load_bundle(bundle_dir, allow_unsigned=True)
    results, seqs, _ = evaluate_runs(Scorer.from_loaded(bundle), runs, horizon_s=horizon_s, progress=False)
    return bundle, results, seqs


# ------------------------------------------------------------------------------------------- FEMTO


def alarm_facts(ts: np.ndarray, states: np.ndarray, degraded: np.ndarray) -> dict[str, Any]:
    """Lead (s, fraction of life) of the sustained alarm, first-half false alarms, AUROC."""
    on = states == 2
    raises = np.flatnonzero(on & ~np.r_[False, on[:-1]])
    life = float(ts[-1] - ts[0])
    lead_s = float(ts[-1] - ts[raises[-1]]) if on[-1] and raises.size else None
    half = ts[0] + life / 2.0
    return {
        "lead_min": None if lead_s is None else lead_s / 60.0,
        "lead_pct": None if lead_s is None else 100.0 * lead_s / life,
        "fa_first_half": int(np.sum(ts[raises] < half)),
    }


def _auroc(target: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    known = ~np.isnan(target)
    if len(np.unique(target[known])) < 2:
        return None
    return float(roc_auc_score(target[known], score[known]))


def replay(health: Sequence[np.ndarray], thresholds: dict[str, Any]) -> list[np.ndarray]:
    """The agent's alarm state machine over each run from 'ok' (edge_agent.alarms.step)."""
    from edge_agent.alarms import AlarmState, Thresholds, step

    t = Thresholds.from_dict(thresholds)
    out = []
    for h in health:
        st = AlarmState.fresh(1)
        states = np.zeros(len(h), np.int8)
        for k, v in enumerate(h):
            _, new = step(st, np.array([v], np.float64), t)
            states[k] = new[0]
        out.append(states)
    return out


def comparison_models(
    bundle: Any, train_seqs: Sequence[Any], val_seqs: Sequence[Any], test_seqs: Sequence[Any]
) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """LR, gradient boosting and the self-baseline RMS rule on the bundle's features: (health, states)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from trainer.baselines import card_config
    from trainer.calibrate import ScoredRun, calibrate, settings_of

    calibration = settings_of(card_config(bundle.card))  # as the bundle was calibrated
    out: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    x = np.concatenate([s.features for s in train_seqs])
    y = np.concatenate([s.target for s in train_seqs])
    keep = ~np.isnan(y)
    for name, model in (
        (
            "logistic regression",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")),
        ),
        (
            "gradient boosting",
            HistGradientBoostingClassifier(max_iter=100, class_weight="balanced", random_state=0),
        ),
    ):
        model.fit(x[keep], y[keep])
        val_h = [model.predict_proba(s.features)[:, 1] for s in val_seqs]
        thr, _ = calibrate(
            [
                ScoredRun(h.astype(np.float64), s.target, s.interval_s)
                for h, s in zip(val_h, val_seqs, strict=True)
            ],
            **calibration,
        )
        health = [model.predict_proba(s.features)[:, 1] for s in test_seqs]
        out[name] = (health, replay(health, thr))
    j = bundle.spec.names.index("log_rms")
    level = rms_rule.LEVEL  # the baseline's scale: sign(z)·log1p|z|
    health = [(s.features[:, j] >= level).astype(np.float64) for s in test_seqs]
    rule = {"warning": 0.5, "alarm": 0.5, "raise_windows": RULE_WINDOWS, "clear_windows": RULE_WINDOWS}
    out[f"RMS > own mean + {RULE_SIGMA:g}σ, {RULE_WINDOWS} windows"] = (
        [s.features[:, j] for s in test_seqs],
        replay(health, rule),
    )
    return out


def run_femto(root: Path, work: Path) -> tuple[list[list[Any]], list[str]]:
    from trainer.sequences import build_sequences

    folders = sorted(p for p in (root / "femto").rglob("Bearing*") if p.is_dir())
    print(
        f"FEMTO: {', '.join(f.name for f in folders)}; leave one bearing out; AUROC vs RUL <= {HORIZON_S:g} s"
    )
    rows: list[list[Any]] = []
    notes: list[str] = []
    for test in folders:
        t0 = time.perf_counter()
        train_folders = [f for f in folders if f != test]
        bundle_dir, _printed = train_default(train_folders, work / f"femto-{test.name}")
        bundle, results, test_seqs = scored(bundle_dir, load_runs([test], progress=False), HORIZON_S)
        plan = bundle.card["training_data"].get("plan", {})
        notes.append(
            f"{test.name} held out: trained on {', '.join(f.name for f in train_folders)}; "
            f"{plan.get('kind')}, horizon {plan.get('horizon_s') or 0:.0f} s, "
            f"alarm {bundle.thresholds.alarm:.3g} after {bundle.thresholds.raise_windows} windows"
        )
        train_runs = load_runs(train_folders, progress=False)
        val_ids = set(bundle.card["training_data"]["validation_runs"])
        horizon = plan.get("horizon_s")
        tr = build_sequences(
            [r for r in train_runs if r.run_id not in val_ids], bundle.spec, horizon_s=horizon, progress=False
        )
        va = build_sequences(
            [r for r in train_runs if r.run_id in val_ids], bundle.spec, horizon_s=horizon, progress=False
        )
        models = {"GRU (gruwatch train defaults)": ([r.health for r in results], [r.states for r in results])}
        models.update(comparison_models(bundle, tr, va, test_seqs))
        for name, (health, states) in models.items():
            for seq, h, st in zip(test_seqs, health, states, strict=True):
                facts = alarm_facts(seq.ts, st, seq.target)
                rows.append(
                    [
                        test.name,
                        seq.run_id.rsplit("-", 1)[-1],
                        name,
                        facts["lead_min"],
                        facts["lead_pct"],
                        facts["fa_first_half"],
                        _auroc(seq.target, np.asarray(h, np.float64)),
                    ]
                )
        print(f"  {test.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows, notes


def femto_summary(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    out = []
    for name in dict.fromkeys(r[2] for r in rows):
        mine = [r for r in rows if r[2] == name]
        leads = [r[4] if r[4] is not None else 0.0 for r in mine]
        aucs = [r[6] for r in mine if r[6] is not None]
        out.append(
            [
                name,
                f"{sum(r[4] is not None for r in mine)}/{len(mine)}",
                float(np.median(leads)),
                float(np.median([r[3] if r[3] is not None else 0.0 for r in mine])),
                sum(r[5] for r in mine),
                float(np.mean(aucs)) if aucs else None,
            ]
        )
    return out


# -------------------------------------------------------------------------------------------- CWRU


def run_cwru(root: Path, work: Path) -> tuple[list[list[Any]], list[str]]:
    files = sorted((root / "cwru").glob("*.mat"))
    by_load: dict[int, list[Path]] = {}
    for f in files:
        load = int(f.stem.split("_")[-2])
        by_load.setdefault(load, []).append(f)
    twelve = {k: [f for f in v if f.name.startswith("12k_")] for k, v in by_load.items()}
    normal = [f for f in files if f.name.startswith("normal_")]
    protocols = [
        ("load 0 -> load 1", [*twelve[0], *normal], twelve.get(1, [])),
        ("load 0 -> load 2", [*twelve[0], *normal], twelve.get(2, [])),
        ("loads 0-1 -> load 2", [*twelve[0], *twelve.get(1, []), *normal], twelve.get(2, [])),
    ]
    rows: list[list[Any]] = []
    notes: list[str] = []
    bundles: dict[tuple[str, ...], Path] = {}
    for name, train_files, test_files in protocols:
        t0 = time.perf_counter()
        key = tuple(sorted(map(str, train_files)))
        if key not in bundles:  # load 0 -> 1 and load 0 -> 2 share one model
            bundles[key], _ = train_default(train_files, work / f"cwru-{len(bundles)}")
        bundle, results, _seqs = scored(bundles[key], load_runs(test_files, progress=False), None)
        classes = [o[2:] for o in bundle.outputs[1:]]
        pred = np.concatenate([r.scores[:, 1:].argmax(axis=1) for r in results])
        true = np.concatenate([r.fault for r in results])
        left_out = int(np.sum(true < 0))
        if left_out:
            notes.append(
                f"{name}: {left_out} test windows left out: their class is not among the bundle's {classes}"
            )
        use = true >= 0
        conf = np.zeros((len(classes), len(classes)), int)
        np.add.at(conf, (true[use], pred[use]), 1)
        acc = float(np.mean(pred[use] == true[use])) if use.any() else None
        # Every test recording is faulty: the share of its windows in the health alarm (state 2).
        in_alarm = float(np.mean(np.concatenate([r.states for r in results]) == 2))
        rows.append([name, acc, int(use.sum()), left_out, classes, conf, in_alarm])
        print(f"  CWRU {name}: accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows, notes


# ------------------------------------------------------------------------------------------ output


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def report(
    femto: tuple[list[list[Any]], list[str]] | None,
    cwru: tuple[list[list[Any]], list[str]] | None,
    seconds: float,
) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"Measured {date} by `make eval-real` (`.venv/bin/python benchmarks/eval_real.py --write-docs`) on the "
        f"shared 2-core development machine (other work running), {seconds / 60:.1f} min in all. Every model is "
        "`gruwatch train --data <training files> --out B` with no other flag, scored step-wise by the agent's "
        "`Scorer`."
    ]
    if femto is not None:
        rows, notes = femto
        parts.append(
            "**FEMTO, leave one bearing out, per held-out sensor** (lead: end of life minus the raise of "
            "the alarm still on at the end; false alarms: raises in the first half of life; AUROC against "
            f"remaining life <= {HORIZON_S:g} s):"
        )
        parts.append(
            md_table(
                [
                    "held-out bearing",
                    "sensor",
                    "model",
                    "lead min",
                    "lead % of life",
                    "false alarms 1st half",
                    "AUROC",
                ],
                rows,
            )
        )
        parts.append("**FEMTO, all 8 held-out sensors** (median lead counts a missed sensor as 0):")
        parts.append(
            md_table(
                [
                    "model",
                    "sustained alarm before failure",
                    "median lead % of life",
                    "median lead min",
                    "false alarms 1st half",
                    "mean AUROC",
                ],
                femto_summary(rows),
            )
        )
        parts.append("\n".join(f"- {n}" for n in notes))
    if cwru is not None:
        rows, notes = cwru
        parts.append(
            "**CWRU** (window accuracy of the fault-type output; training: 12 kHz files of the training "
            "loads + the normal recording):"
        )
        parts.append(
            md_table(
                ["split", "window accuracy", "windows", "windows left out", "faulty windows in health alarm"],
                [[*r[:4], r[6]] for r in rows],
            )
        )
        for r in rows:
            parts.append(f"Confusion, {r[0]} (rows: true class, columns: predicted):")
            parts.append(
                md_table(
                    ["true \\ predicted", *r[4]],
                    [[c, *map(int, row)] for c, row in zip(r[4], r[5], strict=True)],
                )
            )
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


def write_docs(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = f"{head}{BEGIN}\n{text}\n{END}{tail}"
    else:
        doc = f"{doc.rstrip()}\n\n## Real bearings with `gruwatch train` defaults (`make eval-real`)\n\n{BEGIN}\n{text}\n{END}\n"
    DOC.write_text(doc)
    print(f"tables written into {DOC}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-root",
        default=os.environ.get("GRUWATCH_REAL_DATA", str(REPO.parent / "shared" / "data")),
        help="folder holding cwru/ and femto/ (default: $GRUWATCH_REAL_DATA or ../shared/data)",
    )
    p.add_argument("--only", choices=["cwru", "femto"], help="run one protocol only")
    p.add_argument("--write-docs", action="store_true", help="replace the tables in docs/evaluation.md")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    if not (root / "cwru").is_dir() and not (root / "femto").is_dir():
        print(f"no real data under {root} (expected cwru/ and femto/); set GRUWATCH_REAL_DATA")
        return 1
    warnings.filterwarnings("ignore", category=UserWarning)
    t0 = time.perf_counter()
    femto = cwru = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "cwru") and (root / "cwru").is_dir():
            cwru = run_cwru(root, Path(tmp))
        if args.only in (None, "femto") and (root / "femto").is_dir():
            femto = run_femto(root, Path(tmp))
    text = report(femto, cwru, time.perf_counter() - t0)
    print("\n" + text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
