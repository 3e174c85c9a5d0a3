"""Benchmark helper: run the agent on a few CPUs as a dedicated gateway would, the load elsewhere.

On the 2-core development machine the agent shares its cores with the benchmark's publisher and
broker, so the agent goals of issue 12 ("on 2 cores") cannot be told apart from the load generator.
On a bigger machine `bench_agent.py --gateway-cpus 0,1` pins the agent process (and the bare paho
subscriber it is compared with, and the transit reference) to those CPUs, and everything else —
publisher, broker, the health listener, this process — to the remaining ones; `--broker-on-gateway`
puts the broker on the gateway CPUs too (a gateway that runs its own Mosquitto).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GATEWAY: set[int] = set()
OTHERS: set[int] = set()


def parse_cpus(spec: str) -> set[int]:
    """'0,1' or '0-3' or '0-1,6' -> {0, 1, ...}."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def configure(spec: str | None) -> str:
    """Pin this thread (and so every later thread and child) to the CPUs outside `spec`. Returns a line
    describing the placement, or '' without `spec`. Raises SystemExit with the fix on a bad list."""
    if not spec:
        return ""
    have = os.sched_getaffinity(0)
    try:
        gateway = parse_cpus(spec)
    except ValueError:
        raise SystemExit(f"--gateway-cpus {spec!r}: give CPU numbers such as 0,1 or 0-1") from None
    if not gateway <= have or not have - gateway:
        raise SystemExit(
            f"--gateway-cpus {spec}: this process may use CPUs {sorted(have)}; the gateway CPUs must be "
            "among them and leave at least one for the publisher and broker"
        )
    GATEWAY.update(gateway)
    OTHERS.update(have - gateway)
    os.sched_setaffinity(0, OTHERS)
    return f"gateway CPUs {sorted(GATEWAY)} (agent, bare subscriber), load generators on {sorted(OTHERS)}"


def gateway_preexec() -> Callable[[], None] | None:
    """`preexec_fn` for a child that must run on the gateway CPUs (None when not pinning)."""
    if not GATEWAY:
        return None
    cpus = set(GATEWAY)
    return lambda: os.sched_setaffinity(0, cpus)


@contextmanager
def on_gateway() -> Iterator[None]:
    """Threads started inside the block (e.g. a paho network thread) run on the gateway CPUs."""
    if not GATEWAY:
        yield
        return
    os.sched_setaffinity(0, GATEWAY)
    try:
        yield
    finally:
        os.sched_setaffinity(0, OTHERS)
