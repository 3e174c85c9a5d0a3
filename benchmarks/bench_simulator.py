"""Benchmark of the simulator's generation speed: time per window and how much faster than real time.

Goal (from the simulator issue): one machine sending a 2,560-sample window at 25.6 kHz every 10 s must
be simulated at least 1,000× faster than real time, i.e. well under 10 ms per window. Prints a table;
asserts nothing. Run: `.venv/bin/python benchmarks/bench_simulator.py [--windows N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator.dataset import write_dataset
from simulator.fleet_model import SensorRun, build_fleet


def _time_windows(run: SensorRun, ks: list[int], repeats: int) -> float:
    """Median over `repeats` of the mean seconds per window over `ks`."""
    results = []
    for _ in range(repeats):
        began = time.perf_counter()
        for k in ks:
            run.window(k)
        results.append((time.perf_counter() - began) / len(ks))
    return statistics.median(results)


def _run_for(fault: str, fs: float, window: int, interval: float) -> SensorRun:
    healthy = fault == "healthy"
    faults = ("outer",) if healthy else (fault,)
    (run,) = build_fleet(
        1,
        7,
        fs=fs,
        window=window,
        interval_s=interval,
        healthy_fraction=1.0 if healthy else 0.0,
        faults=faults,
    )
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200, help="windows timed per row (default: 200)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per row, median taken (default: 3)")
    parser.add_argument("--quick", action="store_true", help="40 windows per row, one repeat (noisier)")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.repeats = 40, 1

    print("## Simulator: generating windows (one core)")
    print()
    print("| fs (Hz) | window | interval (s) | fault | phase | µs / window | × real time | × signal time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    cases = [(25600.0, 2560, 10.0), (25600.0, 25600, 10.0), (12000.0, 2048, 10.0)]
    for fs, window, interval in cases:
        for fault in ("healthy", "outer", "inner", "ball", "cage"):
            run = _run_for(fault, fs, window, interval)
            if fault == "healthy":
                phases = {"life": list(range(run.n_windows))}
            else:
                onset = round((run.onset_s or 0.0) / interval)
                phases = {"healthy": list(range(onset)), "degraded": list(range(onset, run.n_windows))}
            for phase, pool in phases.items():
                ks = pool[:: max(len(pool) // args.windows, 1)][: args.windows]
                if not ks:
                    continue
                run.window(ks[0])  # warm up
                per = _time_windows(run, ks, args.repeats)
                print(
                    f"| {fs:.0f} | {window} | {interval:g} | {fault} | {phase} | {per * 1e6:,.0f} "
                    f"| {interval / per:,.0f} | {window / fs / per:,.0f} |"
                )
    print()
    print("## Simulator: writing a dataset (windows, labels, Parquet with zstd)")
    print()
    print("| machines | windows | s | windows / s | MB on disk | bytes / window | × real time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for machines in (4,):
        runs = build_fleet(machines, 3, horizon_s=3600.0)
        windows = sum(r.n_windows for r in runs)
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            write_dataset(Path(tmp) / "ds", runs, start_ns=0, settings={}, progress=False)
            took = time.perf_counter() - began
            size = sum(p.stat().st_size for p in (Path(tmp) / "ds").glob("*.parquet"))
        print(
            f"| {machines} | {windows} | {took:.2f} | {windows / took:,.0f} | {size / 1e6:.1f} "
            f"| {size / windows:,.0f} | {windows * 10.0 / took:,.0f} |"
        )
    print()
    print("× real time: simulated seconds of machine life (one window per interval) per second of compute.")
    print("× signal time: seconds of sampled signal per second of compute. Goal: ≥ 1,000× real time.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
