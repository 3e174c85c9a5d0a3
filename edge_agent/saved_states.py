"""Saving and restoring the sensors' states: the store's `states` table, its migrations, warm restart.

Each batch commits its sensors' rows with its windows (`batch_states`, in `Store.record_batch`);
`save_all` rewrites the whole table from memory (a compaction); `restore` fills the scorer and the
sequence tracker from the table at start. The one-off migrations of older stores live here too:
schema 1's table lacked the alarm counters (`migrate_1_to_2`), later columns are added in place
(`add_columns`: the baseline, the sequence tracker's run), and older agents kept every state in one
snapshot blob in `meta` (`STATES_META_KEY`, moved into the table on first start).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog

from edge_agent.sequencing import Run
from edge_agent.states import SensorState, StateColumns, states_from_bytes

if TYPE_CHECKING:
    from edge_agent.metrics import AgentMetrics
    from edge_agent.scorer import Scorer
    from edge_agent.sequencing import SequenceTracker
    from edge_agent.store import Store

log = structlog.get_logger("edge_agent.saved_states")

#: Older agents' whole-store snapshot blob in `meta` (schema 1); migrated once by `restore`.
STATES_META_KEY: Final = "agent_states"

STATES_DDL: Final = """
CREATE TABLE IF NOT EXISTS states (
    sensor TEXT PRIMARY KEY,
    h BLOB NOT NULL,
    shape TEXT NOT NULL,
    model TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    last_ts_ns INTEGER NOT NULL,
    alarm INTEGER NOT NULL DEFAULT 0,
    above_warning INTEGER NOT NULL DEFAULT 0,
    above_alarm INTEGER NOT NULL DEFAULT 0,
    below_ok INTEGER NOT NULL DEFAULT 0,
    below_warning INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    touched INTEGER NOT NULL DEFAULT 0,
    baseline BLOB NOT NULL DEFAULT x'',
    run_lo_ts_ns INTEGER,
    run_hi_ts_ns INTEGER,
    run_zero_ts_ns INTEGER
);
"""

#: Columns added after schema 2 (additive: NULL in older rows, and older agents ignore them), with
#: their SQL types. The run columns: `sequencing.Run` (run_lo_ts_ns NULL: not known).
_ADDED_COLUMNS: Final = (
    ("baseline", "BLOB NOT NULL DEFAULT x''"),
    ("run_lo_ts_ns", "INTEGER"),
    ("run_hi_ts_ns", "INTEGER"),
    ("run_zero_ts_ns", "INTEGER"),
)

#: Columns schema 1 lacked (added by the 1 -> 2 migration, with their defaults).
_V2_COLUMNS: Final = (
    "alarm",
    "above_warning",
    "above_alarm",
    "below_ok",
    "below_warning",
    "steps",
    "touched",
)

UPSERT: Final = (
    "INSERT OR REPLACE INTO states (sensor, h, shape, model, last_seq, last_ts_ns, alarm, above_warning,"
    " above_alarm, below_ok, below_warning, steps, touched, baseline, run_lo_ts_ns, run_hi_ts_ns,"
    " run_zero_ts_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT: Final = (
    "SELECT sensor, h, shape, model, last_seq, last_ts_ns, alarm, above_warning, above_alarm,"
    " below_ok, below_warning, steps, baseline, run_lo_ts_ns, run_hi_ts_ns, run_zero_ts_ns"
    " FROM states ORDER BY touched, rowid"
)


# ------------------------------------------------------------------------------------ table rows


def row_params(states: Mapping[str, SensorState], touched: int) -> list[tuple[Any, ...]]:
    """Parameters of `UPSERT` for `states`, all with the same `touched` (ties keep insertion order)."""
    out = []
    for key, s in states.items():
        if s.h is None:
            blob, shape = b"", "[]"
        else:
            h = np.asarray(s.h)
            blob, shape = np.ascontiguousarray(h, dtype="<f4").tobytes(), json.dumps(list(h.shape))
        c = (int(s.above[0]), int(s.above[1]), int(s.below[0]), int(s.below[1]))
        out.append(
            (
                key,
                blob,
                shape,
                s.model,
                int(s.last_seq),
                int(s.last_ts_ns),
                int(s.alarm),
                *c,
                int(s.steps),
                touched,
                b"" if s.baseline is None else np.ascontiguousarray(s.baseline, dtype="<f8").tobytes(),
                *((None, None, None) if s.run is None else s.run),
            )
        )
    return out


def read_rows(
    conn: sqlite3.Connection, skipped: list[str] | None = None
) -> Iterator[tuple[str, SensorState]]:
    """The saved states, least recently used first. A row that cannot be a sensor's state (a bad blob,
    shape, number or count) is skipped, its sensor id appended to `skipped`; the others resume."""
    for row in conn.execute(_SELECT):
        try:
            yield row[0], _state_of(row)
        except (ValueError, TypeError, OverflowError) as exc:
            log.warning("state_row_skipped", sensor=str(row[0])[:200], reason=str(exc)[:200])
            if skipped is not None:
                skipped.append(str(row[0]))


def _state_of(row: tuple[Any, ...]) -> SensorState:
    """One row of the states table as a SensorState (ValueError when it is not a possible one)."""
    sensor, blob, shape, model, last_seq, last_ts, alarm, aw, aa, bo, bw, steps, base_blob, *run = row
    if not isinstance(sensor, str) or not isinstance(model, str):
        raise ValueError("sensor or model is not text")
    ints = (last_seq, last_ts, alarm, aw, aa, bo, bw, steps)
    if not all(isinstance(v, int) for v in ints):
        raise ValueError("a number column holds something else")
    if not 0 <= last_seq < 1 << 32 or alarm not in (0, 1, 2) or min(aw, aa, bo, bw, steps) < 0:
        raise ValueError("impossible seq, alarm state or counters")
    h = None
    if blob:
        dims = json.loads(shape)
        if (
            not isinstance(dims, list)
            or len(dims) != 2
            or not all(isinstance(d, int) and d > 0 for d in dims)
        ):
            raise ValueError(f"bad state shape {shape!r:.40}")
        h = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(dims)
        if not np.isfinite(h).all():
            raise ValueError("non-finite hidden state")
    baseline = None
    if base_blob:  # the sensor's healthy baseline (edge_agent.baseline), float64
        if not isinstance(base_blob, bytes) or len(base_blob) % 8:
            raise ValueError("bad baseline blob")
        baseline = np.frombuffer(base_blob, dtype="<f8").astype(np.float64)
        if not np.isfinite(baseline).all():
            raise ValueError("non-finite baseline")
    return SensorState(
        h,
        model,
        last_seq,
        last_ts,
        alarm=alarm,
        above=(aw, aa),
        below=(bo, bw),
        steps=steps,
        baseline=baseline,
        run=_run_of(run, last_ts),
    )


def _run_of(cols: list[Any], last_ts: int) -> Run | None:
    """The run columns as a `Run` (None when not saved: a row an older agent wrote)."""
    lo, hi, zero = cols
    if lo is None:
        return None
    if not all(isinstance(v, int) for v in (lo, hi)) or not (zero is None or isinstance(zero, int)):
        raise ValueError("a run column holds something else")
    if not lo <= min(last_ts, hi) or hi < last_ts:
        raise ValueError("impossible run: its earliest timestamp after its latest")
    return Run(lo, hi, zero)


def add_columns(conn: sqlite3.Connection) -> None:
    """Stores written before a column of `_ADDED_COLUMNS` gain it (NULL or empty: none); idempotent."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(states)")}
    for name, sql_type in _ADDED_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE states ADD COLUMN {name} {sql_type}")


def migrate_1_to_2(conn: sqlite3.Connection, schema_version: int) -> None:
    """Schema 1 -> 2: the states table gains alarm counters, steps and `touched` (one transaction)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(states)")}
    conn.execute("BEGIN IMMEDIATE")
    try:
        for col in _V2_COLUMNS:
            if col not in have:
                conn.execute(f"ALTER TABLE states ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(schema_version),))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# ------------------------------------------------------------------------------ scorer <-> table


def batch_states(
    scorer: Scorer, last: Mapping[str, tuple[int, int]], tracker: SequenceTracker | None = None
) -> dict[str, SensorState]:
    """The state of these sensors as the scorer holds it now (`last`: sensor -> (seq, ts_ns)), with
    each one's run from `tracker` where its last window is that (seq, ts_ns)."""
    table = scorer.table
    data = table.data
    model = scorer.model_version
    out: dict[str, SensorState] = {}
    for key, (seq, ts) in last.items():
        run = None if tracker is None else tracker.run(key, seq, ts)
        if key not in table:
            out[key] = SensorState(h=None, model=model, last_seq=seq, last_ts_ns=ts, run=run)
            continue
        r = table.row(key)
        above, below = data["above"][r].tolist(), data["below"][r].tolist()
        out[key] = SensorState(
            data["h"][r], model, seq, ts, int(data["alarm"][r]), (above[0], above[1]), (below[0], below[1]),
            int(data["steps"][r]), data["baseline"][r].copy() if table.baseline_width else None, run,
        )  # fmt: skip
    return out


def all_states(scorer: Scorer, tracker: SequenceTracker) -> dict[str, SensorState]:
    """Every tracked sensor, least recently used first (the tracker's order; scorer-only ones first)."""
    cols = scorer.export_states()
    last = tracker.export()
    index = {k: i for i, k in enumerate(cols.sensors)}
    keys = [k for k in cols.sensors if k not in last] + list(last)
    out: dict[str, SensorState] = {}
    for key in keys:
        seq, ts = last.get(key, (0, 0))
        i = index.get(key)
        run = tracker.run(key, seq, ts)
        out[key] = (
            SensorState(h=None, model=cols.model_version, last_seq=seq, last_ts_ns=ts, run=run)
            if i is None
            else cols.row(i, last_seq=seq, last_ts_ns=ts, run=run)
        )
    return out


#: Sensors composed and written per step of `save_all` (memory stays flat however many are tracked).
SAVE_CHUNK: Final = 4096


def chunk_params(
    states: Mapping[str, SensorState] | Iterable[Mapping[str, SensorState]],
    to_params: Callable[[Mapping[str, SensorState]], list[tuple[Any, ...]]],
) -> Iterable[tuple[Any, ...]]:
    """`UPSERT` parameters of `states`, or of each chunk in turn, lazily (for `Store.save_states`)."""
    if isinstance(states, Mapping):
        return to_params(states)
    return itertools.chain.from_iterable(to_params(chunk) for chunk in states)


def state_chunks(
    scorer: Scorer, tracker: SequenceTracker, size: int = SAVE_CHUNK
) -> Iterator[dict[str, SensorState]]:
    """`all_states` in dicts of at most `size` sensors, same order and values, built one at a time
    (all at once, 100,000 sensors cost about 110 MB of transient memory that RSS keeps)."""
    last = tracker.export()
    keys = [k for k in scorer.table.ids() if k not in last] + list(last)
    for start in range(0, len(keys), size):
        yield batch_states(scorer, {k: last.get(k, (0, 0)) for k in keys[start : start + size]}, tracker)


def save_all(store: Store, scorer: Scorer, tracker: SequenceTracker) -> None:
    """Rewrite the states table from memory: drops sensors no longer tracked (a compaction).
    One transaction, written `SAVE_CHUNK` sensors at a time."""
    store.save_states(state_chunks(scorer, tracker))


def restore(
    store: Store, scorer: Scorer, tracker: SequenceTracker, metrics: AgentMetrics | None = None
) -> set[str]:
    """Resume from the states table (or, once, from an older agent's snapshot blob).

    Returns the sensors whose saved hidden state belongs to a model of another shape: their next
    window starts afresh and says `state_reset: "model"`. Unreadable rows are skipped (logged,
    counted in `metrics.states_skipped`); every other sensor resumes.
    """
    if isinstance(store.get_meta(STATES_META_KEY), bytes):
        reset = _restore_snapshot(store, scorer, tracker)
        save_all(store, scorer, tracker)  # into the table, then the old snapshot goes
        store.delete_meta(STATES_META_KEY)
        return reset
    skipped: list[str] = []
    saved = dict(read_rows(store.connection(), skipped))
    if skipped:
        log.warning("states_skipped", count=len(skipped), resumed=len(saved), first=skipped[:5])
        if metrics is not None:
            metrics.states_skipped.inc(len(skipped))
    if not saved:
        return set()
    shape = tuple(scorer.state_shape)
    try:
        tracker.restore(
            {k: (s.last_seq, s.last_ts_ns) for k, s in saved.items()},
            {k: s.run for k, s in saved.items() if s.run is not None},
        )
        with_h = {k: s for k, s in saved.items() if s.h is not None and tuple(s.h.shape) == shape}
        # Hidden states of another shape belong to a model swapped out with its states reset.
        other = {k for k, s in saved.items() if s.h is not None and tuple(s.h.shape) != shape}
        if other:
            log.warning(
                "states_not_restored",
                reason="state shape changed",
                sensors=len(other),
                model=scorer.model_version,
            )
        n = scorer.import_states(StateColumns.of(scorer.model_version, scorer.state_shape, with_h))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("states_not_restored", reason=str(exc))
        tracker.restore({})
        return set()
    log.info("states_restored", sensors=n, tracked=len(saved), model=scorer.model_version)
    return other


def reload(store: Store, scorer: Scorer, tracker: SequenceTracker, keys: Iterable[str]) -> None:
    """Put these sensors back to what the store holds (after a batch whose commit failed); when even
    the store cannot be read, forget them (their next window starts afresh)."""
    want = set(keys)
    try:
        saved = {k: st for k, st in read_rows(store.connection()) if k in want}
    except Exception:
        log.exception("states_not_reloaded", sensors=len(want))
        saved = {}
    for key in want:
        st = saved.get(key)
        if st is None:
            scorer.forget(key)
            tracker.forget(key)
            continue
        tracker.put(key, st.last_seq, st.last_ts_ns, st.run)
        if st.h is not None and tuple(st.h.shape) == tuple(scorer.state_shape):
            scorer.table.put(key, st)
        else:
            scorer.forget(key)  # the memory's baseline may hold the uncommitted windows: relearn it


def _restore_snapshot(store: Store, scorer: Scorer, tracker: SequenceTracker) -> set[str]:
    """The whole-store snapshot blob older agents saved in meta (schema 1)."""
    blob = store.get_meta(STATES_META_KEY)
    assert isinstance(blob, bytes)
    try:
        snap = states_from_bytes(blob)
        keys = [str(k) for k in snap.get("tracker_keys", [])]
        seqs = np.asarray(snap.get("tracker_seq", np.zeros(0, np.int64))).tolist()
        tss = np.asarray(snap.get("tracker_ts", np.zeros(0, np.int64))).tolist()
        tracker.restore(dict(zip(keys, zip(seqs, tss, strict=True), strict=True)))
        cols = StateColumns.from_dict(snap)
        if cols.model_version != scorer.model_version:
            if list(cols.state_shape) != list(scorer.state_shape):
                log.warning(
                    "states_not_restored",
                    reason="state shape changed",
                    saved_model=cols.model_version,
                    model=scorer.model_version,
                )
                return set(keys)
            cols = cols.with_model(scorer.model_version)
        n = scorer.import_states(cols)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("states_not_restored", reason=str(exc))
        tracker.restore({})
        return set()
    log.info("states_restored", sensors=n, model=scorer.model_version, source="snapshot")
    return set()
