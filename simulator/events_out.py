"""Maintenance events of a simulated fleet, written as a plant's maintenance system would record them.

`gruwatch simulate fleet --events-out CSV` calls `write_fleet_events` after the run: one `failure` row
for every bearing whose failure window was published (at its failure time), and one `inspection_ok`
row for every other sensor at the time of its last published window (an inspection that found
nothing: the bearing was healthy then). Times are ISO-8601 UTC on the fleet's clock (`start_ns` plus
simulated time, without any injected sensor clock skew: the plant's log keeps true time). The format
is the one `gruwatch retrain --events` and `gruwatch train --events` read (trainer/data/events.py).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fleet_events(fleet: Sequence[Any], offered: Sequence[int], start_ns: int) -> list[dict[str, str]]:
    """Rows (machine, sensor, ts, event) for `fleet` (SensorRuns) given the windows offered per sensor."""
    rows = []
    start_s = start_ns / 1e9
    for run, n in zip(fleet, offered, strict=True):
        if n <= 0:
            continue
        if run.failure_s is not None and n >= run.n_windows:
            rows.append(
                {
                    "machine": run.machine,
                    "sensor": run.sensor,
                    "ts": _iso(start_s + run.failure_s),
                    "event": "failure",
                }
            )
        else:
            rows.append(
                {
                    "machine": run.machine,
                    "sensor": run.sensor,
                    "ts": _iso(start_s + run.t(n - 1)),
                    "event": "inspection_ok",
                }
            )
    rows.sort(key=lambda r: (r["ts"], r["machine"], r["sensor"]))
    return rows


def write_fleet_events(path: Path, fleet: Sequence[Any], offered: Sequence[int], start_ns: int) -> int:
    """Write the events CSV; returns the number of failures in it."""
    rows = fleet_events(fleet, offered, start_ns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write("# maintenance events of a simulated fleet (gruwatch simulate fleet --events-out)\n")
        writer = csv.DictWriter(fh, fieldnames=["machine", "sensor", "ts", "event"])
        writer.writeheader()
        writer.writerows(rows)
    return sum(r["event"] == "failure" for r in rows)
