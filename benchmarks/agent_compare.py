"""`benchmarks/bench_agent.py --variant ...`: agent settings against the defaults and the bare paho
subscriber, in interleaved rounds (every variant sees the same conditions), medians over the rounds."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]


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
                f"agent, {name}" + (f" ({', '.join(f'{k}={v}' for k, v in over.items())})" if over else ""),
                f"{med(x[0] for x in rs):,.0f} win/s",
                f"{med(x[2] for x in rs):.0%} of bare",
                f"{cpu:.3f} CPU ms/win = {cpu / bare_cpu:.1f}x bare; defaults/this {base_cpu / cpu:.2f}",
            )
        )
    return rows
