"""Storage degraded mode: with the disk full the agent keeps scoring and publishing, and says so.

A batch's results go to the store in one transaction before its windows are acked. When that
commit fails because the disk is full, `StorageGuard` frees a small reserve file kept beside the
store, enters degraded mode (metric `storage_degraded` 1, `"storage": "degraded"` on the retained
status topic) and commits the batch again without its window rows: sensor states, transitions and
outgoing messages only, so acks stay safe and health keeps flowing; the windows are not kept for
retraining (counted in `windows_not_stored`). If even that commit fails, the caller rolls the
sensors back to the store and hands the windows back to the broker unacked. `check()` (between
batches) leaves degraded mode once the disk has room for the reserve again. After every commit the
store's disk budget is checked (and enforced when exceeded), and before a commit that would take the
store over 90 % of it, room is made first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from edge_agent.errors import StoreError
from edge_agent.housekeeping import enforce_budget
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_link import MqttLink
from edge_agent.store import Store, WindowRow

log = structlog.get_logger("edge_agent.storage")

RESERVE_BYTES: Final = 1 << 20
CHECK_EVERY_S: Final = 5.0


class StorageGuard:
    """Commits a batch, falling back to degraded mode when the disk is full (daemon thread only)."""

    def __init__(self, store_path: Path, metrics: AgentMetrics, link: MqttLink, budget_bytes: int) -> None:
        self.reserve = store_path.with_name(store_path.name + ".reserve")
        self.reserve_bytes = min(RESERVE_BYTES, budget_bytes // 8)  # kept outside the store's budget
        self.metrics = metrics
        self.link = link
        self.degraded = False

    def prepare(self) -> None:
        """Make the reserve file if it is missing (no error when the disk is already full)."""
        if self.reserve.exists() and self.reserve.stat().st_size >= self.reserve_bytes:
            return
        try:
            with open(self.reserve, "wb") as f:
                f.write(b"\0" * self.reserve_bytes)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.reserve.unlink(missing_ok=True)
            log.warning("storage_reserve_missing", path=str(self.reserve), error=str(exc))

    def commit(self, store: Store, rows: Sequence[WindowRow], **parts: Any) -> list[int]:
        """`store.record_batch(rows, **parts)`, or without the rows in degraded mode (StoreError if that fails too)."""
        if not self.degraded:
            # counted as the budget counts (the -shm file too: 32 KB, 3 % of a 1 MiB budget)
            if store.counted_bytes() + _batch_bytes(rows, parts) > 0.9 * store.budget_bytes:
                enforce_budget(store, target_fraction=0.7, trigger_fraction=0.0)  # room first, then write
            try:
                ids = store.record_batch(rows, **parts)
            except StoreError as exc:
                if exc.reason != "disk_full":
                    raise
                self._enter(str(exc))
            else:
                if store.over_budget(0.9):  # the budget holds at every commit, not only every 30 s
                    enforce_budget(store, target_fraction=0.7, trigger_fraction=0.9)
                return ids
        parts["attach_raw"] = ()
        ids = store.record_batch([], **parts)
        self.metrics.windows_not_stored.inc(len(rows))
        return ids

    def _enter(self, error: str) -> None:
        self.degraded = True
        self.reserve.unlink(missing_ok=True)
        self.metrics.storage_degraded.set(1)
        self.link.set_storage("degraded")
        log.error(
            "storage_degraded", error=error, action="scoring and publishing go on; windows are not kept"
        )

    def check(self) -> None:
        """Leave degraded mode once the disk has room for the reserve again (and twice that to spare)."""
        if not self.degraded:
            return
        free = shutil.disk_usage(self.reserve.parent).free
        if free < 3 * self.reserve_bytes:
            return
        self.prepare()
        if not self.reserve.exists():
            return
        self.degraded = False
        self.metrics.storage_degraded.set(0)
        self.link.set_storage(None)
        log.warning("storage_recovered", free_bytes=free)


def _batch_bytes(rows: Sequence[WindowRow], parts: dict[str, Any]) -> int:
    """About what a batch's commit adds to the store and its WAL (whole pages: rounded up 2x)."""
    raw = sum(0 if r.raw is None else int(r.raw.nbytes) for r in rows)
    raw += sum(4 * len(samples) for _, samples in parts.get("attach_raw", ()))
    messages = sum(len(m.payload) + len(m.topic) for m in parts.get("outbox", ()))
    return 2 * (raw + messages + 512 * len(rows) + 256 * len(parts.get("states") or ()))
