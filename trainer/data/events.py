"""Maintenance events (a CSV from the plant's records) and the labels they give unlabelled runs.

CSV columns, with a header row: `machine`, `sensor` (optional column; empty = every sensor of the
machine), `ts` (ISO-8601, naive = UTC, or epoch seconds) and `event`, one of failure, repair,
replacement, inspection, inspection_ok (an inspection that found nothing). Lines starting with '#' are comments.

Labelling (`apply_events`), for runs whose `labels` is None (agent exports), using the run's absolute
time `meta["start_epoch_s"] + ts`: a window's life ends at the next failure, repair or replacement of
its machine/sensor at or after the window. If that event is a failure within `horizon_s`, the window's
rul_s is the time to it; otherwise (no failure ahead, a failure beyond the horizon, or a repair or
replacement first, which ends that bearing's life without a failure) rul_s is +inf. failed_at_end is
True when the run's last window has a finite rul_s. Inspections change nothing. degraded is all False
and fault "unknown": events say when, not what.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from trainer.data.runs import DataError, Run, RunLabels

EVENT_KINDS: frozenset[str] = frozenset({"failure", "repair", "replacement", "inspection", "inspection_ok"})
LIFE_ENDING: frozenset[str] = frozenset({"failure", "repair", "replacement"})
REQUIRED_COLUMNS: tuple[str, ...] = ("machine", "ts", "event")


@dataclass(frozen=True)
class MaintenanceEvent:
    machine: str
    sensor: str | None  # None = every sensor of the machine
    ts_s: float  # epoch seconds (UTC)
    event: str  # one of EVENT_KINDS
    line: int = 0  # line in the CSV it came from (0 = not from a file)


def parse_ts(text: str) -> float:
    """Epoch seconds from epoch seconds or an ISO-8601 time (naive times are UTC)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"time {text!r} is not finite")
        return value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"time {text!r} is neither epoch seconds nor ISO-8601 (e.g. 2026-03-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def load_events_csv(path: str | Path) -> list[MaintenanceEvent]:
    """The events of a maintenance CSV, sorted by time; DataError with the line number for bad rows."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the events CSV ({exc})") from exc
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    numbers = [i + 1 for i, ln in enumerate(text.splitlines()) if not ln.lstrip().startswith("#")]
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: empty; expected a header line machine,sensor,ts,event")
    cols = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise DataError(
            f"{path}:{numbers[0]}: header {header} lacks {', '.join(missing)}; "
            "expected columns machine,sensor,ts,event (sensor optional)"
        )
    idx = {c: cols.index(c) for c in (*REQUIRED_COLUMNS, "sensor") if c in cols}
    events: list[MaintenanceEvent] = []
    for row_no, row in enumerate(reader, start=1):
        line = numbers[row_no]
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        machine = row[idx["machine"]].strip()
        if not machine:
            raise DataError(f"{path}:{line}: empty machine")
        sensor = row[idx["sensor"]].strip() if "sensor" in idx else ""
        kind = row[idx["event"]].strip().lower()
        if kind not in EVENT_KINDS:
            raise DataError(
                f"{path}:{line}: event {row[idx['event']]!r} is not one of {', '.join(sorted(EVENT_KINDS))}"
            )
        try:
            ts_s = parse_ts(row[idx["ts"]])
        except ValueError as exc:
            raise DataError(f"{path}:{line}: {exc}") from exc
        events.append(MaintenanceEvent(machine, sensor or None, ts_s, kind, line))
    events.sort(key=lambda e: (e.ts_s, e.line))
    return events


def label_from_events(
    t_abs: np.ndarray, events: Sequence[MaintenanceEvent], *, horizon_s: float
) -> RunLabels:
    """Labels for windows at absolute times `t_abs` (epoch s) from the events of their sensor."""
    ending = sorted((e for e in events if e.event in LIFE_ENDING), key=lambda e: e.ts_s)
    times = np.asarray([e.ts_s for e in ending], dtype=np.float64)
    is_failure = np.asarray([e.event == "failure" for e in ending], dtype=bool)
    n = t_abs.shape[0]
    rul = np.full(n, np.inf)
    if times.size:
        nxt = np.searchsorted(times, t_abs, side="left")  # first life-ending event at or after t
        ahead = nxt < times.size
        k = nxt[ahead]
        dt = times[k] - t_abs[ahead]
        ok = is_failure[k] & (dt <= horizon_s)
        rul_ahead = np.where(ok, dt, np.inf)
        rul[ahead] = rul_ahead
    return RunLabels(
        rul_s=rul,
        degraded=np.zeros(n, dtype=bool),
        fault=np.full(n, "unknown", dtype=object),
        severity=None,
        failed_at_end=bool(n and math.isfinite(rul[-1])),
    )


def apply_events(runs: Sequence[Run], events: Sequence[MaintenanceEvent], *, horizon_s: float) -> list[Run]:
    """Runs with labels set from maintenance events where they had none (labelled runs pass unchanged).

    Events match a run by machine, and by sensor unless the event's sensor is empty. Needs each
    unlabelled run's meta["start_epoch_s"]. Inputs are not modified; new Run objects are returned.
    """
    if not horizon_s > 0:
        raise DataError(f"horizon_s must be > 0 seconds, got {horizon_s}")
    out: list[Run] = []
    for run in runs:
        if run.labels is not None:
            out.append(run)
            continue
        start = run.meta.get("start_epoch_s")
        if start is None:
            raise DataError(
                f"run {run.run_id} has no meta['start_epoch_s'] (absolute start time), so maintenance "
                "events cannot be placed on it"
            )
        mine = [e for e in events if e.machine == run.machine and e.sensor in (None, run.sensor)]
        labels = label_from_events(float(start) + run.ts, mine, horizon_s=horizon_s)
        out.append(replace(run, labels=labels))
    return out
