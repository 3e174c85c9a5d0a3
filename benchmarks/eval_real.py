"""Benchmark: the GRU against the baselines on real bearing data (CWRU and FEMTO), step-wise as the agent.

Two protocols, fixed before looking at any result (nothing here is tuned on the test side):

- CWRU (seeded faults, stationary recordings): train on motor loads 0 and 1 (12 kHz files, the 48 kHz
  load-0 files and the 48 kHz normal baseline, all at 12 kHz), test on load 2. The trainer's own
  validation split (20 % of the training files, by file) picks the best epoch. Metric: window
  accuracy of the fault-type output over the 10 classes (normal + IR/B/OR × 0.007/0.014/0.021 in).
  Load 2 has no normal recording in this data, so its test windows cover the 9 fault classes.
- FEMTO/PRONOSTIA (run to failure): leave one bearing out; train on the other three (one of them
  held out by the trainer for early stopping and alarm calibration), test on the left-out bearing's
  two accelerometers. Degraded := remaining life <= HORIZON_S (30 min, fixed a priori). Metrics:
  alarm lead time (end of life minus the alarm still on at the end), and false alarms per healthy
  machine-day (here: per sensor-day, remaining life > 30 min).

Every model is a bundle written by the trainer (export + parity check) and scored by
`trainer.evaluate.evaluate_bundle` (edge_agent.scorer.Scorer, window by window), with the baselines
of `trainer.baselines` fitted on the same training runs. Prints tables; asserts nothing.

    .venv/bin/python benchmarks/eval_real.py                      # both, default settings
    .venv/bin/python benchmarks/eval_real.py --only cwru --epochs 5 --out /tmp/eval-real
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.bundle import load_bundle  # noqa: E402
from trainer.data import fingerprint, load_cwru, load_femto, split_by_machine  # noqa: E402
from trainer.data.runs import Run  # noqa: E402
from trainer.evaluate import evaluate_bundle  # noqa: E402
from trainer.export import write_model_bundle  # noqa: E402
from trainer.sequences import build_sequences, fault_classes, spec_for_runs  # noqa: E402
from trainer.train import TrainConfig, train  # noqa: E402

HORIZON_S = 1800.0
CWRU_CLASSES = ("normal", "B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007", "OR014", "OR021")


def train_bundle(
    tr: Sequence[Run],
    va: Sequence[Run],
    out: Path,
    cfg: TrainConfig,
    *,
    horizon_s: float | None,
    classes: Sequence[str] | None = None,
) -> tuple[Path, float]:
    """Fit on `tr`, pick the epoch and calibrate alarms on `va` (both inside the training side); write a bundle."""
    train_runs = [*tr, *va]
    spec = spec_for_runs(train_runs)
    classes = tuple(classes) if classes is not None else fault_classes(tr)
    tr_seqs = build_sequences(tr, spec, horizon_s=horizon_s, classes=classes, progress=False)
    va_seqs = build_sequences(va, spec, horizon_s=horizon_s, classes=classes, progress=False)
    result = train(tr_seqs, va_seqs, cfg, classes=classes)
    path = write_model_bundle(
        out,
        result.model,
        held_out=[s.features for s in (va_seqs or tr_seqs)],
        feature_spec=spec.to_dict(),
        thresholds=result.thresholds,
        validation=result.validation,
        training_data={
            "fingerprint": fingerprint(train_runs),
            "runs": len(train_runs),
            "sources": sorted({r.source for r in train_runs}),
            "train_runs": [r.run_id for r in tr],
            "validation_runs": [r.run_id for r in va],
        },
        training={k: v for k, v in vars(result.config).items() if k != "progress"},
    )
    return Path(path), result.timings["fit_s"]


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_f(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def run_cwru(root: Path, cfg: TrainConfig, work: Path, out: Path | None) -> None:
    t0 = time.perf_counter()
    runs = load_cwru(root / "cwru")
    train_runs = [r for r in runs if r.meta["load"] in (0, 1)]
    test_runs = [r for r in runs if r.meta["load"] == 2]
    print(f"CWRU: {len(train_runs)} training files (loads 0-1), {len(test_runs)} test files (load 2)")
    # The trainer's validation side: 20 % of the fault files (by file); the one normal file stays in
    # training, or the model would never see a healthy window.
    normal = [r for r in train_runs if r.meta["class"] == "normal"]
    tr, va = split_by_machine(
        [r for r in train_runs if r.meta["class"] != "normal"], val_fraction=0.2, seed=cfg.seed
    )
    bundle_dir, fit_s = train_bundle(
        [*normal, *tr], va, work / "cwru-bundle", cfg, horizon_s=None, classes=CWRU_CLASSES
    )
    bundle = load_bundle(bundle_dir, allow_unsigned=True)
    metrics, results = evaluate_bundle(
        bundle,
        test_runs,
        signature="not verified",
        train_runs=train_runs,
        baselines=True,
        seed=cfg.seed,
        progress=False,
        data_paths=[str(root / "cwru")],
        fit_split=([*normal, *tr], va),
    )
    if out is not None:
        from trainer.evaluate_cli import write_outputs

        write_outputs(out / "cwru", metrics, results)
    ft = metrics["fault_types"]
    print(
        f"GRU bundle: fit {fit_s:.1f} s; test windows with a known class: {ft['windows']}; "
        f"classes present in test: {sum(1 for row in ft['confusion'] if sum(row))} of {len(ft['classes'])}"
    )
    rows = [
        [b["name"], b["fault_accuracy"], b["parameters"], b["train_s"], b["step_latency_us"]]
        for b in metrics["baselines"]
    ]
    print_table(
        "CWRU, train loads 0-1, test load 2: window accuracy over 10 fault classes",
        ["model", "window accuracy", "parameters", "train s", "step µs"],
        rows,
    )
    print(f"(CWRU total {time.perf_counter() - t0:.0f} s)")


def run_femto(root: Path, cfg: TrainConfig, work: Path, out: Path | None) -> None:
    t0 = time.perf_counter()
    runs = load_femto(root / "femto")
    bearings = sorted({r.machine for r in runs})
    print(f"\nFEMTO: bearings {', '.join(bearings)}; horizon {HORIZON_S:g} s; leave one bearing out")
    per_model: dict[str, list[dict[str, Any]]] = {}
    fold_rows = []
    for test_bearing in bearings:
        train_runs = [r for r in runs if r.machine != test_bearing]
        test_runs = [r for r in runs if r.machine == test_bearing]
        tr, va = split_by_machine(train_runs, val_fraction=0.34, seed=cfg.seed)  # one bearing
        bundle_dir, _ = train_bundle(tr, va, work / f"femto-{test_bearing}", cfg, horizon_s=HORIZON_S)
        bundle = load_bundle(bundle_dir, allow_unsigned=True)
        metrics, results = evaluate_bundle(
            bundle,
            test_runs,
            signature="not verified",
            horizon_s=HORIZON_S,
            train_runs=train_runs,
            baselines=True,
            seed=cfg.seed,
            progress=False,
            data_paths=[str(root / "femto")],
            fit_split=(tr, va),
        )
        if out is not None:
            from trainer.evaluate_cli import write_outputs

            write_outputs(out / f"femto-{test_bearing}", metrics, results)
        for b in metrics["baselines"]:
            per_model.setdefault(b["name"], []).append(b)
            fold_rows.append(
                [
                    test_bearing,
                    b["name"],
                    b["auroc"],
                    f"{b['detected']}/{b['failing_runs']}",
                    b["lead_time_s_median"],
                    b["lead_fraction_median"],
                    b["false_alarms"],
                    b["false_alarms_per_machine_day"],
                ]
            )
        print(f"  {test_bearing}: done ({time.perf_counter() - t0:.0f} s)")
    print_table(
        f"FEMTO leave-one-bearing-out, per fold (2 sensors per bearing; degraded := RUL <= {HORIZON_S:g} s)",
        ["test bearing", "model", "AUROC", "detected", "lead s", "lead/life", "false alarms", "FA/day"],
        fold_rows,
    )
    summary = []
    for name, rows in per_model.items():
        leads = [r["lead_time_s_median"] for r in rows if r["lead_time_s_median"] is not None]
        fa = sum(r["false_alarms"] for r in rows)
        aurocs = [r["auroc"] for r in rows if r["auroc"] is not None]
        summary.append(
            [
                name,
                float(np.mean(aurocs)) if aurocs else None,
                f"{sum(r['detected'] for r in rows)}/{sum(r['failing_runs'] for r in rows)}",
                float(np.median(leads)) if leads else None,
                fa,
                rows[0]["parameters"],
                float(np.mean([r["train_s"] for r in rows])),
                float(np.median([r["step_latency_us"] for r in rows])),
            ]
        )
    print_table(
        "FEMTO, all folds",
        [
            "model",
            "mean AUROC",
            "detected",
            "median lead s",
            "false alarms",
            "parameters",
            "train s",
            "step µs",
        ],
        summary,
    )
    print(f"(FEMTO total {time.perf_counter() - t0:.0f} s)")


def config_with(cfg: TrainConfig, settings: Sequence[str]) -> TrainConfig:
    """`cfg` with KEY=VALUE settings applied (values parsed as the field's current type)."""
    values = dict(vars(cfg))
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or key not in values or key == "progress":
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(values)}")
        current = values[key]
        if isinstance(current, bool):
            values[key] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            values[key] = int(raw)
        elif isinstance(current, float) or current is None:
            values[key] = float(raw)
        else:
            values[key] = raw
    if settings:
        print(f"trainer settings: {', '.join(settings)}")
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-root",
        default=os.environ.get("GRUWATCH_REAL_DATA", str(REPO.parent / "shared" / "data")),
        help="folder holding cwru/ and femto/ (default: $GRUWATCH_REAL_DATA or ../shared/data)",
    )
    p.add_argument("--only", choices=["cwru", "femto"], help="run one protocol only")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--chunk-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other TrainConfig setting for both protocols, e.g. --set batch_size=8 --set refit=true",
    )
    p.add_argument(
        "--cwru-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig setting for the CWRU protocol only (after --set)",
    )
    p.add_argument(
        "--femto-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig setting for the FEMTO protocol only (after --set)",
    )
    p.add_argument("--out", type=Path, help="also write metrics.json and report.html per protocol/fold here")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    if not (root / "cwru").is_dir() and not (root / "femto").is_dir():
        print(f"no real data under {root} (expected cwru/ and femto/); set GRUWATCH_REAL_DATA")
        return 1
    torch.set_num_threads(1)
    cfg = TrainConfig(
        hidden=args.hidden, epochs=args.epochs, chunk_len=args.chunk_len, seed=args.seed, progress=False
    )
    cfg = config_with(cfg, args.set)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "cwru") and (root / "cwru").is_dir():
            run_cwru(root, config_with(cfg, args.cwru_set), work, args.out)
        if args.only in (None, "femto") and (root / "femto").is_dir():
            run_femto(root, config_with(cfg, args.femto_set), work, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
