"""A bounded memory of recent windows stored without raw samples, to attach them when an alarm starts."""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from edge_agent.sequencing import seq_newer


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
