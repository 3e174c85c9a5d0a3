"""What a fleet run reports: per-sensor facts, exact counters and the summary, and the live progress line.

Standard library only at import time (the counters' types are annotations), like `fleet_cli`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from simulator.faults import FaultCounters
    from simulator.publisher import PublishStats

PROGRESS_INTERVAL_S = 0.5


@dataclass
class SensorReport:
    machine: str
    sensor: str
    topic: str
    windows: int  # windows offered (published or faulted), silenced ones excluded
    skew_ns: int
    silent_after: int | None


@dataclass
class FleetReport:
    """The outcome of a run. `faults` and `publish` are exact counters."""

    stopped_by: str  # "complete" | "duration" | "signal"
    elapsed_s: float
    sim_time_s: float  # simulated time of the last window offered
    start_ns: int
    faults: FaultCounters
    publish: PublishStats
    unsent: int  # messages the injector handed out that a stop prevented from being published
    flushed: bool  # every published message was acknowledged before disconnecting
    sensors: list[SensorReport] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.faults.windows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stopped_by": self.stopped_by,
            "elapsed_s": self.elapsed_s,
            "sim_time_s": self.sim_time_s,
            "start_ns": self.start_ns,
            "windows_per_s": self.rate,
            "faults": self.faults.to_dict(),
            "publish": self.publish.to_dict(),
            "unsent": self.unsent,
            "flushed": self.flushed,
            "sensors": [vars(s) for s in self.sensors],
        }

    def summary(self) -> str:
        f, p = self.faults, self.publish
        lines = [
            f"fleet: {f.windows} windows from {len(self.sensors)} sensors in {self.elapsed_s:.1f} s "
            f"({self.rate:,.0f} windows/s), simulated {hms(self.sim_time_s)}, stopped: {self.stopped_by}",
            f"  published {p.published} messages ({p.bytes / 1e6:.1f} MB), acknowledged {p.acked}, "
            f"reconnects {p.reconnects}, disconnects {p.disconnects}"
            + ("" if self.flushed else " (NOT all acknowledged before exit)"),
        ]
        if (
            f.dropped
            or f.duplicated
            or f.reordered
            or f.corrupted
            or f.nan_bursts
            or f.skewed_sensors
            or f.silent_sensors
        ):
            kinds = ", ".join(f"{k} {v}" for k, v in f.corrupt_kinds.items() if v)
            lines.append(
                f"  faults: dropped {f.dropped}, duplicated {f.duplicated}, reordered {f.reordered}, "
                f"corrupted {f.corrupted}{f' ({kinds})' if kinds else ''}, NaN windows {f.nan_windows} "
                f"in {f.nan_bursts} bursts, skewed sensors {f.skewed_sensors}, silent sensors {f.silent_sensors}"
            )
        if self.unsent:
            lines.append(f"  {self.unsent} messages were not published because of the stop")
        return "\n".join(lines)


def hms(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


class ProgressLine:
    """One self-overwriting status line on a terminal-like stream, at most every PROGRESS_INTERVAL_S."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._next = 0.0
        self._shown = False

    def update(
        self,
        windows: int,
        elapsed: float,
        sim_time: float,
        reconnects: int,
        connected: bool,
        *,
        force: bool = False,
    ) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + PROGRESS_INTERVAL_S
        rate = windows / elapsed if elapsed > 0 else 0.0
        state = "" if connected else " · broker unreachable, retrying"
        self.stream.write(
            f"\r\x1b[K{windows:,} windows · {rate:,.0f}/s · sim {hms(sim_time)} · {reconnects} reconnects{state}"
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.stream is not None and self._shown:
            self.stream.write("\n")
            self.stream.flush()
