"""`benchmarks/bench_agent.py --variant ...`: agent settings against the defaults and the bare paho
subscriber, in interleaved rounds (every variant sees the same conditions), medians over the rounds."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Row = tuple[str, str, str, str]


def _variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """("defaults", {}) and each --variant NAME:KEY=JSON,... as (NAME, its settings)."""
    variants: list[tuple[str, dict[str, Any]]] = [("defaults", {})]
    for spec in args.variant:
        name, _, items = spec.partition(":")
        over: dict[str, Any] = {}
        for item in filter(None, items.split(",")):
            key, _, value = item.partition("=")
            try:
                over[key] = json.loads(value)
            except ValueError:
                over[key] = value
        variants.append((name, over))
    return variants


def _label(name: str, over: dict[str, Any]) -> str:
    return f"agent, {name}" + (f" ({', '.join(f'{k}={v}' for k, v in over.items())})" if over else "")


def compare(
    tmp: Path,
    port: int,
    bundle: Path,
    args: argparse.Namespace,
    bare_run: Callable[..., tuple[float, float]],
    agent_run: Callable[..., tuple[float, float, int]],
    agent_settings: Callable[[argparse.Namespace], dict[str, Any]],
) -> list[Row]:
    """Agent variants (--variant NAME:KEY=VALUE,...) against the defaults and the bare subscriber, in
    interleaved rounds so every variant sees the same conditions; medians over the rounds."""
    variants = _variants(args)
    args.profile = False
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in variants}
    bare: list[tuple[float, float]] = []
    for r in range(args.rounds):
        bare.append(bare_run(port, f"bare{r}", args.sensors, args.windows))
        for i, (name, over) in enumerate(variants):
            settings = {**agent_settings(args), **over}
            rate, cpu, _ = agent_run(tmp, port, bundle, args, f"v{r}x{i}", settings)
            results[name].append((rate, cpu, rate / bare[-1][0]))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = statistics.median
    bare_rate, bare_cpu = med(b[0] for b in bare), med(b[1] for b in bare)
    rows: list[Row] = [
        ("bare paho subscriber (reference)", f"{bare_rate:,.0f} msg/s", f"{bare_cpu:.3f} CPU ms/msg", "")
    ]
    base_cpu = med(x[1] for x in results["defaults"])
    for name, over in variants:
        rs = results[name]
        cpu = med(x[1] for x in rs)
        rows.append(
            (
                _label(name, over),
                f"{med(x[0] for x in rs):,.0f} win/s",
                f"{med(x[2] for x in rs):.0%} of bare",
                f"{cpu:.3f} CPU ms/win = {cpu / bare_cpu:.1f}x bare; defaults/this {base_cpu / cpu:.2f}",
            )
        )
    return rows


def compare_latency(
    tmp: Path,
    port: int,
    bundle: Path,
    args: argparse.Namespace,
    paced: Callable[..., tuple[np.ndarray, int]],
    transit: Callable[..., tuple[np.ndarray, int]],
    agent_settings: Callable[[argparse.Namespace], dict[str, Any]],
) -> list[Row]:
    """Window -> health p50 / p99 at the paced `--rate` of each variant and the defaults, with the
    bare transit as reference, in interleaved rounds; medians over the rounds, and the latencies of
    all rounds pooled."""
    variants = _variants(args)
    per: dict[str, list[np.ndarray]] = {name: [] for name, _ in variants}
    ref: list[np.ndarray] = []
    for r in range(args.rounds):
        ref.append(transit(port, args, f"tr{r}")[0])
        for i, (name, over) in enumerate(variants):
            per[name].append(paced(tmp, port, bundle, args, f"l{r}x{i}", {**agent_settings(args), **over})[0])
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    def cells(runs: list[np.ndarray]) -> tuple[str, str, str]:
        p50 = statistics.median(float(np.percentile(x, 50)) for x in runs)
        p99s = [float(np.percentile(x, 99)) for x in runs]
        pooled = np.concatenate(runs)
        return (
            f"p50 {p50:.1f} ms",
            f"p99 {statistics.median(p99s):.1f} ms (rounds: {' / '.join(f'{x:.1f}' for x in p99s)})",
            f"pooled p99 {np.percentile(pooled, 99):.1f} ms, p99.9 {np.percentile(pooled, 99.9):.1f} ms",
        )

    rows: list[Row] = [(f"transit at {args.rate:,.0f} win/s (reference)", *cells(ref))]
    rows += [(_label(name, over), *cells(per[name])) for name, over in variants]
    return rows
