"""Benchmark: choose trainer settings for the real-data protocols on TRAINING-side data only.

Nothing here reads a test split of `benchmarks/eval_real.py`:

- CWRU: train on motor load 0 (with the same inner 20 % file split for early stopping that
  eval_real uses on its training side), validate on load 1; the test load 2 is never loaded.
  Metric: window accuracy of the fault-type output, step-wise from a zero state, per seed.
- FEMTO: for each outer fold (left-out test bearing), inner leave-one-bearing-out on its three
  training bearings only: train on one, early-stop/calibrate on another, score the third.
  Metric: threshold-free window AUROC of the health score (degraded := RUL <= 1800 s), per outer fold.

Prints one row per candidate setting; asserts nothing. Candidates are KEY=VALUE TrainConfig settings
separated by commas, one candidate per --candidate (the default list is the one in docs/training.md).

    .venv/bin/python benchmarks/tune_real.py --only cwru
    .venv/bin/python benchmarks/tune_real.py --only femto --candidate "" --candidate "input_noise=0.2"
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.eval_real import CWRU_CLASSES, HORIZON_S, config_with  # noqa: E402
from trainer.data import load_cwru, load_femto, split_by_machine  # noqa: E402
from trainer.metrics import auroc  # noqa: E402
from trainer.sequences import build_sequences, spec_for_runs  # noqa: E402
from trainer.train import TrainConfig, score_sequences, train  # noqa: E402

CWRU_CANDIDATES = (
    "",
    "batch_size=8,epochs=60,keep=last,refit=true",
    "batch_size=8,epochs=100,keep=last,refit=true,input_noise=0.2,run_offset_noise=0.5",
    "batch_size=8,epochs=100,keep=last,refit=true,input_noise=0.2,run_offset_noise=0.5,early_weight=3",
)
FEMTO_CANDIDATES = ("", "input_noise=0.2,run_offset_noise=0.5")


def _cfg(candidate: str, seed: int, **base: object) -> TrainConfig:
    settings = [s for s in candidate.split(",") if s]
    return config_with(TrainConfig(progress=False, seed=seed, **base), settings)  # type: ignore[arg-type]


def tune_cwru(root: Path, candidates: Sequence[str], seeds: Sequence[int]) -> None:
    runs = [r for r in load_cwru(root / "cwru") if r.meta["load"] in (0, 1)]  # load 2 is the test
    spec = spec_for_runs(runs)
    load0 = [r for r in runs if r.meta["load"] == 0]
    load1 = [r for r in runs if r.meta["load"] == 1]
    normal = [r for r in load0 if r.meta["class"] == "normal"]
    print(f"CWRU: train load 0 ({len(load0)} files), validate load 1 ({len(load1)} files); load 2 unused")
    va_seqs = build_sequences(load1, spec, classes=CWRU_CLASSES, progress=False)
    for cand in candidates:
        accs = []
        t0 = time.perf_counter()
        for seed in seeds:
            tr, inner = split_by_machine([r for r in load0 if r not in normal], val_fraction=0.2, seed=seed)
            tr_seqs = build_sequences([*normal, *tr], spec, classes=CWRU_CLASSES, progress=False)
            in_seqs = build_sequences(inner, spec, classes=CWRU_CLASSES, progress=False)
            result = train(tr_seqs, in_seqs, _cfg(cand, seed), classes=CWRU_CLASSES)
            scores = score_sequences(result.model, va_seqs)
            pred = np.concatenate([s[:, 1:].argmax(axis=1) for s in scores])
            true = np.concatenate([s.fault for s in va_seqs])
            accs.append(float(np.mean(pred == true)))
        print(
            f"  {cand or '(defaults)'}: load-1 accuracy {' '.join(f'{a:.4f}' for a in accs)} "
            f"(mean {np.mean(accs):.4f}; {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


def tune_femto(root: Path, candidates: Sequence[str], seed: int) -> None:
    runs = load_femto(root / "femto")
    spec = spec_for_runs(runs)
    seqs = build_sequences(runs, spec, horizon_s=HORIZON_S, progress=False)
    bearings = sorted({r.machine for r in runs})
    by = {b: [s for s, r in zip(seqs, runs, strict=True) if r.machine == b] for b in bearings}
    print("FEMTO: inner leave-one-bearing-out inside each outer fold (outer test bearing never used)")
    for cand in candidates:
        t0 = time.perf_counter()
        per_fold = {}
        for outer in bearings:
            rest = [b for b in bearings if b != outer]
            aucs = []
            for inner in rest:
                fit_b, val_b = [b for b in rest if b != inner]
                result = train(by[fit_b], by[val_b], _cfg(cand, seed, horizon_s=HORIZON_S))
                for s, sc in zip(by[inner], score_sequences(result.model, by[inner]), strict=True):
                    a = auroc(s.target, sc[:, 0])
                    if a is not None:
                        aucs.append(a)
            per_fold[outer] = float(np.mean(aucs))
        cells = " ".join(f"{b}:{v:.3f}" for b, v in per_fold.items())
        print(
            f"  {cand or '(defaults)'}: inner AUROC by outer fold {cells} "
            f"(mean {np.mean(list(per_fold.values())):.3f}; {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-root",
        default=os.environ.get("GRUWATCH_REAL_DATA", str(REPO.parent / "shared" / "data")),
        help="folder holding cwru/ and femto/ (default: $GRUWATCH_REAL_DATA or ../shared/data)",
    )
    p.add_argument("--only", choices=["cwru", "femto"], help="tune one protocol only")
    p.add_argument("--candidate", action="append", help="KEY=VALUE,... TrainConfig settings (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="CWRU seeds (default 0 1 2)")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    if not (root / "cwru").is_dir() and not (root / "femto").is_dir():
        print(f"no real data under {root} (expected cwru/ and femto/); set GRUWATCH_REAL_DATA")
        return 1
    torch.set_num_threads(1)
    if args.only in (None, "cwru") and (root / "cwru").is_dir():
        tune_cwru(root, args.candidate or CWRU_CANDIDATES, args.seeds)
    if args.only in (None, "femto") and (root / "femto").is_dir():
        tune_femto(root, args.candidate or FEMTO_CANDIDATES, args.seeds[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
