"""Per-sensor state: the typed record (`SensorState`), its columns (`StateColumns`) and the in-memory table.

Each sensor has a GRU hidden state `h` [layers, hidden], its alarm state and hysteresis counters,
how many windows it has been stepped (`steps`) and when it was last seen. `StateTable` keeps them as
one structured numpy array whose rows are sensors, bounded in count: a sensor gets a fresh zero row
on first sight; when the table is full the least recently used sensor is evicted, and `evict_idle`
drops sensors silent for too long. Gathering the states of a batch is one fancy-index of one array
(PERFORMANCE-NOTES: a dict of per-sensor arrays cost 88% over a bare onnxruntime run; one array 13%).

`StateColumns` is the table exported as typed columns (the scorer's `export_states`); `SensorState`
is one sensor's row as the store saves it (edge_agent.saved_states). A new per-sensor field (for
example a healthy baseline array) is added in four places, all in this module except the last:
`FIELDS` and `state_dtype`, `StateColumns`, `SensorState` (+ `StateColumns.row`), and the states
table's columns in edge_agent/saved_states.py (with a schema migration there).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.sequencing import Run

EXPORT_FORMAT = 1
#: The per-sensor fields saved and restored (the table also keeps `seen` and `tick` for eviction).
FIELDS = ("h", "alarm", "above", "below", "steps")


def state_dtype(state_shape: tuple[int, int], baseline_width: int = 0) -> np.dtype[np.void]:
    """The record of one sensor (with its healthy-baseline state when the model declares one)."""
    extra = [("baseline", np.float64, (baseline_width,))] if baseline_width else []
    return np.dtype(
        [
            *extra,
            ("h", np.float32, tuple(state_shape)),
            ("alarm", np.int8),
            ("above", np.int32, (2,)),
            ("below", np.int32, (2,)),
            ("steps", np.int64),
            ("seen", np.float64),  # table clock at the last window (for evict_idle)
            ("tick", np.int64),  # table call counter at the last window (for LRU eviction)
        ]
    )


@dataclass(frozen=True, slots=True)
class SensorState:
    """Everything a sensor needs to resume exactly: hidden state, alarm counters, last seq and ts.

    `h` is None for a sensor known by sequence number only (its hidden state was evicted or reset);
    its next window starts from a fresh state. `above` / `below` are the alarm state machine's
    hysteresis counters (edge_agent.alarms), `steps` the windows its state has seen, `run` what
    tells a sensor reboot from a replay after an agent restart (edge_agent.sequencing).
    """

    h: npt.NDArray[np.float32] | None  # any shape, typically [layers, hidden]
    model: str
    last_seq: int
    last_ts_ns: int
    alarm: int = 0  # 0 ok, 1 warning, 2 alarm
    above: tuple[int, int] = (0, 0)
    below: tuple[int, int] = (0, 0)
    steps: int = 0
    baseline: npt.NDArray[np.float64] | None = None  # [1 + 2F] healthy baseline (edge_agent.baseline)
    run: Run | None = None  # the sequence tracker's run since the last reset (None: not known)


@dataclass(slots=True)
class StateColumns:
    """Every tracked sensor's state as columns, least recently used first (row i = `sensors[i]`)."""

    model_version: str
    state_shape: tuple[int, int]
    sensors: list[str]
    h: npt.NDArray[np.float32]  # [n, layers, hidden]
    alarm: npt.NDArray[np.int8]  # [n]
    above: npt.NDArray[np.int32]  # [n, 2]
    below: npt.NDArray[np.int32]  # [n, 2]
    steps: npt.NDArray[np.int64]  # [n]
    # [n, 1 + 2F] per-sensor healthy baseline (edge_agent.baseline) when the model declares one
    baseline: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.sensors)

    @classmethod
    def empty(cls, model_version: str, state_shape: tuple[int, int]) -> StateColumns:
        return cls.of(model_version, state_shape, {})

    @classmethod
    def of(
        cls, model_version: str, state_shape: tuple[int, int], states: dict[str, SensorState]
    ) -> StateColumns:
        """Columns from per-sensor records (each with `h` of `state_shape`), in the dict's order."""
        keys = list(states)
        n = len(keys)
        h = np.zeros((n, *state_shape), np.float32)
        for i, k in enumerate(keys):
            h[i] = np.asarray(states[k].h, dtype=np.float32)
        widths = {None if states[k].baseline is None else len(states[k].baseline) for k in keys}  # type: ignore[arg-type]
        baseline = None
        if n and len(widths) == 1 and None not in widths:  # every sensor saved with a baseline of one width
            baseline = np.stack([np.asarray(states[k].baseline, np.float64) for k in keys])
        return cls(
            model_version,
            (int(state_shape[0]), int(state_shape[1])),
            keys,
            h,
            np.array([states[k].alarm for k in keys], np.int8),
            np.array([states[k].above for k in keys], np.int32).reshape(n, 2),
            np.array([states[k].below for k in keys], np.int32).reshape(n, 2),
            np.array([states[k].steps for k in keys], np.int64),
            baseline,
        )

    def row(self, i: int, *, last_seq: int, last_ts_ns: int, run: Run | None = None) -> SensorState:
        """Sensor `i` as a SensorState."""
        above, below = self.above[i].tolist(), self.below[i].tolist()
        return SensorState(
            h=self.h[i],
            model=self.model_version,
            last_seq=last_seq,
            last_ts_ns=last_ts_ns,
            alarm=int(self.alarm[i]),
            above=(above[0], above[1]),
            below=(below[0], below[1]),
            steps=int(self.steps[i]),
            baseline=None if self.baseline is None else self.baseline[i],
            run=run,
        )

    def with_model(self, model_version: str) -> StateColumns:
        """The same states, tagged with another model (one of the same state shape)."""
        return dataclasses.replace(self, model_version=model_version)

    def to_dict(self) -> dict[str, Any]:
        """Plain values and arrays (for `states_to_bytes`)."""
        out: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "model_version": self.model_version,
            "state_shape": list(self.state_shape),
            "sensors": list(self.sensors),
        }
        for name in FIELDS:
            out[name] = getattr(self, name)
        if self.baseline is not None:
            out["baseline"] = self.baseline
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StateColumns:
        """Inverse of `to_dict` (ValueError / KeyError / TypeError when it is not one)."""
        if d.get("format") != EXPORT_FORMAT:
            raise ValueError(f"state export format {d.get('format')!r} is not {EXPORT_FORMAT}")
        shape = [int(x) for x in d.get("state_shape", [])]
        if len(shape) != 2:
            raise ValueError(f"state_shape {d.get('state_shape')!r} is not [layers, hidden]")
        arrays = {name: np.asarray(d[name]) for name in FIELDS}
        return cls(
            str(d.get("model_version")),
            (shape[0], shape[1]),
            [str(s) for s in d["sensors"]],
            arrays["h"].astype(np.float32, copy=False),
            arrays["alarm"].astype(np.int8, copy=False),
            arrays["above"].astype(np.int32, copy=False),
            arrays["below"].astype(np.int32, copy=False),
            arrays["steps"].astype(np.int64, copy=False),
            None if d.get("baseline") is None else np.asarray(d["baseline"], np.float64),
        )


class StateTable:
    """Per-sensor states, rows = sensors, at most `capacity` sensors, least recently used evicted first.

    The constructor only stores its arguments; the array is allocated on first use and grows by
    doubling up to `capacity`, so a table sized for 100,000 sensors costs nothing until they come.
    Recency is a per-call counter kept in the array, so marking a batch as used is one vectorised
    assignment; sensors of the same call are equally recent.
    """

    def __init__(
        self,
        state_shape: tuple[int, int],
        *,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        baseline_width: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.state_shape = (int(state_shape[0]), int(state_shape[1]))
        self.capacity = capacity
        self.clock = clock
        self.evicted_total = 0
        self._rows: dict[str, int] = {}  # sensor id -> row
        self._ids: list[str | None] = []  # row -> sensor id (None = free)
        self._free: list[int] = []
        self._tick = 0
        self.baseline_width = int(baseline_width)  # 0: the model has no per-sensor baseline
        self._data: npt.NDArray[np.void] = np.zeros(
            0, dtype=state_dtype(self.state_shape, self.baseline_width)
        )

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, sensor_id: object) -> bool:
        return sensor_id in self._rows

    @property
    def data(self) -> npt.NDArray[np.void]:
        """The one array (allocated rows; rows not in use are zero or stale)."""
        return self._data

    def _used_rows(self) -> npt.NDArray[np.intp]:
        """Rows in use, least recently used first (ties in row order)."""
        rows = np.fromiter(self._rows.values(), dtype=np.intp, count=len(self._rows))
        rows.sort()
        return rows[np.argsort(self._data["tick"][rows], kind="stable")]

    def ids(self) -> list[str]:
        """Tracked sensor ids, least recently used first."""
        return [str(self._ids[r]) for r in self._used_rows()]

    def row(self, sensor_id: str) -> int:
        """The row of a tracked sensor (KeyError if not tracked)."""
        return self._rows[sensor_id]

    def _grow(self, need: int) -> None:
        size = len(self._data)
        if need <= size:
            return
        new_size = min(self.capacity, max(need, 2 * size, 16))
        grown = np.zeros(new_size, dtype=self._data.dtype)
        grown[:size] = self._data
        self._free.extend(range(new_size - 1, size - 1, -1))  # pop() hands out low rows first
        self._ids.extend([None] * (new_size - size))
        self._data = grown

    def _evict(self, k: int, protect: npt.NDArray[np.intp]) -> None:
        """Free the k least recently used rows, never one in `protect`."""
        used = self._used_rows()
        candidates = used[~np.isin(used, protect)]
        for r in candidates[:k].tolist():
            sid = self._ids[r]
            assert sid is not None
            del self._rows[sid]
            self._ids[r] = None
            self._free.append(r)
        self.evicted_total += min(k, len(candidates))

    def rows_for(self, sensor_ids: Sequence[str]) -> npt.NDArray[np.intp]:
        """Rows for distinct sensor ids, creating fresh states for new ones; marks them used now.

        New sensors evict the least recently used others when the table is full; a batch never
        evicts its own members. ValueError if the ids repeat or outnumber the capacity.
        """
        n = len(sensor_ids)
        if n > self.capacity:
            raise ValueError(f"{n} sensors in one batch but the state table holds at most {self.capacity}")
        found = list(map(self._rows.get, sensor_ids))
        self._tick += 1
        if None not in found:
            rows = np.array(found, dtype=np.intp)
            if len(set(found)) != n:
                raise ValueError("sensor ids in one batch must be distinct (step repeats in sub-batches)")
        else:
            if len(set(sensor_ids)) != n:
                raise ValueError("sensor ids in one batch must be distinct (step repeats in sub-batches)")
            new = [i for i, r in enumerate(found) if r is None]
            self._grow(len(self._rows) + len(new))
            short = len(new) - len(self._free)
            if short > 0:
                known = np.array([r for r in found if r is not None], dtype=np.intp)
                self._evict(short, known)
            fresh = [self._free.pop() for _ in new]
            for i, r in zip(new, fresh, strict=True):
                sid = sensor_ids[i]
                self._rows[sid] = r
                self._ids[r] = sid
                found[i] = r
            rows = np.array(found, dtype=np.intp)
            self._data[fresh] = np.zeros(len(fresh), dtype=self._data.dtype)
        self._data["seen"][rows] = self.clock()
        self._data["tick"][rows] = self._tick
        return rows

    def gather_h(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        """Hidden states of `rows` as the model wants them: float32 [layers, B, hidden], contiguous."""
        return np.ascontiguousarray(self._data["h"][rows].transpose(1, 0, 2))

    def scatter_h(self, rows: npt.NDArray[np.intp], h: npt.NDArray[np.float32]) -> None:
        """Store the model's h_out [layers, B, hidden] back into `rows`."""
        self._data["h"][rows] = h.transpose(1, 0, 2)

    def put(self, sensor_id: str, state: SensorState) -> None:
        """Set one sensor's state (hidden state of this table's shape; ValueError otherwise)."""
        shape = None if state.h is None else tuple(state.h.shape)
        if shape != self.state_shape:
            raise ValueError(f"hidden state of shape {shape}, this table holds {self.state_shape}")
        r = int(self.rows_for([sensor_id])[0])
        d = self._data
        d["h"][r] = state.h
        d["alarm"][r], d["above"][r], d["below"][r], d["steps"][r] = (
            state.alarm,
            state.above,
            state.below,
            state.steps,
        )
        if self.baseline_width and state.baseline is not None and len(state.baseline) == self.baseline_width:
            d["baseline"][r] = state.baseline

    def reset(self, sensor_id: str) -> bool:
        """Zero a sensor's hidden state, alarm state and step count but keep its row and healthy
        baseline (the baseline belongs to the bearing, not to the stream). True if it was tracked."""
        r = self._rows.get(sensor_id)
        if r is None:
            return False
        for name in FIELDS:
            self._data[name][r] = 0
        return True

    def discard(self, sensor_id: str) -> bool:
        """Forget a sensor, baseline included (its next window starts from a fresh state). True if it was tracked."""
        r = self._rows.pop(sensor_id, None)
        if r is None:
            return False
        self._ids[r] = None
        self._free.append(r)
        return True

    def evict_idle(self, max_idle_s: float) -> list[str]:
        """Forget sensors not seen for more than `max_idle_s` on the table's clock; returns their ids."""
        cutoff = self.clock() - max_idle_s
        used = self._used_rows()
        gone = [str(self._ids[r]) for r in used[self._data["seen"][used] < cutoff].tolist()]
        for sid in gone:
            self.discard(sid)
        return gone

    def clear(self) -> None:
        """Forget every sensor."""
        self._rows.clear()
        self._ids = [None] * len(self._data)
        self._free = list(range(len(self._data) - 1, -1, -1))

    def export(self, model_version: str = "") -> StateColumns:
        """Every tracked sensor's state as columns, least recently used first (copies)."""
        rows = self._used_rows()
        d = self._data
        return StateColumns(
            model_version,
            self.state_shape,
            [str(self._ids[r]) for r in rows.tolist()],
            d["h"][rows].copy(),
            d["alarm"][rows].copy(),
            d["above"][rows].copy(),
            d["below"][rows].copy(),
            d["steps"][rows].copy(),
            d["baseline"][rows].copy() if self.baseline_width else None,
        )

    def restore(self, cols: StateColumns) -> None:
        """Replace the whole table with an `export()` (ValueError when it does not fit this table)."""
        if list(cols.state_shape) != list(self.state_shape):
            raise ValueError(
                f"saved states have shape {list(cols.state_shape)}, this model has "
                f"{list(self.state_shape)}; start from fresh states"
            )
        _check_columns(cols, self.state_shape)
        n = len(cols.sensors)
        keep = slice(max(0, n - self.capacity), n)  # more than fit: keep the most recently used
        sensors = cols.sensors[keep]
        m = len(sensors)
        self._rows = {}
        self._ids = []
        self._free = []
        self._data = np.zeros(0, dtype=self._data.dtype)
        self._grow(m)
        self._free = list(range(len(self._data) - 1, m - 1, -1))
        for i, sid in enumerate(sensors):
            self._rows[sid] = i
            self._ids[i] = sid
        for name in FIELDS:
            self._data[name][:m] = np.asarray(getattr(cols, name))[keep]
        if self.baseline_width and cols.baseline is not None:  # saved without one: learn afresh
            if cols.baseline.shape != (n, self.baseline_width) or not np.isfinite(cols.baseline).all():
                raise ValueError(
                    f"saved baseline states have shape {cols.baseline.shape}, expected {(n, self.baseline_width)}"
                )
            self._data["baseline"][:m] = cols.baseline[keep]
        self._data["seen"][:m] = self.clock()
        self._data["tick"][:m] = self._tick + 1 + np.arange(m)  # keep the saved recency order
        self._tick += m


def _check_columns(cols: StateColumns, state_shape: tuple[int, int]) -> None:
    """ValueError unless the columns are consistent, finite and possible."""
    n = len(cols.sensors)
    if len(set(cols.sensors)) != n:
        raise ValueError("saved states repeat a sensor id")
    expected = {"h": (n, *state_shape), "alarm": (n,), "above": (n, 2), "below": (n, 2), "steps": (n,)}
    for name, shape in expected.items():
        got = np.asarray(getattr(cols, name)).shape
        if got != shape:
            raise ValueError(f"saved states: {name} has shape {got}, expected {shape}")
    if not np.isfinite(cols.h).all():
        raise ValueError("saved states hold non-finite hidden states")
    if not np.isin(cols.alarm, (0, 1, 2)).all() or (cols.above < 0).any() or (cols.below < 0).any():
        raise ValueError("saved states hold impossible alarm states or counters")


def states_to_bytes(exported: dict[str, Any]) -> bytes:
    """An export (any dict of JSON-able values and numpy arrays) as .npz bytes, no pickle."""
    meta = {k: v for k, v in exported.items() if not isinstance(v, np.ndarray)}
    arrays = {f"a_{k}": v for k, v in exported.items() if isinstance(v, np.ndarray)}
    buf = io.BytesIO()
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def states_from_bytes(data: bytes) -> dict[str, Any]:
    """Inverse of `states_to_bytes` (ValueError on anything else)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(npz["__meta__"].tobytes().decode("utf-8"))
            out: dict[str, Any] = dict(meta)
            for key in npz.files:
                if key.startswith("a_"):
                    out[key[2:]] = npz[key]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a saved state file: {exc}") from exc
    return out
