"""The per-sensor state table and its typed records (edge_agent.states)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_agent.states import SensorState, StateColumns, StateTable, states_from_bytes, states_to_bytes


def test_table_keeps_recency_order_through_export_and_restore() -> None:
    table = StateTable((1, 2), capacity=4)
    table.rows_for(["a", "b"])
    table.rows_for(["c"])
    table.rows_for(["a"])
    assert table.ids() == ["b", "c", "a"]
    exported = table.export("v1")
    assert exported.sensors == ["b", "c", "a"]
    assert exported.model_version == "v1"
    small = StateTable((1, 2), capacity=2)
    small.restore(exported)  # more than fit: the most recently used are kept
    assert small.ids() == ["c", "a"]
    small.rows_for(["d"])  # evicts c, the least recently used
    assert small.ids() == ["a", "d"]
    with pytest.raises(ValueError, match="distinct"):
        small.rows_for(["a", "a"])


def test_restore_rejects_bad_exports() -> None:
    table = StateTable((1, 2))
    table.rows_for(["a"])
    good = table.export("v")
    for name, value in [("alarm", np.array([7], np.int8)), ("h", np.full((1, 1, 2), np.nan, np.float32))]:
        bad = dataclasses.replace(good, **{name: value})
        with pytest.raises(ValueError, match="saved states"):
            StateTable((1, 2)).restore(bad)
    with pytest.raises(ValueError, match="shape"):
        StateTable((1, 3)).restore(good)
    with pytest.raises(ValueError, match="repeat"):
        StateTable((1, 2)).restore(
            dataclasses.replace(good, sensors=["a", "a"], h=np.zeros((2, 1, 2), np.float32))
        )
    with pytest.raises(ValueError, match="not a saved state file"):
        states_from_bytes(b"garbage")


def test_columns_round_trip_through_bytes_and_records() -> None:
    records = {
        "m/a": SensorState(
            np.ones((1, 2), np.float32), "v", 3, 30, alarm=1, above=(2, 0), below=(0, 1), steps=5
        ),
        "m/b": SensorState(np.full((1, 2), 2.0, np.float32), "v", 4, 40, alarm=2, above=(3, 3), steps=9),
    }
    cols = StateColumns.of("v", (1, 2), records)
    back = StateColumns.from_dict(states_from_bytes(states_to_bytes(cols.to_dict())))
    assert back.sensors == ["m/a", "m/b"]
    for i, (key, rec) in enumerate(records.items()):
        row = back.row(i, last_seq=rec.last_seq, last_ts_ns=rec.last_ts_ns)
        assert (row.alarm, row.above, row.below, row.steps) == (rec.alarm, rec.above, rec.below, rec.steps), (
            key
        )
        np.testing.assert_array_equal(row.h, rec.h)
    assert len(StateColumns.empty("v", (1, 2))) == 0
    assert back.with_model("w").model_version == "w"


def test_evict_idle_and_discard() -> None:
    now = [0.0]
    table = StateTable((1, 2), clock=lambda: now[0])
    table.rows_for(["a", "b"])
    now[0] = 10.0
    table.rows_for(["b"])
    assert table.evict_idle(5.0) == ["a"]
    assert table.discard("b")
    assert not table.discard("b")
    assert len(table) == 0
