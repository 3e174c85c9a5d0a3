"""Benchmark: choose trainer settings for real data on TRAINING-side data only (never a test split).

- FEMTO: for each outer fold (the bearing eval_real holds out, never read here), inner leave one
  bearing out over its three training bearings: `trainer.data.plan.plan_training` on two (it splits
  them itself), score the third. Per candidate: sustained alarms before failure, median lead (% of
  life), alarm raises in the first half of life, mean AUROC (degraded := RUL <= 1,800 s).
- CWRU: train on load 0, validate on load 1 — training-side data for the "loads 0-1 -> load 2"
  protocol only (for "load 0 -> loads 1, 2" the trainer's own split, the last 20 % of every
  recording, is the only honest validation). `--all-directions` instead trains on every one of loads
  0, 1, 2 and on loads 0-1 and scores every other of these loads, over `--seeds`: a robustness
  check across loads that reads eval_real's CWRU test loads too, so a setting chosen with it leaves
  eval_real's CWRU rows no longer clean tests; loads the shared data lacks (load 3, other rigs) are.

Candidates are KEY=VALUE TrainConfig settings separated by commas, applied over the kind's defaults
(`spectral_kurtosis=true|false`, `sk_segment_s=S` and `shape_bands=N` choose the feature spec
through `plan_training` instead).

    .venv/bin/python benchmarks/tune_real.py --only femto --candidate "" --candidate "hidden=64"
    .venv/bin/python benchmarks/tune_real.py --only cwru --all-directions --seeds 0,1,2,3,4,5 \
        --candidate "" --candidate "shape_bands=40"
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.data import load_runs  # noqa: E402
from trainer.data.plan import plan_training  # noqa: E402
from trainer.data.runs import Run  # noqa: E402
from trainer.sequences import build_sequences  # noqa: E402
from trainer.synthetic import training_failures  # noqa: E402
from trainer.train import TrainConfig, score_sequences, train  # noqa: E402

HORIZON_S = 1800.0


def _value(raw: str) -> Any:
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def candidate_settings(candidate: str) -> dict[str, Any]:
    out = {}
    for item in filter(None, candidate.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"candidate setting {item!r}: expected KEY=VALUE")
        out[key.strip()] = _value(raw)
    return out


# Candidate keys that choose the plan (the feature spec), not a TrainConfig setting.
PLAN_KEYS = ("spectral_kurtosis", "sk_segment_s", "shape_bands")


def fit_plan(
    runs: Sequence[Run], settings: dict[str, Any], val_fraction: float, seed: int = 0
) -> tuple[Any, Any]:
    settings = dict(settings)
    plan_opts = {k: settings.pop(k) for k in PLAN_KEYS if k in settings}
    plan = plan_training(runs, val_fraction=val_fraction, seed=seed, **plan_opts)
    cfg = TrainConfig(progress=False, horizon_s=plan.horizon_s, seed=seed, **{**plan.settings, **settings})
    tr = build_sequences(
        plan.train_runs, plan.spec, horizon_s=plan.horizon_s, classes=plan.classes, progress=False
    )
    va = build_sequences(
        plan.val_runs, plan.spec, horizon_s=plan.horizon_s, classes=plan.classes, progress=False
    )
    tr += training_failures(tr, plan.spec, cfg)  # as `gruwatch train` does (run-to-failure data)
    return plan, train(tr, va, cfg, classes=plan.classes)


def shared_femto_runs() -> list[Run] | None:
    """The FEMTO bearings under $GRUWATCH_REAL_DATA (default ../shared/data), or None after saying so."""
    root = Path(os.environ.get("GRUWATCH_REAL_DATA", REPO.parent / "shared" / "data"))
    if not (root / "femto").is_dir():
        print(f"no FEMTO data under {root}; set GRUWATCH_REAL_DATA")
        return None
    return load_runs([root / "femto"], progress=False)


def _alarm_states(health: np.ndarray, thresholds: dict[str, Any]) -> np.ndarray:
    from edge_agent.alarms import AlarmState, Thresholds, step

    t, st = Thresholds.from_dict(thresholds), AlarmState.fresh(1)
    out = np.zeros(len(health), np.int8)
    for k, v in enumerate(health):
        out[k] = step(st, np.array([v], np.float64), t)[1][0]
    return out


def tune_femto(root: Path, candidates: Sequence[str]) -> None:
    from trainer.metrics import auroc

    runs = load_runs([root / "femto"], progress=False)
    bearings = sorted({r.machine for r in runs})
    print("FEMTO: inner leave-one-bearing-out inside each outer fold (the outer test bearing is never used)")
    for cand in candidates:
        t0 = time.perf_counter()
        leads, fas, aucs, detected, total = [], 0, [], 0, 0
        for outer in bearings:
            rest = [b for b in bearings if b != outer]
            for inner in rest:
                fit_runs = [r for r in runs if r.machine in rest and r.machine != inner]
                plan, result = fit_plan(
                    fit_runs, candidate_settings(cand), 0.2
                )  # gruwatch train's --val-fraction
                seqs = build_sequences(
                    [r for r in runs if r.machine == inner], plan.spec, horizon_s=HORIZON_S, progress=False
                )
                for s, sc in zip(seqs, score_sequences(result.model, seqs), strict=True):
                    states = _alarm_states(sc[:, 0], result.thresholds)
                    on = states == 2
                    raises = np.flatnonzero(on & ~np.r_[False, on[:-1]])
                    life = s.ts[-1] - s.ts[0]
                    fas += int(np.sum(s.ts[raises] < life / 2))
                    total += 1
                    lead = (s.ts[-1] - s.ts[raises[-1]]) / life if on[-1] and raises.size else 0.0
                    detected += bool(on[-1])
                    leads.append(lead)
                    a = auroc(s.target, sc[:, 0])
                    if a is not None:
                        aucs.append(a)
        print(
            f"  {cand or '(kind defaults)'}: sustained alarm {detected}/{total}, median lead "
            f"{100 * np.median(leads):.1f} % of life, first-half false alarms {fas}, mean AUROC "
            f"{np.mean(aucs):.3f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


def _cwru_accuracy(plan: Any, result: Any, runs: Sequence[Run]) -> tuple[float, dict[str, int]]:
    """Window accuracy of the fault-type output on `runs`, and the confusions (true->predicted: count)."""
    seqs = build_sequences(runs, plan.spec, classes=plan.classes, progress=False)
    scores = score_sequences(result.model, seqs)
    pred = np.concatenate([s[:, 1:].argmax(axis=1) for s in scores])
    true = np.concatenate([s.fault for s in seqs])
    wrong: dict[str, int] = {}
    for t, p in zip(true[pred != true], pred[pred != true], strict=True):
        key = f"{plan.classes[t]}->{plan.classes[p]}"
        wrong[key] = wrong.get(key, 0) + 1
    return float(np.mean(pred == true)), dict(sorted(wrong.items(), key=lambda kv: -kv[1]))


# Every direction between the shared loads: (training loads, scored loads).
DIRECTIONS = (((0,), (1, 2)), ((1,), (0, 2)), ((2,), (0, 1)), ((0, 1), (2,)))


def tune_cwru(root: Path, candidates: Sequence[str], *, all_directions: bool, seeds: Sequence[int]) -> None:
    runs = [
        r
        for r in load_runs([root / "cwru"], progress=False)
        if r.meta["fs_original"] == 12000 or r.meta["class"] == "normal"
    ]
    by_load = {k: [r for r in runs if r.meta["load"] == k and r.meta["class"] != "normal"] for k in (0, 1, 2)}
    normal = [r for r in runs if r.meta["class"] == "normal"]
    directions = DIRECTIONS if all_directions else (((0,), (1,)),)
    print(
        "CWRU: "
        + (
            "every direction between loads 0-2 (reads eval_real's test loads)"
            if all_directions
            else "train load 0, validate load 1; load 2 unused"
        )
        + f", seeds {list(seeds)}"
    )
    for cand in candidates:
        t0 = time.perf_counter()
        accs = []
        for seed in seeds:
            for train_loads, scored_loads in directions:
                fit_runs = [r for k in train_loads for r in by_load[k]] + normal
                plan, result = fit_plan(fit_runs, candidate_settings(cand), 0.2, seed)
                for k in scored_loads:
                    acc, wrong = _cwru_accuracy(plan, result, by_load[k])
                    accs.append(acc)
                    if acc < 1.0:
                        top = ", ".join(f"{w} {n}" for w, n in list(wrong.items())[:3])
                        print(f"    seed {seed}, loads {train_loads} -> {k}: {acc:.4f} ({top})", flush=True)
        print(
            f"  {cand or '(kind defaults)'}: accuracy mean {np.mean(accs):.4f}, min {np.min(accs):.4f}, "
            f"{sum(a < 0.99 for a in accs)}/{len(accs)} below 0.99 ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-root", default=os.environ.get("GRUWATCH_REAL_DATA", str(REPO.parent / "shared" / "data"))
    )
    p.add_argument("--only", choices=["cwru", "femto"], help="tune one protocol only")
    p.add_argument("--candidate", action="append", help="KEY=VALUE,... TrainConfig settings (repeatable)")
    p.add_argument(
        "--all-directions",
        action="store_true",
        help="CWRU: every load -> every other of loads 0-2 (reads eval_real's test loads; docstring)",
    )
    p.add_argument("--seeds", default="0", help="CWRU: comma-separated seeds (default 0)")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    if not (root / "cwru").is_dir() and not (root / "femto").is_dir():
        print(f"no real data under {root} (expected cwru/ and femto/); set GRUWATCH_REAL_DATA")
        return 1
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    candidates = args.candidate or [""]
    if args.only in (None, "cwru") and (root / "cwru").is_dir():
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        tune_cwru(root, candidates, all_directions=args.all_directions, seeds=seeds)
    if args.only in (None, "femto") and (root / "femto").is_dir():
        tune_femto(root, candidates)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
