"""Benchmark: train on a simulated fleet (default 50 machines) and print where the time goes.

Measures, on one CPU thread by default: simulating the windows (not part of training, shown for
scale), feature extraction (edge_agent.features.extract_batch, once per run), fitting the GRU,
calibration, and the ONNX export with its 1,000-step parity check. The goal in the issue: the whole
training (features + fit + calibrate + export) on a 50-machine fleet in <= 5 minutes on a 2-core
machine. Prints a table; asserts nothing.

    .venv/bin/python benchmarks/bench_train.py                 # 50 machines, 3 h horizon, defaults
    .venv/bin/python benchmarks/bench_train.py --machines 10 --epochs 5   # quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simulator.fleet_model import build_fleet  # noqa: E402
from trainer.data.runs import Run, fingerprint, split_by_machine  # noqa: E402
from trainer.data.sim import run_from_sensor  # noqa: E402
from trainer.export import write_model_bundle  # noqa: E402
from trainer.sequences import build_sequences, fault_classes, spec_for_runs  # noqa: E402
from trainer.train import TrainConfig, train  # noqa: E402


def fleet_runs(machines: int, seed: int, horizon_s: float) -> list[Run]:
    """The simulator's fleet as Runs (what `load_runs` returns for a dataset folder)."""
    fleet = build_fleet(machines, seed, horizon_s=horizon_s)
    return [
        run_from_sensor(sr, f"bench-{sr.machine}-{sr.sensor}")
        for sr in tqdm(fleet, desc="simulate", unit="run")
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--horizon-s", type=float, default=3 * 3600.0, help="simulated life span (default 3 h)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t = time.perf_counter()
    runs = fleet_runs(args.machines, args.seed, args.horizon_s)
    t_sim = time.perf_counter() - t
    n_windows = sum(r.n_windows for r in runs)

    t = time.perf_counter()
    tr, va = split_by_machine(runs, val_fraction=0.2, seed=args.seed)
    spec = spec_for_runs(runs)
    classes = fault_classes(tr)
    train_seqs = build_sequences(tr, spec, classes=classes)
    val_seqs = build_sequences(va, spec, classes=classes, desc="features (val)")
    t_feat = time.perf_counter() - t

    cfg = TrainConfig(
        hidden=args.hidden, epochs=args.epochs, seed=args.seed, threads=args.threads, device=args.device
    )
    t = time.perf_counter()
    res = train(train_seqs, val_seqs, cfg, classes=classes)
    t_train = time.perf_counter() - t

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_model_bundle(
            Path(tmp) / "bundle",
            res.model,
            held_out=[s.features for s in val_seqs],
            feature_spec=spec.to_dict(),
            thresholds=res.thresholds,
            validation=res.validation,
            training_data={"fingerprint": fingerprint(runs), "runs": len(runs), "sources": ["sim"]},
        )
    t_export = time.perf_counter() - t

    total = t_feat + t_train + t_export
    rows = [
        ("simulate windows (not training)", t_sim),
        ("feature extraction", t_feat),
        ("fit (all epochs)", res.timings["fit_s"]),
        ("calibrate + validation metrics", res.timings["calibrate_s"]),
        ("export + parity + bundle", t_export),
        ("training total (features..bundle)", total),
    ]
    print(
        f"\n{args.machines} machines, {len(runs)} runs, {n_windows:,} windows of {runs[0].window_length} samples; "
        f"GRU H={args.hidden}, {args.epochs} epochs, {args.threads} thread(s), device {args.device}"
    )
    print(f"| {'stage':<36} | {'seconds':>8} | {'share of total':>14} |")
    print(f"| {'-' * 36} | {'-' * 8} | {'-' * 14} |")
    for i, (name, sec) in enumerate(rows):
        share = "-" if i == 0 else f"{sec / total:.1%}"
        print(f"| {name:<36} | {sec:8.1f} | {share:>14} |")
    per_epoch = res.timings["fit_s"] / max(len(res.history), 1)
    print(f"\nfeatures: {t_feat / n_windows * 1e6:.0f} µs/window; fit: {per_epoch:.2f} s/epoch")
    print(f"goal: training total <= 300 s -> {total:.0f} s ({total / 300:.2f} of the budget)")
    print(f"validation AUROC {res.validation.get('auroc', float('nan')):.3f}; thresholds {res.thresholds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
