"""The agent's local store: SQLite in WAL mode for collected windows, alarms, the outbox and hidden states.

One `Store` per process, used from one thread (the daemon loop). Every public write is one
transaction: what a call returned from survives a crash of the process (`synchronous=FULL`, the
default, also power loss; `NORMAL` may lose the last transactions to a power loss). The agent acks
a window to the broker only after the transaction holding its results committed.

Tables (schema version in `meta.schema`):

- ``windows``: one row per scored window: sensor key ``machine/sensor``, seq, sensor timestamp
  (ns), features (float32 blob), score, state, model version, sample rate, rpm and, for a sampled
  fraction, the raw samples (float32 blob; NULL otherwise).
- ``transitions``: alarm state changes (ok → warning → alarm and back).
- ``outbox``: messages for the broker not yet acknowledged by it; `outbox_pending` yields alerts
  before health, each in insertion order; `mark_sent` deletes them.
- ``states``: per-sensor hidden state (float32 blob + shape; empty when the sensor is tracked by
  sequence only), alarm state and hysteresis counters, steps, model version, last seq and ts, the
  sequence tracker's run since the last reset (NULL in rows older agents wrote), the healthy
  baseline, and `touched` (a counter: least recently used first). `record_batch(..., states=)` upserts the
  sensors of a batch in the batch's own transaction; `save_states` replaces the whole table.
- ``meta``: key → value (text or bytes) for small facts and blobs.

The disk budget (`enforce_budget`, docs/agent.md "Disk budget") evicts oldest first, unsent
outbox messages last. The retraining export lives in edge_agent.retraining_export.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge_agent import saved_states
from edge_agent.alarms import Transition
from edge_agent.errors import StoreError, store_error
from edge_agent.retraining_export import EXPORT_FORMAT, EXPORT_VERSION, ExportSummary, export_runs
from edge_agent.states import SensorState
from edge_agent.store_rows import (
    PRIORITY_ALERT,
    PRIORITY_HEALTH,
    PRIORITY_STATUS,
    Eviction,
    OutboxItem,
    OutboxMessage,
    WindowRow,
)

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "PRIORITY_ALERT",
    "PRIORITY_HEALTH",
    "PRIORITY_STATUS",
    "Eviction",
    "ExportSummary",
    "OutboxItem",
    "OutboxMessage",
    "SensorState",
    "Store",
    "StoreError",
    "Transition",
    "WindowRow",
]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,
    sensor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    n_features INTEGER NOT NULL,
    features BLOB NOT NULL,
    score REAL NOT NULL,
    state TEXT NOT NULL,
    model TEXT NOT NULL,
    fs REAL NOT NULL,
    rpm REAL NOT NULL,
    raw BLOB
);
CREATE INDEX IF NOT EXISTS windows_sensor ON windows (sensor, id);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    sensor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    previous_state TEXT NOT NULL,
    state TEXT NOT NULL,
    score REAL NOT NULL,
    model TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_sensor ON transitions (sensor, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, id);
"""


class Store:
    """The agent's SQLite store: `Store.open(path, budget_bytes=...)`, then close it. Windows within
    `alarm_margin` seqs of an alarm transition of their sensor are "alarm-adjacent", evicted last."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, budget_bytes: int, alarm_margin: int) -> None:
        self._conn = conn
        self.path = path
        self.budget_bytes = budget_bytes
        #: Bytes the store's budget also covers outside the database (the agent's unpacked bundles).
        self.extra_bytes = 0
        self.alarm_margin = alarm_margin
        #: Row ids of the windows stored by the last `record_batch`, in the order given.
        self.last_window_ids: range = range(0)
        self._touched = int(conn.execute("SELECT COALESCE(MAX(touched), 0) FROM states").fetchone()[0])
        # Outbox ids only grow in this process (never the rowid's max + 1 of a table emptied or
        # trimmed meanwhile): an id handed to the MQTT client before its commit (`reserve_outbox_ids`)
        # can never name another message when its acknowledgement comes.
        self._next_outbox_id = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0]) + 1

    # --- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        budget_bytes: int,
        alarm_margin: int = 32,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> Store:
        """Open (creating if needed) the store at `path` in WAL mode; raises StoreError if unusable.
        `synchronous="NORMAL"` skips the WAL's fsync (see the module doc); schema 1 is migrated in place."""
        if budget_bytes < 64 * 1024:
            raise ValueError("budget_bytes must be at least 64 KiB")
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create {path.parent} for the store: {exc}", reason="cannot_open"
            ) from exc
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise store_error(exc, f"cannot open store {path}") from exc
        try:
            fresh = conn.execute("PRAGMA page_count").fetchone()[0] == 0
            if fresh:
                # Must precede the first table: lets enforce_budget give freed pages back to the disk.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"store {path}: SQLite refused WAL mode (got {mode}); use a local disk", reason="no_wal"
                )
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            # WAL checkpointed at 1/16 of the budget (SQLite's 4 MB default alone exceeds a small one).
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, budget_bytes // page // 16)}")
            conn.execute(f"PRAGMA journal_size_limit = {budget_bytes // 16}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(_SCHEMA + saved_states.STATES_DDL)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) == 1:
                saved_states.migrate_1_to_2(conn, SCHEMA_VERSION)
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"store {path} has schema {row[0]}, this agent speaks {SCHEMA_VERSION}; "
                    "export it with the agent that wrote it, then move it aside",
                    reason="bad_schema",
                )
            saved_states.add_columns(conn)  # additive: older agents ignore the new columns
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(exc, f"store {path}") from exc
        except StoreError:
            conn.close()
            raise
        return cls(conn, path, budget_bytes=budget_bytes, alarm_margin=alarm_margin)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a sqlite3 error becomes a StoreError (reason disk_full, io, ...)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise store_error(exc, f"store {self.path}") from exc

    # --- writes ----------------------------------------------------------------------------------

    def record_batch(
        self,
        rows: Sequence[WindowRow],
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutboxMessage] = (),
        states: Mapping[str, SensorState] | None = None,
        attach_raw: Sequence[tuple[int, npt.ArrayLike]] = (),
        outbox_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Store one scoring batch (windows, transitions, messages, sensor states) in ONE transaction.

        `states` upserts those sensors' rows of the states table (the others are left alone), so the
        states on disk always match the windows on disk, whatever moment a crash picks.
        `attach_raw` gives raw samples to windows stored earlier, by window id (see `attach_raw`).
        Returns the outbox ids of `outbox`, in order (`outbox_ids` when given: ids from
        `reserve_outbox_ids`); the new windows' ids are in `last_window_ids`. After this returns the batch is durable and its windows may be acknowledged to the broker.
        """
        now = time.time_ns()
        win_params = [
            (
                r.sensor,
                int(r.seq),
                int(r.ts_ns),
                int(np.asarray(r.features).size),
                _f32_blob(r.features),
                float(r.score),
                r.state,
                r.model,
                float(r.fs),
                float(r.rpm),
                None if r.raw is None else _f32_blob(r.raw),
            )
            for r in rows
        ]
        state_params = self._state_params(states) if states else []
        raw_params = [(_f32_blob(raw), int(wid)) for wid, raw in attach_raw]
        with self._tx() as c:
            c.executemany(
                "INSERT INTO windows (sensor, seq, ts_ns, n_features, features, score, state, model, fs, rpm, raw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                win_params,
            )
            last = _last_rowid(c)
            if transitions:
                c.executemany(
                    "INSERT INTO transitions (sensor, seq, ts_ns, previous_state, state, score, model, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            t.sensor,
                            t.seq,
                            t.ts_ns,
                            t.previous_state,
                            t.state,
                            float(t.score),
                            t.model,
                            t.reason,
                        )
                        for t in transitions
                    ],
                )
            if state_params:
                c.executemany(saved_states.UPSERT, state_params)
            if raw_params:
                c.executemany(_ATTACH_RAW, raw_params)
            ids = self._insert_outbox(c, outbox, now, outbox_ids)
        self.last_window_ids = range(last - len(win_params) + 1, last + 1) if win_params else range(0)
        return ids

    def attach_raw(self, items: Sequence[tuple[int, npt.ArrayLike]]) -> int:
        """Give raw samples to windows already stored without them, by window id (`last_window_ids`).

        The daemon uses it for the windows just BEFORE an alarm transition, which it keeps in memory
        until it knows whether they matter. Windows evicted meanwhile, or already holding raw
        samples, are left alone. Returns how many windows got their samples. One transaction.
        """
        params = [(_f32_blob(raw), int(wid)) for wid, raw in items]
        if not params:
            return 0
        with self._tx() as c:
            before = c.total_changes
            c.executemany(_ATTACH_RAW, params)
            return c.total_changes - before

    def enqueue_outbox(self, msgs: Sequence[OutboxMessage]) -> list[int]:
        """Add messages to the outbox in one transaction; returns their ids."""
        with self._tx() as c:
            return self._insert_outbox(c, msgs, time.time_ns())

    def reserve_outbox_ids(self, n: int) -> list[int]:
        """Ids for `n` outbox messages not stored yet (give them to `record_batch(outbox_ids=...)`).
        A reserved id is never handed out again, whether or not its commit succeeds."""
        first = self._next_outbox_id
        self._next_outbox_id += n
        return list(range(first, first + n))

    def _insert_outbox(
        self, c: sqlite3.Connection, msgs: Sequence[OutboxMessage], now: int, ids: Sequence[int] | None = None
    ) -> list[int]:
        """Insert in one executemany with ids from `reserve_outbox_ids` (or `ids`, reserved earlier)."""
        if ids is None:
            ids = self.reserve_outbox_ids(len(msgs))
        elif len(ids) != len(msgs):
            raise ValueError(f"{len(msgs)} outbox messages but {len(ids)} ids")
        params = [
            (int(i), m.topic, bytes(m.payload), int(m.qos), int(bool(m.retain)), int(m.priority), now)
            for i, m in zip(ids, msgs, strict=True)
        ]
        if params:
            c.executemany(
                "INSERT INTO outbox (id, topic, payload, qos, retain, priority, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )
        return list(ids)

    def _state_params(self, states: Mapping[str, SensorState]) -> list[tuple[Any, ...]]:
        self._touched += 1
        return saved_states.row_params(states, self._touched)

    def outbox_pending(self, limit: int = 1000, *, exclude: Iterable[int] = ()) -> list[OutboxItem]:
        """Up to `limit` unsent messages: alerts first, then health, each in insertion order.

        `exclude` skips ids already handed to the MQTT client and not yet acknowledged.
        """
        skip = set(exclude)
        out: list[OutboxItem] = []
        cur = self._conn.execute(
            "SELECT id, topic, payload, qos, retain, priority FROM outbox ORDER BY priority, id"
        )
        for row in cur:
            if row[0] in skip:
                continue
            out.append(OutboxItem(row[0], row[1], bytes(row[2]), row[3], bool(row[4]), row[5]))
            if len(out) >= limit:
                break
        cur.close()
        return out

    def outbox_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def mark_sent(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages; returns how many were still there."""
        params = [(int(i),) for i in ids]
        if not params:
            return 0
        with self._tx() as c:
            before = c.total_changes
            c.executemany("DELETE FROM outbox WHERE id = ?", params)
            return c.total_changes - before

    def save_states(self, states: Mapping[str, SensorState] | Iterable[Mapping[str, SensorState]]) -> None:
        """Replace all saved states with `states` (LRU first; or chunks of them), in one transaction."""
        params = saved_states.chunk_params(states, self._state_params)
        with self._tx() as c:
            c.execute("DELETE FROM states")
            c.executemany(saved_states.UPSERT, params)

    def load_states(self) -> dict[str, SensorState]:
        """The saved states, least recently used first (empty on a fresh store)."""
        return dict(saved_states.read_rows(self._conn))  # unreadable rows skipped

    def set_meta(self, key: str, value: str | bytes) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def delete_meta(self, key: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM meta WHERE key = ?", (key,))

    # --- reads for tests, metrics and export -----------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Row counts per table plus windows that still hold raw samples."""
        c = self._conn
        return {
            "windows": int(c.execute("SELECT COUNT(*) FROM windows").fetchone()[0]),
            "raw_windows": int(c.execute("SELECT COUNT(*) FROM windows WHERE raw IS NOT NULL").fetchone()[0]),
            "transitions": int(c.execute("SELECT COUNT(*) FROM transitions").fetchone()[0]),
            "outbox": int(c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]),
            "states": int(c.execute("SELECT COUNT(*) FROM states").fetchone()[0]),
        }

    def transitions(self, sensor: str | None = None) -> list[Transition]:
        q = "SELECT sensor, seq, ts_ns, previous_state, state, score, model, reason FROM transitions"
        args: tuple[Any, ...] = ()
        if sensor is not None:
            q += " WHERE sensor = ?"
            args = (sensor,)
        return [Transition(*row) for row in self._conn.execute(q + " ORDER BY id", args)]

    def window_seqs(self, sensor: str) -> list[int]:
        """The seqs of the stored windows of `sensor`, oldest first."""
        return [
            r[0]
            for r in self._conn.execute("SELECT seq FROM windows WHERE sensor = ? ORDER BY id", (sensor,))
        ]

    # --- disk budget -----------------------------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        return sum(_size(self.path.with_name(self.path.name + x)) for x in ("", "-wal"))

    def counted_bytes(self) -> int:
        """What the budget counts: database, WAL, -shm and `extra_bytes` (the agent's unpacked bundles)."""
        shm = _size(self.path.with_name(self.path.name + "-shm"))
        return self.size_bytes() + shm + self.extra_bytes

    def over_budget(self, fraction: float = 1.0) -> bool:
        """`counted_bytes()` above `fraction` of the budget."""
        return self.counted_bytes() > fraction * self.budget_bytes

    def _used_bytes(self) -> int:
        c = self._conn
        page = int(c.execute("PRAGMA page_size").fetchone()[0])
        pages = int(c.execute("PRAGMA page_count").fetchone()[0])
        free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * page

    def enforce_budget(
        self, *, target_fraction: float = 0.9, trigger_fraction: float = 1.0, chunk: int | None = None
    ) -> Eviction:
        """Evict the oldest data until the store uses at most `target_fraction` of its budget.

        Runs only when over `trigger_fraction` of the budget (not on every call near the limit), then
        evicts down to the target. Order (oldest first within each step): raw samples of ordinary
        windows, ordinary window rows, raw samples of alarm-adjacent windows, alarm-adjacent rows,
        transitions, and last, unsent outbox messages (health before alerts; counted in
        `outbox_dropped` and meta key `outbox_evicted_total`). Freed pages go back to the disk.
        """
        report = Eviction(bytes_before=self.size_bytes())
        # Rows per eviction transaction (each goes through the WAL): few for a small budget.
        chunk = chunk or max(4, min(64, self.budget_bytes // (128 * 1024)))
        # The WAL counts against the budget: fold it into the main file first.
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        budget = self.budget_bytes - self.extra_bytes
        if self._used_bytes() <= trigger_fraction * budget and self.size_bytes() <= trigger_fraction * budget:
            report.bytes_after = self.size_bytes()
            return report
        target = int(budget * target_fraction)
        near = (
            "EXISTS (SELECT 1 FROM transitions t WHERE t.sensor = windows.sensor"
            " AND t.seq BETWEEN windows.seq - :m AND windows.seq + :m)"
        )
        steps: list[tuple[str, str]] = [
            (
                "raw_dropped",
                f"UPDATE windows SET raw = NULL WHERE id IN (SELECT id FROM windows WHERE raw IS NOT NULL"
                f" AND NOT {near} ORDER BY id LIMIT :n)",
            ),
            (
                "windows_dropped",
                f"DELETE FROM windows WHERE id IN (SELECT id FROM windows WHERE NOT {near} ORDER BY id LIMIT :n)",
            ),
            (
                "alarm_raw_dropped",
                "UPDATE windows SET raw = NULL WHERE id IN"
                " (SELECT id FROM windows WHERE raw IS NOT NULL ORDER BY id LIMIT :n)",
            ),
            (
                "alarm_windows_dropped",
                "DELETE FROM windows WHERE id IN (SELECT id FROM windows ORDER BY id LIMIT :n)",
            ),
            (
                "transitions_dropped",
                "DELETE FROM transitions WHERE id IN (SELECT id FROM transitions ORDER BY id LIMIT :n)",
            ),
            (
                "outbox_dropped",
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY priority DESC, id LIMIT :n)",
            ),
        ]
        for name, sql in steps:
            while self._used_bytes() > target:
                with self._tx() as c:
                    n = c.execute(sql, {"m": self.alarm_margin, "n": chunk}).rowcount
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL must not grow meanwhile
                if n <= 0:
                    break
                setattr(report, name, getattr(report, name) + n)
            if self._used_bytes() <= target:
                break
        if report.outbox_dropped:
            prev = self.get_meta("outbox_evicted_total")
            self.set_meta("outbox_evicted_total", str(int(prev or 0) + report.outbox_dropped))
        # Give freed pages back to the disk a few at a time, folding the WAL in after each step
        # (executescript steps the pragma to completion; execute() would free one page only).
        while int(self._conn.execute("PRAGMA freelist_count").fetchone()[0]) > 0:
            self._conn.executescript("PRAGMA incremental_vacuum(64);")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        report.bytes_after = self.size_bytes()
        return report

    # --- export ----------------------------------------------------------------------------------

    def export_runs(self, out_dir: Path | str) -> ExportSummary:
        """Write the collected data for retraining (edge_agent.retraining_export.export_runs)."""
        return export_runs(self, out_dir)

    def connection(self) -> sqlite3.Connection:
        """The SQLite connection, for readers in this thread (the retraining export)."""
        return self._conn


_ATTACH_RAW = "UPDATE windows SET raw = ? WHERE id = ? AND raw IS NULL"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _last_rowid(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT last_insert_rowid()").fetchone()[0])


def _f32_blob(a: npt.ArrayLike) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _text(v: str | bytes | None) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
