"""Benchmark: the step-wise Scorer's cost per sensor, against a bare onnxruntime run and a re-run baseline.

For B = 1, 64, 1,024 sensors (H = 64, 1 layer, the default feature spec's F inputs) it prints:

- `bare run`: one `session.run` of the one-step model at batch B, inputs prepared (µs per sensor);
- `Scorer`: `Scorer.score_features` for the same batch: state gather/scatter from the keyed store,
  the alarm state machine and result assembly around the same run (µs per sensor, and its overhead);
- `re-run 300`: the stateless alternative: for each new window, re-run the last 300 windows from a
  zero state. Implemented with the SAME one-step model looped 300 times at batch B (all B sensors in
  each call), so the ratio isolates carrying state versus recomputing it;
- `ratio`: re-run 300 / Scorer.

Run: `.venv/bin/python benchmarks/bench_scorer.py [--quick]`. Single-threaded onnxruntime, as in the
agent. Times are medians of repeats; expect ±20-50% on a shared machine (PERFORMANCE-NOTES.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the test fixtures build the model
    sys.path.insert(0, str(REPO))

from edge_agent.scorer import Scorer  # noqa: E402
from tests.edge_agent.gru_fixtures import build_bundle  # noqa: E402

HIDDEN, LAYERS, WINDOW_STEPS = 64, 1, 300


def per_call_s(fn: Callable[[], object], *, min_time: float, repeats: int) -> float:
    """Median seconds per call over `repeats` timed blocks of at least `min_time` each."""
    fn()  # warm-up
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / 4 or n >= 1 << 16:
            break
        n *= 2
    n = max(1, int(n * (min_time / max(dt, 1e-9))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter timing blocks (noisier)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    args = parser.parse_args(argv)
    min_time, repeats = (0.05, 3) if args.quick else (0.2, 5)

    with tempfile.TemporaryDirectory() as tmp:
        path, _ = build_bundle(Path(tmp) / "bench", hidden=HIDDEN, layers=LAYERS, outputs=2)
        scorer = Scorer.from_bundle(path, allow_unsigned=True, max_sensors=max(args.batches))
    session, F = scorer.session, scorer.n_features
    rng = np.random.default_rng(0)

    rows = []
    for B in args.batches:
        x = rng.normal(size=(B, F)).astype(np.float32)
        h0 = np.zeros((LAYERS, B, HIDDEN), np.float32)
        ids = [f"m{i:05d}-s0" for i in range(B)]
        scorer.score_features(ids, x)  # sensors known: measure steady state, not first sight

        def bare(x: np.ndarray = x, h0: np.ndarray = h0) -> object:
            return session.run(["score", "h_out"], {"features": x, "h": h0})

        def scored(ids: list[str] = ids, x: np.ndarray = x) -> object:
            return scorer.score_features(ids, x)

        def rerun(x: np.ndarray = x, h0: np.ndarray = h0) -> object:
            h = h0
            for _ in range(WINDOW_STEPS):
                _, h = session.run(["score", "h_out"], {"features": x, "h": h})
            return h

        t_bare = per_call_s(bare, min_time=min_time, repeats=repeats)
        t_scorer = per_call_s(scored, min_time=min_time, repeats=repeats)
        t_rerun = per_call_s(rerun, min_time=min_time, repeats=max(2, repeats - 2))
        rows.append((B, t_bare / B * 1e6, t_scorer / B * 1e6, t_rerun / B * 1e6))

    print(f"Scorer step cost per sensor (H={HIDDEN}, {LAYERS} layer, F={F}, onnxruntime 1 thread)")
    print("re-run baseline: the same one-step model looped 300x from a zero state, batch B per call\n")
    print(
        "| B | bare run µs/sensor | Scorer µs/sensor | Scorer overhead | re-run 300 µs/sensor | re-run / Scorer |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for B, bare_us, scorer_us, rerun_us in rows:
        print(
            f"| {B:,} | {bare_us:.2f} | {scorer_us:.2f} | {100 * (scorer_us / bare_us - 1):+.0f}% "
            f"| {rerun_us:.1f} | {rerun_us / scorer_us:.0f}× |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
