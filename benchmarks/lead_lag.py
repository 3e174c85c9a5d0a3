"""Research: where the GRU's FEMTO alarm comes against the self-baseline RMS rule, window by window.

Inner leave-one-bearing-out on TRAINING-side data only (the protocol of `tune_real.py`: for each outer
fold, the model is `gruwatch train`'s defaults on two of its three training bearings, scored on the
third). Per inner sensor, in windows before the end of life (10 s each):

- `GRU`: the raise of the sustained alarm with the calibrated thresholds;
- `no margin`: the same scores with the alarm level lowered by the calibration margin (`alarm_margin`);
- `RMS 6σ`: the first window after half-life where log RMS has been above 6 baseline σ for 3 windows
  (a level that already stood there from the first half — Bearing2_1/2_2's steps — shows as ~400+);
- the GRU's health score over the 6 windows from that RMS crossing.

    .venv/bin/python benchmarks/lead_lag.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tune_real

from trainer.sequences import build_sequences
from trainer.train import score_sequences

SIX_SIGMA = math.log1p(6.0)  # baseline-normalised features: y = sign(z)·log1p|z|


def sustained_raise(on: np.ndarray) -> int | None:
    if not on[-1]:
        return None
    return int(np.flatnonzero(on & ~np.r_[False, on[:-1]])[-1])


def main() -> int:
    runs = tune_real.shared_femto_runs()
    if runs is None:
        return 1
    bearings = sorted({r.machine for r in runs})
    print(
        "| outer | inner | sensor | windows | alarm | GRU | no margin | RMS 6σ | GRU score from the RMS crossing |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for outer in bearings:
        rest = [b for b in bearings if b != outer]
        for inner in rest:
            plan, result = tune_real.fit_plan(
                [r for r in runs if r.machine in rest and r.machine != inner], {}, 0.2
            )
            rms = list(plan.spec.names).index("log_rms")
            th = result.thresholds
            lowered = {**th, "alarm": th["alarm"] - result.config.alarm_margin}
            lowered["warning"] = min(lowered["warning"], lowered["alarm"])
            test = [r for r in runs if r.machine == inner]
            seqs = build_sequences(test, plan.spec, horizon_s=tune_real.HORIZON_S, progress=False)
            for s, sc in zip(seqs, score_sequences(result.model, seqs), strict=True):
                n, h = len(s), sc[:, 0]
                g = sustained_raise(tune_real._alarm_states(h, th) == 2)
                g0 = sustained_raise(tune_real._alarm_states(h, lowered) == 2)
                above = (s.features[:, rms] > SIX_SIGMA).astype(int)
                run3 = np.convolve(above, np.ones(3, int))[:n]
                r = next((i for i in range(n // 2, n) if run3[i] >= 3), None)
                cells = ["–" if v is None else str(n - v) for v in (g, g0, r)]
                trace = "" if r is None else " ".join(f"{v:.2f}" for v in h[r : r + 6])
                print(
                    f"| {outer} | {inner} | {s.run_id.rsplit('/', 1)[-1]} | {n} | {th['alarm']:.3f} "
                    f"(k={th['raise_windows']}) | {' | '.join(cells)} | {trace} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
