"""`benchmarks/bench_agent.py`'s CPU budget: what the publisher and the broker cost per message, measured
around the bare subscriber's and the agent's runs, and the rate the whole pipeline could reach on this
machine's cores if nothing else ran (cores / CPU seconds per message of every process in the path).

The throughput goals (≥ 10,000 windows/s on 2 cores; ≥ 100 % of the bare paho subscriber) are checked
against this bound: where the CPU per message of publisher + broker + agent exceeds 2 cores / 10,000 per
second, or exceeds that of publisher + broker + bare subscriber, no scheduling can meet the goal here.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BROKER_PID: list[int] = []  # set by bench_agent.main once its private Mosquitto runs
OTHERS_MS: dict[str, list[tuple[float, float]]] = {}  # run kind -> [(publisher, broker) CPU ms/msg]


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@contextmanager
def others_cpu(kind: str, messages: int) -> Iterator[None]:
    """Record the publisher's (children waited for inside the block) and the broker's CPU per message."""
    broker = BROKER_PID[0] if BROKER_PID else 0
    c0, b0 = _children_cpu_s(), proc_cpu_s(broker)
    yield
    pub_ms = (_children_cpu_s() - c0) / max(messages, 1) * 1e3
    broker_ms = (proc_cpu_s(broker) - b0) / max(messages, 1) * 1e3
    OTHERS_MS.setdefault(kind, []).append((pub_ms, broker_ms))


def budget_rows(bare_ms: float, agent_ms: float, cores: int | None = None) -> list[tuple[str, str, str, str]]:
    """Rows: each process's CPU per message and the rate the cores allow with and without the agent."""
    cores = cores or len(os.sched_getaffinity(0))
    if not OTHERS_MS.get("bare") or not OTHERS_MS.get("agent"):
        return []
    pub_b, brk_b = OTHERS_MS["bare"][-1]
    pub_a, brk_a = OTHERS_MS["agent"][-1]
    bare_total = pub_b + brk_b + bare_ms
    agent_total = pub_a + brk_a + agent_ms
    return [
        (
            "CPU per message, bare run",
            f"{bare_total:.3f} ms",
            f"publisher {pub_b:.3f} + broker {brk_b:.3f} + subscriber {bare_ms:.3f}",
            f"{cores} cores allow at most {cores / bare_total * 1e3:,.0f} msg/s",
        ),
        (
            "CPU per window, agent run",
            f"{agent_total:.3f} ms",
            f"publisher {pub_a:.3f} + broker {brk_a:.3f} + agent {agent_ms:.3f}",
            f"{cores} cores allow at most {cores / agent_total * 1e3:,.0f} win/s "
            f"(= {bare_total / agent_total:.0%} of the bare run's bound; 10,000 win/s needs <= "
            f"{cores / 10:.2f} ms)",
        ),
        (
            "CPU per window, gateway",
            f"{brk_a + agent_ms:.3f} ms",
            f"broker {brk_a:.3f} + agent {agent_ms:.3f} (publishers on other machines)",
            f"{cores} cores allow at most {cores / (brk_a + agent_ms) * 1e3:,.0f} win/s",
        ),
    ]


def budget_figures() -> dict[str, float]:
    """The latest runs' publisher and broker CPU per message, for `--json` (run-to-run comparison)."""
    out: dict[str, float] = {}
    for kind, runs in OTHERS_MS.items():
        if runs:
            out[f"publisher_cpu_ms_per_msg_{kind}"] = round(runs[-1][0], 4)
            out[f"broker_cpu_ms_per_msg_{kind}"] = round(runs[-1][1], 4)
    return out
