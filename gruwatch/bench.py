"""`gruwatch bench`: run the benchmarks under benchmarks/ and print their tables.

Each benchmark is a script that prints a table of measurements and ratios (never asserted in tests).
They live in the source checkout, not in an installed wheel: run this from a clone of the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def available() -> dict[str, Path]:
    """Benchmark name (file name without `bench_` and `.py`) → script path."""
    if not BENCH_DIR.is_dir():
        return {}
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def main(argv: Sequence[str] | None = None) -> int:
    benches = available()
    parser = argparse.ArgumentParser(
        prog="gruwatch bench",
        description=(
            "Run gruwatch's benchmarks and print their tables (speed and memory, as ratios measured in "
            "one run). Without names, runs them all; the machine should be otherwise idle."
        ),
        epilog="available: " + (", ".join(benches) or "none (run from a source checkout)"),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not benches:
        sys.stderr.write(
            f"gruwatch bench: no benchmarks at {BENCH_DIR}; run from a clone of the repository\n"
        )
        return 2
    if args.list:
        for name, path in benches.items():
            sys.stdout.write(f"{name:12s} {path}\n")
        return 0
    unknown = [n for n in args.names if n not in benches]
    if unknown:
        sys.stderr.write(f"gruwatch bench: unknown {unknown}; available: {', '.join(benches)}\n")
        return 2
    failed: list[str] = []
    for name in args.names or list(benches):
        sys.stdout.write(f"\n=== {name} ({benches[name].name}) ===\n")
        sys.stdout.flush()
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(benches[name])])
        sys.stdout.write(f"--- {name}: exit {rc} in {time.monotonic() - started:.1f} s\n")
        if rc != 0:
            failed.append(name)
    if failed:
        sys.stderr.write(f"gruwatch bench: failed: {', '.join(failed)}\n")
        return 1
    return 0
