"""`benchmarks/window_length.py`: how far a window length other than the trained one moves the shipped
demo model's scores (the basis of the agent's factor-2 length rule, edge_agent/trained_on.py).

The same simulated sensors (the demo fleet's model, 25.6 kHz) are drawn at lengths 2560 / 8 .. 2560 × 8
and scored window by window with the shipped bundle (trained on 2,560 samples). Printed per length:
|score − score at 2,560| over every window (median, 95th percentile). The simulator draws other noise
at each length, so this is an upper bound on the length's own effect.
"""

from __future__ import annotations

import argparse

import numpy as np

from edge_agent.bundle import load_bundle
from edge_agent.features import extract_batch
from edge_agent.scorer import Scorer
from gruwatch.demo_model import FLEET, SHIPPED
from simulator.fleet_model import build_fleet

LENGTHS = (320, 640, 1280, 2560, 5120, 10240, 20480)


def scores(length: int, machines: int, seed: int) -> list[np.ndarray]:
    bundle = load_bundle(SHIPPED, allow_unsigned=True)
    scorer = Scorer.from_loaded(bundle)
    out = []
    for r in build_fleet(machines, seed, healthy_fraction=0.5, **{**FLEET, "window": length}):
        w = np.stack([r.window(k)[0] for k in range(r.n_windows)])
        x = extract_batch(w, r.fs, np.array([r.rpm_at(k) for k in range(r.n_windows)]), bundle.spec)
        sid = f"{r.machine}/{r.sensor}"
        out.append(np.array([scorer.score_features([sid], x[k : k + 1]).scores[0][0] for k in range(len(x))]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--machines", type=int, default=8)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    ref = scores(2560, args.machines, args.seed)
    for length in LENGTHS:
        got = ref if length == 2560 else scores(length, args.machines, args.seed)
        d = np.concatenate([np.abs(a - b) for a, b in zip(got, ref, strict=True)])
        ratio = length / 2560
        print(
            f"L={length:6d} ({ratio:g}x): |score - score at 2560| median {np.median(d):.3f}, "
            f"p95 {np.quantile(d, 0.95):.3f} over {d.size} windows"
        )


if __name__ == "__main__":
    main()
