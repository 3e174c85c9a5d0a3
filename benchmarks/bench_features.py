"""Benchmark of feature extraction: µs per window for extract() in a loop vs extract_batch(), as a table.

    .venv/bin/python benchmarks/bench_features.py            # default sizes, about half a minute
    .venv/bin/python benchmarks/bench_features.py --quick    # fewer repeats, a few seconds

    .venv/bin/python benchmarks/bench_features.py --against 6436c05   # also the code of a git revision

Each cell is the best of several repeats (the least disturbed by other work on a shared machine), in
µs of this thread's CPU time per window (`--wall` for wall-clock time), with the whole feature vector
(time domain, 16 bands and, with a bearing geometry and a known speed, the envelope features). The
ratio columns are what to compare across machines: "loop/batch" is what batching sensors buys,
"batch/rFFT" prices the features in units of one bare numpy rFFT of the same windows, batched (one
`np.fft.rfft` call over the float64 batch), measured in the same run; the goal (issue 12) is ≤ 2.
"batch/rFFT blk" uses the cheapest reference instead: the rFFT run over the same cache-sized blocks
that extract_batch uses; "batch/rFFT warm" the strictest: the windows converted into a float64
buffer and transformed into a spectrum array that are both reused from call to call (no fresh
arrays: a fresh 64-window array can cost more in page faults than the transform, so the plain
reference moves with the allocator's state). `--against REV` adds a column for the features of that git revision, timed in
the same run (the before/after ratio of a change).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge_agent import features as features_module  # noqa: E402
from edge_agent.bearing import PRESETS  # noqa: E402
from edge_agent.features import DEFAULT_SPEC, FeatureSpec, extract, extract_batch  # noqa: E402
from gruwatch.bench import describe  # noqa: E402

CLOCK: Callable[[], float] = time.thread_time

SIZES = (2048, 2560, 20480)
BATCHES = (1, 64)


def reference_features(rev: str) -> ModuleType:
    """edge_agent.features (with its edge_agent.spectra) as of git revision `rev`, as a separate module."""
    tmp = Path(tempfile.mkdtemp(prefix="gruwatch-ref-"))
    sources = {}
    for name in ("features", "spectra"):
        sources[name] = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:edge_agent/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    (tmp / "_ref_spectra.py").write_text(sources["spectra"])
    (tmp / "_ref_features.py").write_text(
        sources["features"].replace("from edge_agent.spectra import", "from _ref_spectra import")
    )
    sys.path.insert(0, str(tmp))
    return importlib.import_module("_ref_features")


def best_seconds(fns: dict[str, Callable[[], object]], *, repeats: int, min_time: float) -> dict[str, float]:
    """Best time of one call of each function over `repeats` rounds, each round looping for at least
    min_time seconds; the functions take turns within each round, so all see the same conditions."""
    for fn in fns.values():
        fn()  # warm caches (FFT plans, band plans, lru caches)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            calls, start = 0, CLOCK()
            while True:
                fn()
                calls += 1
                elapsed = CLOCK() - start
                if elapsed >= min_time:
                    break
            best[name] = min(best[name], elapsed / calls)
    return best


def run(repeats: int, min_time: float, ref: ModuleType | None = None) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    fs, rpm = 25600.0, 1800.0
    rows: list[dict[str, Any]] = []
    specs = {"with envelope": FeatureSpec.with_geometry(PRESETS["femto_6804"]), "no geometry": DEFAULT_SPEC}
    ref_specs = {}
    if ref is not None:
        ref_specs = {
            "with envelope": ref.FeatureSpec.with_geometry(PRESETS["femto_6804"]),
            "no geometry": ref.DEFAULT_SPEC,
        }
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

                rows_per_block = max(4, features_module._BLOCK_SAMPLES // n)

                def fft_blocks(w: np.ndarray = windows, step: int = rows_per_block) -> None:
                    for start in range(0, len(w), step):
                        np.fft.rfft(w[start : start + step].astype(np.float64), axis=-1)

                buf = np.empty(windows.shape)
                spectrum = np.empty((batch, n // 2 + 1), dtype=np.complex128)

                def fft_warm(
                    w: np.ndarray = windows, b: np.ndarray = buf, out: np.ndarray = spectrum
                ) -> None:
                    np.copyto(b, w)
                    np.fft.rfft(b, axis=-1, out=out)

                fns: dict[str, Callable[[], object]] = {
                    "loop": loop,
                    "batch": batched,
                    "fft": fft,
                    "blk": fft_blocks,
                    "warm": fft_warm,
                }
                if ref is not None:

                    def before(w: np.ndarray = windows, s: Any = ref_specs[label]) -> None:
                        ref.extract_batch(w, fs, rpm, s)

                    fns["ref"] = before
                t = {
                    k: v / batch * 1e6
                    for k, v in best_seconds(fns, repeats=repeats, min_time=min_time).items()
                }
                t_loop, t_batch, t_fft, t_blk, t_warm = t["loop"], t["batch"], t["fft"], t["blk"], t["warm"]
                row: dict[str, Any] = {
                    "features": label,
                    "samples": n,
                    "batch": batch,
                    "extract": t_loop,
                    "extract_batch": t_batch,
                    "loop/batch": t_loop / t_batch,
                    "rfft": t_fft,
                    "batch/rfft": t_batch / t_fft,
                    "batch/rfft blk": t_batch / t_blk,
                    "rfft warm": t_warm,
                    "batch/rfft warm": t_batch / t_warm,
                }
                if "ref" in t:
                    row["ref"] = t["ref"]
                rows.append(row)
                print(_format_row(rows[-1]), flush=True)
    return rows


def header(against: str | None) -> str:
    ref = f" {against} extract_batch µs/win | before/after |" if against else ""
    return (
        "| features | samples | batch | extract µs/win | extract_batch µs/win | loop/batch | rFFT µs/win "
        f"| batch/rFFT (goal ≤ 2) | batch/rFFT blk | rFFT warm µs/win | batch/rFFT warm |{ref}\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + (" ---: | ---: |" if against else "")
    )


def _format_row(r: dict[str, Any]) -> str:
    ref = f" {r['ref']:.1f} | {r['ref'] / r['extract_batch']:.2f} |" if "ref" in r else ""
    return (
        f"| {r['features']} | {r['samples']:,} | {r['batch']} | {r['extract']:.1f} | "
        f"{r['extract_batch']:.1f} | {r['loop/batch']:.2f} | {r['rfft']:.1f} | {r['batch/rfft']:.2f} | "
        f"{r['batch/rfft blk']:.2f} | {r['rfft warm']:.1f} | {r['batch/rfft warm']:.2f} |{ref}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time edge_agent.features per window: extract() one by one vs extract_batch(), "
        "at 2,048 / 2,560 / 20,480 samples and batches of 1 and 64. Prints a Markdown table.",
    )
    parser.add_argument(
        "--repeats", type=int, default=15, help="rounds per cell; the best is kept (default 15)"
    )
    parser.add_argument(
        "--min-time", type=float, default=0.03, help="seconds each round loops for (default 0.03)"
    )
    parser.add_argument("--quick", action="store_true", help="7 rounds of 0.02 s: a smoke run")
    parser.add_argument(
        "--wall", action="store_true", help="wall-clock time instead of this thread's CPU time"
    )
    parser.add_argument(
        "--against", metavar="REV", help="also time edge_agent.features of this git revision (before/after)"
    )
    args = parser.parse_args(argv)
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    repeats, min_time = (7, 0.02) if args.quick else (args.repeats, args.min_time)
    ref = reference_features(args.against) if args.against else None
    print(describe())
    print(
        f"fs = 25,600 Hz, rpm = 1,800; best of {repeats} rounds; "
        f"{'wall-clock' if args.wall else 'CPU'} time of this thread\n"
    )
    print(header(args.against), flush=True)
    run(repeats, min_time, ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
