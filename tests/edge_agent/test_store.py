"""The agent's SQLite store: batches, outbox order, states, disk budget, export, crash safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_agent.store import (
    EXPORT_FORMAT,
    PRIORITY_ALERT,
    PRIORITY_HEALTH,
    OutboxMessage,
    SensorState,
    Store,
    StoreError,
    Transition,
    WindowRow,
)

REPO = Path(__file__).resolve().parents[2]
F = 8


def _row(sensor: str, seq: int, *, raw: int = 0, score: float = 0.1, state: str = "ok") -> WindowRow:
    rng = np.random.default_rng(seq)
    return WindowRow(
        sensor=sensor,
        seq=seq,
        ts_ns=1_700_000_000_000_000_000 + seq * 10**9,
        features=rng.standard_normal(F).astype(np.float32),
        score=score,
        state=state,
        model="v1",
        fs=25600.0,
        rpm=1800.0,
        raw=rng.standard_normal(raw).astype(np.float32) if raw else None,
    )


def test_open_uses_wal_and_refuses_foreign_files(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db", budget_bytes=10**7) as st:
        assert st.counts()["windows"] == 0
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite store"):
        Store.open(junk, budget_bytes=10**7)


def test_record_batch_roundtrips_through_export(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "s.db", budget_bytes=10**8)
    st.set_meta("agent_id", "gw1")
    rows = [_row("m1/s0", i, raw=64 if i % 3 == 0 else 0) for i in range(10)] + [
        _row("m2/s1", i) for i in range(4)
    ]
    tr = Transition("m1/s0", 6, rows[6].ts_ns, "ok", "warning", 0.7, "v1", "score above warning")
    ids = st.record_batch(rows, transitions=[tr], outbox=[OutboxMessage("t/h", b"x")])
    assert len(ids) == 1
    assert st.counts() == {"windows": 14, "raw_windows": 4, "transitions": 1, "outbox": 1, "states": 0}
    assert st.transitions("m1/s0") == [tr]
    summary = st.export_runs(tmp_path / "export")
    st.close()
    assert summary.windows == 14
    assert summary.raw_windows == 4
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["format"] == EXPORT_FORMAT
    assert manifest["agent_id"] == "gw1"
    assert manifest["transitions"][0]["state"] == "warning"
    by_file = {e["file"]: e for e in manifest["files"]}
    assert set(by_file) == {"m1__s0.npz", "m2__s1.npz"}
    assert by_file["m1__s0.npz"]["windows"] == 10
    with np.load(tmp_path / "export" / "m1__s0.npz", allow_pickle=False) as z:
        assert z["seq"].tolist() == list(range(10))
        np.testing.assert_array_equal(z["features"], np.stack([r.features for r in rows[:10]]))
        assert z["features"].dtype == np.float32
        assert z["state"].tolist() == ["ok"] * 10
        assert z["ts_ns"].tolist() == [r.ts_ns for r in rows[:10]]
        assert z["raw_rows"].tolist() == [0, 3, 6, 9]
        off = z["raw_offsets"]
        for j, i in enumerate(z["raw_rows"]):
            raw = rows[int(i)].raw
            assert raw is not None
            np.testing.assert_array_equal(z["raw_samples"][off[j] : off[j + 1]], raw)


def test_outbox_alerts_first_then_insertion_order(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "o.db", budget_bytes=10**7)
    msgs = [
        OutboxMessage("h/1", b"1", priority=PRIORITY_HEALTH),
        OutboxMessage("a/1", b"2", priority=PRIORITY_ALERT, retain=True),
        OutboxMessage("h/2", b"3", priority=PRIORITY_HEALTH),
        OutboxMessage("a/2", b"4", priority=PRIORITY_ALERT, retain=True),
    ]
    ids = st.enqueue_outbox(msgs)
    pending = st.outbox_pending(10)
    assert [p.topic for p in pending] == ["a/1", "a/2", "h/1", "h/2"]
    assert pending[0].retain is True
    assert pending[2].retain is False
    assert [p.topic for p in st.outbox_pending(10, exclude=[ids[1]])] == ["a/2", "h/1", "h/2"]
    assert [p.topic for p in st.outbox_pending(2)] == ["a/1", "a/2"]
    assert st.mark_sent([ids[1], ids[0], 9999]) == 2
    assert [p.payload for p in st.outbox_pending(10)] == [b"4", b"3"]
    st.close()
    with Store.open(tmp_path / "o.db", budget_bytes=10**7) as again:
        assert again.outbox_count() == 2


def test_states_saved_as_a_whole(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "st.db", budget_bytes=10**7)
    h = np.arange(2 * 5, dtype=np.float32).reshape(2, 5)
    st.save_states({"m/a": SensorState(h, "v1", 7, 123), "m/b": SensorState(h + 1, "v1", 9, 456)})
    st.save_states({"m/b": SensorState(h * 2, "v2", 10, 789)})
    st.close()
    with Store.open(tmp_path / "st.db", budget_bytes=10**7) as again:
        loaded = again.load_states()
    assert set(loaded) == {"m/b"}  # the whole table was replaced
    np.testing.assert_array_equal(loaded["m/b"].h, h * 2)
    assert loaded["m/b"].h.dtype == np.float32
    assert (loaded["m/b"].model, loaded["m/b"].last_seq, loaded["m/b"].last_ts_ns) == ("v2", 10, 789)


def test_budget_evicts_raw_then_rows_then_alarm_neighbours(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "b.db", budget_bytes=1_200_000)
    out_ids = st.enqueue_outbox([OutboxMessage("a/x", b"alert", priority=PRIORITY_ALERT)])
    # 800 windows; 320 with 1,024 raw samples (4 KiB each): ~1.3 MB of raw samples.
    st.record_batch([_row("m/s", i, raw=1024 if i % 5 == 0 else 0) for i in range(600)])
    # An alarm at seq 100: windows 68..132 are alarm-adjacent (13 of them hold raw samples).
    st.record_batch(
        [_row("m/s", 600 + i, raw=1024) for i in range(200)],
        transitions=[Transition("m/s", 100, 0, "warning", "alarm", 0.95, "v1")],
    )
    assert st.size_bytes() > st.budget_bytes

    # Step 1: dropping raw samples of ordinary windows, oldest first, is enough.
    ev = st.enforce_budget()
    assert ev.raw_dropped > 0
    assert (ev.windows_dropped, ev.alarm_raw_dropped, ev.outbox_dropped) == (0, 0, 0)
    assert st.size_bytes() <= st.budget_bytes, (st.size_bytes(), ev)
    assert st.counts()["windows"] == 800
    assert not st.enforce_budget().any  # under budget: nothing to do

    # Step 2: a smaller budget takes every ordinary raw sample and then the oldest ordinary rows.
    st.budget_bytes = 250_000
    ev = st.enforce_budget()
    assert ev.windows_dropped > 0
    assert ev.alarm_raw_dropped == 0
    assert st.size_bytes() <= st.budget_bytes
    seqs = st.window_seqs("m/s")
    assert set(range(68, 133)) <= set(seqs)  # the alarm's neighbours stay
    assert 799 in seqs  # the newest stay
    assert 0 not in seqs
    assert 133 not in seqs
    assert st.counts()["raw_windows"] == 13  # only the alarm-adjacent raw samples are left

    # Step 3: smaller still: ordinary rows are all gone, then the alarm neighbours' raw samples.
    st.budget_bytes = 100_000
    ev = st.enforce_budget()
    assert ev.alarm_raw_dropped > 0
    assert st.window_seqs("m/s") == list(range(68, 133))
    assert ev.outbox_dropped == 0
    assert [p.id for p in st.outbox_pending()] == out_ids  # unsent messages are never evicted early
    assert len(st.transitions()) == 1
    assert st.size_bytes() <= st.budget_bytes
    st.close()


def test_budget_evicts_outbox_last_and_counts_it(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "ob.db", budget_bytes=256 * 1024)
    st.record_batch([_row("m/s", i) for i in range(50)])
    st.enqueue_outbox([OutboxMessage("a/x", b"A" * 2000, priority=PRIORITY_ALERT)])
    st.enqueue_outbox([OutboxMessage(f"h/{i}", b"H" * 2000) for i in range(400)])
    ev = st.enforce_budget()
    assert ev.windows_dropped + ev.alarm_windows_dropped == 50  # everything else went first
    assert ev.outbox_dropped > 0
    assert st.get_meta("outbox_evicted_total") == str(ev.outbox_dropped)
    pending = st.outbox_pending(1000)
    assert pending[0].topic == "a/x"  # health goes before alerts
    assert st.size_bytes() <= 256 * 1024
    st.close()


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from edge_agent.store import Store, WindowRow, OutboxMessage
    st = Store.open(sys.argv[1], budget_bytes=10**9)
    b = 0
    while True:
        rows = [WindowRow("m/s", b * 10 + i, b, np.full(8, b, np.float32), 0.5, "ok", "v1",
                          raw=np.full(512, b, np.float32)) for i in range(10)]
        st.record_batch(rows, outbox=[OutboxMessage("t", str(b).encode())])
        print(b, flush=True)
        b += 1
    """
)


def test_committed_batches_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as proc:
        assert proc.stdout is not None
        last = -1
        try:
            for line in proc.stdout:
                last = int(line)
                if last >= 40:
                    break
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # mid-write: the writer never stops on its own
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert last >= 40
    assert (tmp_path / "crash.db-wal").exists()  # killed mid-flight, nothing checkpointed on close
    st = Store.open(db, budget_bytes=10**9)
    assert st._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = st.counts()
    batches = counts["outbox"]
    assert batches >= last + 1  # every batch reported committed is there (one more may be)
    assert counts["windows"] == 10 * batches  # and no batch is half there
    assert counts["raw_windows"] == counts["windows"]
    assert st.window_seqs("m/s") == list(range(10 * batches))
    st.close()


def test_record_batch_upserts_the_states_of_its_sensors_only(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "u.db", budget_bytes=10**7)
    h = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    st.save_states({"m/a": SensorState(h, "v1", 1, 10), "m/b": SensorState(h + 1, "v1", 2, 20)})
    st.record_batch(
        [_row("m/b", 3), _row("m/c", 1)],
        states={
            "m/b": SensorState(h * 3, "v1", 3, 30, alarm=2, above=(4, 2), below=(0, 0), steps=9),
            "m/c": SensorState(None, "v1", 1, 11),  # tracked by sequence only
        },
    )
    st.close()
    with Store.open(tmp_path / "u.db", budget_bytes=10**7) as again:
        loaded = again.load_states()
    assert list(loaded) == ["m/a", "m/b", "m/c"]  # least recently used first
    a, b, c = loaded["m/a"], loaded["m/b"], loaded["m/c"]
    assert a.h is not None
    np.testing.assert_array_equal(a.h, h)  # not in the batch: untouched
    assert (a.last_seq, a.alarm, a.steps) == (1, 0, 0)
    assert b.h is not None
    np.testing.assert_array_equal(b.h, h * 3)
    assert (b.last_seq, b.last_ts_ns, b.alarm, b.above, b.below, b.steps) == (3, 30, 2, (4, 2), (0, 0), 9)
    assert c.h is None
    assert (c.last_seq, c.last_ts_ns) == (1, 11)


def test_batch_states_roll_back_with_the_batch(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "r.db", budget_bytes=10**7)
    h = np.zeros((1, 2), np.float32)
    bad = WindowRow("m/a", 1, 1, np.zeros(2, np.float32), 0.1, "ok", "v1")
    with pytest.raises(TypeError):  # the outbox insert fails after the windows and states went in
        st.record_batch(
            [bad],
            states={"m/a": SensorState(h, "v1", 1, 1)},
            outbox=[OutboxMessage("t", None)],  # type: ignore[arg-type]
        )
    assert st.counts() == {"windows": 0, "raw_windows": 0, "transitions": 0, "outbox": 0, "states": 0}
    st.close()


def test_attach_raw_to_stored_windows(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "raw.db", budget_bytes=10**7)
    st.record_batch([_row("m/s", i) for i in range(3)])
    first = st.last_window_ids
    assert len(first) == 3
    st.record_batch([_row("m/s", 3, raw=16)], attach_raw=[(first[1], np.full(16, 7, np.float32))])
    assert list(st.last_window_ids) == [first[-1] + 1]
    assert st.attach_raw([(first[2], np.ones(4, np.float32)), (first[1], np.zeros(16, np.float32))]) == 1
    assert st.attach_raw([(10_000, np.ones(4, np.float32))]) == 0  # gone (evicted): ignored
    st.export_runs(tmp_path / "x")
    st.close()
    with np.load(tmp_path / "x" / "m__s.npz", allow_pickle=False) as z:
        assert z["raw_rows"].tolist() == [1, 2, 3]
        off = z["raw_offsets"]
        np.testing.assert_array_equal(z["raw_samples"][off[0] : off[1]], np.full(16, 7, np.float32))  # kept
        np.testing.assert_array_equal(z["raw_samples"][off[1] : off[2]], np.ones(4, np.float32))


def test_outbox_ids_are_those_of_the_rows(tmp_path: Path) -> None:
    st = Store.open(tmp_path / "ids.db", budget_bytes=10**7)
    st.enqueue_outbox([OutboxMessage("x", b"0")])
    st.mark_sent(st.enqueue_outbox([OutboxMessage("y", b"1")]))
    ids = st.record_batch(
        [_row("m/s", 1)], outbox=[OutboxMessage(f"t/{i}", str(i).encode()) for i in range(5)]
    )
    got = {p.id: p.topic for p in st.outbox_pending(100)}
    assert {i: got[i] for i in ids} == {i: f"t/{k}" for k, i in enumerate(ids)}
    st.close()


def test_outbox_ids_only_grow_even_when_the_outbox_empties_or_a_commit_fails(tmp_path: Path) -> None:
    """An id handed to the MQTT client before its commit (publish_before_commit) must never name
    another message: ids are never reused in a process, whatever was deleted or rolled back."""
    st = Store.open(tmp_path / "grow.db", budget_bytes=10**7)
    first = st.enqueue_outbox([OutboxMessage("a", b"0"), OutboxMessage("b", b"1")])
    st.mark_sent(first)  # the table is empty again: SQLite's rowid alone would start over at 1
    early = st.reserve_outbox_ids(2)
    assert early[0] > max(first)
    with pytest.raises(TypeError):  # this commit fails: its reserved ids are spent, not handed out again
        st.record_batch([], outbox=[OutboxMessage("c", None), OutboxMessage("d", b"")], outbox_ids=early)  # type: ignore[arg-type]
    later = st.reserve_outbox_ids(2)
    assert later[0] > max(early)
    stored = st.record_batch(
        [_row("m/s", 1)], outbox=[OutboxMessage("e", b"2"), OutboxMessage("f", b"3")], outbox_ids=later
    )
    assert stored == later
    assert [(p.id, p.topic) for p in st.outbox_pending(10)] == [(later[0], "e"), (later[1], "f")]
    with pytest.raises(ValueError, match="2 outbox messages but 1 ids"):
        st.record_batch([], outbox=[OutboxMessage("g", b""), OutboxMessage("h", b"")], outbox_ids=later[:1])
    st.close()
    reopened = Store.open(tmp_path / "grow.db", budget_bytes=10**7)
    assert reopened.enqueue_outbox([OutboxMessage("i", b"4")])[0] == later[1] + 1  # above what is stored
    reopened.close()


def test_a_store_without_the_run_columns_gains_them_and_its_rows_still_load(tmp_path: Path) -> None:
    """A states table as agents wrote it before the sequence tracker's run was saved: opened, it
    gains the run columns; its rows load with no run (the tracker then knows only the last
    timestamp); rows written now carry the run, and a run that cannot be is a skipped row."""
    from edge_agent.sequencing import Run

    db = tmp_path / "no-run.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB);"
        "INSERT INTO meta VALUES ('schema', '2');"
        "CREATE TABLE states (sensor TEXT PRIMARY KEY, h BLOB NOT NULL, shape TEXT NOT NULL,"
        " model TEXT NOT NULL, last_seq INTEGER NOT NULL, last_ts_ns INTEGER NOT NULL,"
        " alarm INTEGER NOT NULL DEFAULT 0, above_warning INTEGER NOT NULL DEFAULT 0,"
        " above_alarm INTEGER NOT NULL DEFAULT 0, below_ok INTEGER NOT NULL DEFAULT 0,"
        " below_warning INTEGER NOT NULL DEFAULT 0, steps INTEGER NOT NULL DEFAULT 0,"
        " touched INTEGER NOT NULL DEFAULT 0, baseline BLOB NOT NULL DEFAULT x'');"
    )
    conn.execute(
        "INSERT INTO states (sensor, h, shape, model, last_seq, last_ts_ns, steps)"
        " VALUES ('m/old', ?, '[1, 2]', 'v1', 5, 50, 5)",
        (np.ones(2, "<f4").tobytes(),),
    )
    conn.commit()
    conn.close()
    h = np.zeros((1, 2), np.float32)
    with Store.open(db, budget_bytes=10**7) as st:
        old = st.load_states()["m/old"]
        assert (old.last_seq, old.last_ts_ns, old.steps, old.run) == (5, 50, 5, None)
        st.save_states(
            {
                "m/new": SensorState(h, "v1", 7, 70, run=Run(10, 80, 10)),
                "m/nozero": SensorState(None, "v1", 3, 30, run=Run(20, 30, None)),
                "m/bad": SensorState(h, "v1", 3, 30, run=Run(40, 35, None)),  # earliest after latest
            }
        )
    with Store.open(db, budget_bytes=10**7) as st:  # a second open: the migration is idempotent
        loaded = st.load_states()
    assert (loaded["m/new"].run, loaded["m/nozero"].run) == (Run(10, 80, 10), Run(20, 30, None))
    assert "m/bad" not in loaded


def test_schema_1_store_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE states (sensor TEXT PRIMARY KEY, h BLOB NOT NULL, shape TEXT NOT NULL,"
        " model TEXT NOT NULL, last_seq INTEGER NOT NULL, last_ts_ns INTEGER NOT NULL);"
    )
    conn.execute(
        "INSERT INTO states VALUES ('m/a', ?, '[1, 2]', 'v1', 5, 50)", (np.ones(2, "<f4").tobytes(),)
    )
    conn.commit()
    conn.close()
    with Store.open(db, budget_bytes=10**7) as st:
        assert st.get_meta("schema") == "2"
        loaded = st.load_states()
        assert (loaded["m/a"].last_seq, loaded["m/a"].alarm, loaded["m/a"].steps) == (5, 0, 0)
        st.record_batch(
            [_row("m/a", 6)], states={"m/a": SensorState(np.zeros((1, 2), np.float32), "v1", 6, 60)}
        )
        assert st.load_states()["m/a"].last_seq == 6
