"""`gruwatch bench`: run the benchmarks under benchmarks/ and print their tables, with the machine they ran on.

Each benchmark is a script that prints a table of measurements, each beside its reference measured in
the same run (a bare numpy rFFT, a bare onnxruntime call, a bare paho subscriber, ...): compare ratios,
not absolute numbers, between machines. Nothing is asserted; tests never time anything.
The scripts live in the source checkout, not in an installed wheel: run this from a clone.

The whole suite (no names) runs each benchmark in its short form (`--quick`, where it has one) under a
share of a time budget (default 600 s): a benchmark that overruns its share is stopped and reported,
so `gruwatch bench` ends within the budget on a 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gruwatch.options import DURATION_HELP, Parser, hidden_alias, parse_duration

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"

#: Share of the suite's budget each benchmark gets (the rest split evenly among the others).
SHARES: dict[str, float] = {"agent": 0.30, "train": 0.25, "cells": 0.12}
#: Short-form arguments for a benchmark that has no `--quick` of its own (the suite uses --quick first).
SHORT_ARGS: dict[str, list[str]] = {"train": ["--machines", "12", "--epochs", "5"]}
#: Libraries whose versions decide the numbers.
LIBRARIES = ("numpy", "onnxruntime", "paho-mqtt", "torch", "onnx")


def available() -> dict[str, Path]:
    """Benchmark name (file name without `bench_` and `.py`) → script path."""
    if not BENCH_DIR.is_dir():
        return {}
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mosquitto_version() -> str | None:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("mosquitto version ").strip() or None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, load, memory, Python and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    versions["mosquitto"] = _mosquitto_version()
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "load_average": load,
        "memory_gib": mem_gib,
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def describe(info: dict[str, Any] | None = None) -> str:
    """machine_info() as two lines for the top of a benchmark's output."""
    m = info or machine_info()
    libs = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    load = "/".join(f"{x:g}" for x in m["load_average"]) or "?"
    return (
        f"machine: {m['cpu']} ({m['arch']}), {m['cores_usable']} of {m['cores']} cores usable, "
        f"{m['memory_gib']} GiB, {m['os']}, load average {load} (1/5/15 min) at {m['date_utc']} UTC\n"
        f"versions: {libs}"
    )


def _supports(script: Path, flag: str) -> bool:
    try:
        return f'"{flag}"' in script.read_text()
    except OSError:
        return False


def _run(cmd: list[str], budget_s: float | None) -> tuple[int | None, float]:
    """Run a benchmark with its output passed through; (exit code or None when stopped, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc: int | None = proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        rc = None
    except KeyboardInterrupt:
        _stop_group(proc)
        raise
    return rc, time.monotonic() - started


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a benchmark and everything it started (its broker, agents, publishers: one process group)."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: Sequence[str] | None = None) -> int:
    benches = available()
    parser = Parser(
        prog="gruwatch bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run gruwatch's benchmarks and print their tables: every figure beside its reference "
            "measured in the same run, and the machine (CPU, cores, load, library versions).\n"
            "Without names, runs them all in their short form within --budget."
        ),
        epilog=(
            "examples:\n"
            "  gruwatch bench                          # all, short form, <= 10 minutes\n"
            "  gruwatch bench agent --json agent.json  # the agent's figures, also as JSON\n"
            "  gruwatch bench features -- --repeats 9  # arguments after -- go to the script\n\n"
            "available: " + (", ".join(benches) or "none (run from a source checkout)")
        ),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="with one NAME that supports it (agent): also write its figures and the machine to FILE",
    )
    parser.add_argument(
        "--budget",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help=f"time budget of the whole suite (default 10m; {DURATION_HELP}); each benchmark gets a share",
    )
    hidden_alias(parser, "--budget-s", dest="budget", type=parse_duration)
    parser.add_argument(
        "--full", action="store_true", help="run each benchmark in its long form (no --quick; no budget)"
    )
    raw = list(argv) if argv is not None else sys.argv[1:]
    extra: list[str] = []
    if "--" in raw:
        cut = raw.index("--")
        raw, extra = raw[:cut], raw[cut + 1 :]
    args = parser.parse_args(raw)
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
    if (args.json or extra) and len(args.names) != 1:
        sys.stderr.write("gruwatch bench: --json and arguments after -- need exactly one NAME\n")
        return 2
    if args.json and not _supports(benches[args.names[0]], "--json"):
        sys.stderr.write(f"gruwatch bench: {args.names[0]} has no --json output (agent has)\n")
        return 2
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            sys.stderr.write(f"gruwatch bench: cannot write {args.json}: {exc}\n")
            return 2

    names = args.names or list(benches)
    suite = not args.names
    sys.stdout.write(describe() + "\n")
    if suite and not args.full:
        sys.stdout.write(f"suite: short form of each benchmark, {args.budget:.0f} s budget in all\n")
    sys.stdout.flush()
    others = [n for n in names if n not in SHARES]
    spare = max(0.0, 1.0 - sum(SHARES.get(n, 0.0) for n in names))
    results: list[tuple[str, int | None, float]] = []
    for name in names:
        script = benches[name]
        cmd = [sys.executable, str(script)]
        budget: float | None = None
        if suite and not args.full:
            if _supports(script, "--quick"):
                cmd.append("--quick")
            else:
                cmd += SHORT_ARGS.get(name, [])
            budget = args.budget * (SHARES.get(name) or spare / max(1, len(others)))
        if args.json:
            cmd += ["--json", str(Path(args.json).resolve())]
        cmd += extra
        shown = f", up to {budget:.0f} s" if budget else ""
        sys.stdout.write(f"\n=== {name} ({' '.join([script.name, *cmd[2:]])}{shown}) ===\n")
        sys.stdout.flush()
        rc, seconds = _run(cmd, budget)
        status = f"exit {rc}" if rc is not None else "STOPPED: over its time share"
        sys.stdout.write(f"--- {name}: {status} in {seconds:.1f} s\n")
        sys.stdout.flush()
        results.append((name, rc, seconds))
    if len(results) > 1:
        sys.stdout.write("\nsummary\n")
        for name, rc, seconds in results:
            sys.stdout.write(
                f"  {name:12s} {'ok' if rc == 0 else 'FAILED' if rc is not None else 'STOPPED'}"
                f"  {seconds:6.1f} s\n"
            )
        sys.stdout.write(f"  {'total':12s}      {sum(s for _, _, s in results):6.1f} s\n")
    failed = [n for n, rc, _ in results if rc != 0]
    if failed:
        sys.stderr.write(f"gruwatch bench: failed or stopped: {', '.join(failed)}\n")
        return 1
    return 0


def write_json(path: str | Path, figures: dict[str, Any]) -> None:
    """Write a benchmark's figures with the machine they were measured on (for run-to-run comparison)."""
    Path(path).write_text(json.dumps({**figures, "machine": machine_info()}, indent=2) + "\n")
