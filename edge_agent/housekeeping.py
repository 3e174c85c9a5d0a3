"""The daemon's chores between batches: gauges, the disk budget, rejection logs, giving memory back."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from edge_agent.metrics import AgentMetrics
    from edge_agent.mqtt_link import MqttLink
    from edge_agent.scorer import Scorer
    from edge_agent.store import Store

log = structlog.get_logger("edge_agent.daemon")


class Gauges:
    """Refreshes the metrics that are read, not counted, from the link, the scorer and the store."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self._messages_seen = 0

    def update(self, link: MqttLink, scorer: Scorer, store: Store) -> None:
        m = self.metrics
        st = link.stats()
        m.messages.inc(max(0, st.received - self._messages_seen))
        self._messages_seen = st.received
        m.sync_rejections(st.rejected)
        m.queue_depth.set(link.qsize())
        m.connected.set(1 if st.connected else 0)
        m.tracked_sensors.set(scorer.n_tracked)
        m.store_bytes.set(store.size_bytes())
        m.outbox.set(store.outbox_count())


def enforce_budget(store: Store, target_fraction: float = 0.9, trigger_fraction: float = 1.0) -> None:
    """Keep the store within its disk budget; say what was evicted."""
    ev = store.enforce_budget(target_fraction=target_fraction, trigger_fraction=trigger_fraction)
    if ev.any:
        log.warning(
            "store_budget_enforced",
            bytes_before=ev.bytes_before,
            bytes_after=ev.bytes_after,
            windows_dropped=ev.windows_dropped + ev.alarm_windows_dropped,
            raw_dropped=ev.raw_dropped + ev.alarm_raw_dropped,
            outbox_dropped=ev.outbox_dropped,
        )


class RejectionLog:
    """Logs rejected and dropped windows as counts per reason, only what changed since the last line."""

    def __init__(self) -> None:
        self._logged: Counter[str] = Counter()

    def log(self, totals: dict[str, int]) -> None:
        now = Counter(totals)
        delta = {k: v - self._logged.get(k, 0) for k, v in now.items()}
        delta = {k: v for k, v in delta.items() if v > 0}
        if delta:
            log.warning("windows_rejected", counts=delta, totals=dict(now))
            self._logged = now


@functools.cache
def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        fn: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return fn


def trim_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps it after a burst of 10 KB windows)."""
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)
