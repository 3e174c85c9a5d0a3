"""Which windows keep their raw samples (`RawRetention`), and the bounded memory that makes it possible.

Kept: a sampled share (`raw_sample_fraction`, the same windows after a restart), every window in
warning or alarm, the `after` windows after a state change, and the `per_sensor` windows before it.
Those are not known to matter until the change comes, so they are stored without samples and
remembered in a small in-memory ring (`RawRing`, bounded by `raw_ring_bytes`); the change's
transaction attaches their samples to the stored rows.
"""

from __future__ import annotations

import zlib
from collections import deque

import numpy as np
import numpy.typing as npt

from edge_agent.sequencing import seq_newer

#: Windows after an alarm-state change whose raw samples are kept (before it: `raw_before_transition`).
RAW_AFTER_TRANSITION = 16


class RawRing:
    """The last `per_sensor` windows of each sensor stored WITHOUT raw samples, `max_bytes` in all.

    When a sensor changes alarm state, `take` hands back its windows just before the change so their
    samples can be attached to the stored rows. Memory is bounded globally: beyond `max_bytes` the
    oldest windows (of any sensor) are forgotten first.
    """

    def __init__(self, per_sensor: int, max_bytes: int) -> None:
        self.per_sensor = per_sensor
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._by_sensor: dict[str, deque[tuple[int, int, npt.NDArray[np.float32]]]] = {}
        self._order: deque[tuple[str, int]] = deque()  # (sensor, window id), oldest first

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_sensor.values())

    def add(self, sensor: str, window_id: int, seq: int, samples: npt.NDArray[np.float32]) -> None:
        if self.per_sensor <= 0 or samples.nbytes > self.max_bytes:
            return
        d = self._by_sensor.get(sensor)
        if d is None:
            d = self._by_sensor[sensor] = deque()
        d.append((window_id, seq, samples))
        self._order.append((sensor, window_id))
        self.nbytes += samples.nbytes
        if len(d) > self.per_sensor:
            self.nbytes -= d.popleft()[2].nbytes  # its entry in _order goes stale
        while self.nbytes > self.max_bytes:
            self._pop_oldest()
        if len(self._order) > 4 * self.per_sensor * max(1, len(self._by_sensor)) + 1024:
            live = {(k, e[0]) for k, q in self._by_sensor.items() for e in q}
            self._order = deque(x for x in self._order if x in live)

    def _pop_oldest(self) -> None:
        sensor, wid = self._order.popleft()
        d = self._by_sensor.get(sensor)
        if d and d[0][0] == wid:
            self.nbytes -= d.popleft()[2].nbytes
            if not d:
                del self._by_sensor[sensor]

    def take(self, sensor: str, seq: int) -> list[tuple[int, npt.NDArray[np.float32]]]:
        """(window id, samples) of `sensor`'s kept windows within `per_sensor` seqs before `seq`."""
        d = self._by_sensor.pop(sensor, None)
        if not d:
            return []
        out = []
        for wid, s, samples in d:
            self.nbytes -= samples.nbytes
            if seq_newer(seq, s) and (seq - s) % (1 << 32) <= self.per_sensor:
                out.append((wid, samples))
        return out


def sampled(key: str, seq: int, fraction: float) -> bool:
    """A deterministic pseudo-random share `fraction` of windows (same answer after a restart)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    return zlib.crc32(f"{key}#{seq}".encode()) < fraction * 4294967296.0


class RawRetention:
    """The retention policy across batches: the ring of windows before a change, the count after one."""

    def __init__(
        self,
        *,
        fraction: float,
        before: int,
        ring_bytes: int,
        max_sensors: int,
        after: int = RAW_AFTER_TRANSITION,
    ) -> None:
        self.fraction = fraction
        self.after = after
        self.max_sensors = max_sensors
        self.ring = RawRing(before, ring_bytes)
        self._after: dict[str, int] = {}  # sensor -> windows still to keep after its last change

    def batch(self) -> RawBatch:
        """Decisions for the next batch of windows."""
        return RawBatch(self)

    def _changed(self, key: str) -> None:
        self._after.pop(key, None)
        self._after[key] = self.after
        if len(self._after) > self.max_sensors:
            del self._after[next(iter(self._after))]  # oldest

    def _after_change(self, key: str) -> bool:
        left = self._after.get(key)
        if left is None:
            return False
        if left <= 1:
            del self._after[key]
        else:
            self._after[key] = left - 1
        return True


class RawBatch:
    """Raw-sample decisions for one batch, window by window in order; `raw[i]` goes into row i."""

    def __init__(self, policy: RawRetention) -> None:
        self.policy = policy
        self.raw: list[npt.NDArray[np.float32] | None] = []  # samples stored with row i
        self.attach: list[tuple[int, npt.NDArray[np.float32]]] = []  # (stored window id, samples)
        self._held: list[npt.NDArray[np.float32] | None] = []  # samples of row i not stored (yet)
        self._keys: list[str] = []
        self._seqs: list[int] = []
        self._no_raw: dict[str, list[int]] = {}  # rows of this batch stored without samples, per sensor

    def add(self, key: str, seq: int, state: str, changed: bool, samples: npt.NDArray[np.float32]) -> None:
        """Decide for the next window (`changed`: its alarm state changed at it)."""
        p = self.policy
        keep = state != "ok" or changed or sampled(key, seq, p.fraction)
        if changed:
            # The windows just before the change: from earlier batches (the ring) and this batch.
            self.attach.extend(p.ring.take(key, seq))
            for j in self._no_raw.pop(key, []):
                if (seq - self._seqs[j]) % (1 << 32) <= p.ring.per_sensor:
                    self.raw[j], self._held[j] = self._held[j], None
            p._changed(key)
        elif p._after_change(key):
            keep = True
        if not keep:
            self._no_raw.setdefault(key, []).append(len(self.raw))
        self.raw.append(samples if keep else None)
        self._held.append(None if keep else samples)
        self._keys.append(key)
        self._seqs.append(seq)

    def committed(self, window_ids: range) -> None:
        """After the batch's commit: remember the windows stored without samples in the ring."""
        ring = self.policy.ring
        if ring.per_sensor <= 0 or not window_ids:  # no rows stored (storage degraded): nothing to attach
            return
        for wid, key, seq, samples in zip(window_ids, self._keys, self._seqs, self._held, strict=True):
            if samples is not None:
                ring.add(key, wid, seq, samples)
