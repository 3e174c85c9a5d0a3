"""The rows the agent's store takes and gives back (edge_agent.store): a scored window, an outgoing
message and a stored one, and what one enforcement of the disk budget evicted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PRIORITY_ALERT = 0
PRIORITY_HEALTH = 1
PRIORITY_STATUS = 2


@dataclass(frozen=True, slots=True)
class WindowRow:
    """The results of one scored window, as `record_batch` stores them."""

    sensor: str  # "machine/sensor"
    seq: int
    ts_ns: int
    features: npt.NDArray[np.float32]  # [F]
    score: float
    state: str  # "ok" | "warning" | "alarm"
    model: str
    fs: float = 0.0
    rpm: float = 0.0
    raw: npt.NDArray[np.float32] | None = None  # raw samples, kept for a sampled fraction


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to publish; `priority` PRIORITY_ALERT goes before PRIORITY_HEALTH."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    priority: int = PRIORITY_HEALTH


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A stored, not yet acknowledged outbox message; `id` goes to `mark_sent`."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    priority: int


@dataclass(slots=True)
class Eviction:
    """What one `enforce_budget` call removed, and the store's size before and after."""

    raw_dropped: int = 0
    windows_dropped: int = 0
    alarm_raw_dropped: int = 0
    alarm_windows_dropped: int = 0
    transitions_dropped: int = 0
    outbox_dropped: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def any(self) -> bool:
        return bool(
            self.raw_dropped
            or self.windows_dropped
            or self.alarm_raw_dropped
            or self.alarm_windows_dropped
            or self.transitions_dropped
            or self.outbox_dropped
        )
