"""Benchmark of feature extraction: µs per window for extract() in a loop vs extract_batch(), as a table.

    .venv/bin/python benchmarks/bench_features.py            # default sizes, about half a minute
    .venv/bin/python benchmarks/bench_features.py --quick    # fewer repeats, a few seconds

Each cell is the best of several repeats (the least disturbed by other work on a shared machine), in
µs per window, with the whole feature vector (time domain, 16 bands and, with a bearing geometry and
a known speed, the envelope features). The ratio columns are what to compare across machines:
"loop/batch" is what batching sensors buys, "batch/rFFT" prices the features in units of one bare
numpy rFFT of the same window (also measured batched) on this machine. The target in the issue is
≤ ~150 µs per window at 2,560 samples, batched (docs/features.md, "Cost").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from edge_agent.bearing import PRESETS
from edge_agent.features import DEFAULT_SPEC, FeatureSpec, extract, extract_batch

SIZES = (2048, 2560, 20480)
BATCHES = (1, 64)


def best_seconds(fn: Callable[[], object], *, repeats: int, min_time: float) -> float:
    """Best time of one call over `repeats` rounds, each round looping for at least min_time seconds."""
    fn()  # warm caches (FFT plans, band plans, lru caches)
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / calls)
    return best


def run(repeats: int, min_time: float) -> list[dict[str, float | int | str]]:
    rng = np.random.default_rng(0)
    fs, rpm = 25600.0, 1800.0
    rows: list[dict[str, float | int | str]] = []
    specs = {"with envelope": FeatureSpec.with_geometry(PRESETS["femto_6804"]), "no geometry": DEFAULT_SPEC}
    for label, spec in specs.items():
        for n in SIZES:
            for batch in BATCHES:
                windows = rng.standard_normal((batch, n)).astype(np.float32)

                def loop(w: np.ndarray = windows, s: FeatureSpec = spec) -> None:
                    for row in w:
                        extract(row, fs, rpm, s)

                def batched(w: np.ndarray = windows, s: FeatureSpec = spec) -> None:
                    extract_batch(w, fs, rpm, s)

                def fft(w: np.ndarray = windows) -> None:
                    np.fft.rfft(w.astype(np.float64), axis=-1)

                t_loop = best_seconds(loop, repeats=repeats, min_time=min_time) / batch * 1e6
                t_batch = best_seconds(batched, repeats=repeats, min_time=min_time) / batch * 1e6
                t_fft = best_seconds(fft, repeats=repeats, min_time=min_time) / batch * 1e6
                rows.append(
                    {
                        "features": label,
                        "samples": n,
                        "batch": batch,
                        "extract": t_loop,
                        "extract_batch": t_batch,
                        "loop/batch": t_loop / t_batch,
                        "rfft": t_fft,
                        "batch/rfft": t_batch / t_fft,
                    }
                )
                print(_format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    "| features | samples | batch | extract µs/win | extract_batch µs/win | loop/batch | rFFT µs/win | batch/rFFT |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _format_row(r: dict[str, float | int | str]) -> str:
    return (
        f"| {r['features']} | {r['samples']:,} | {r['batch']} | {r['extract']:.1f} | "
        f"{r['extract_batch']:.1f} | {r['loop/batch']:.2f} | {r['rfft']:.1f} | {r['batch/rfft']:.1f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time edge_agent.features per window: extract() one by one vs extract_batch(), "
        "at 2,048 / 2,560 / 20,480 samples and batches of 1 and 64. Prints a Markdown table.",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds per cell; the best is kept (default 5)"
    )
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="seconds each round loops for (default 0.2)"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 0.05 s: a smoke run")
    args = parser.parse_args(argv)
    repeats, min_time = (2, 0.05) if args.quick else (args.repeats, args.min_time)
    print(f"numpy {np.__version__}; fs = 25,600 Hz, rpm = 1,800; best of {repeats} rounds\n")
    print(HEADER, flush=True)
    run(repeats, min_time)
    return 0


if __name__ == "__main__":
    sys.exit(main())
