"""`save_all` writes the states table chunk by chunk: the same rows, in the same order, as all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_agent import saved_states
from edge_agent.sequencing import SequenceTracker
from edge_agent.states import StateColumns, StateTable
from edge_agent.store import Store


class _Scorer:
    """What saved_states reads of a Scorer: its table and model version."""

    def __init__(self, table: StateTable) -> None:
        self.table = table
        self.model_version = "v7"

    def export_states(self) -> StateColumns:
        return self.table.export(self.model_version)


def _rows(store: Store) -> list[tuple[Any, ...]]:
    """Every column but `touched` (a counter), in the table's least-recently-used order."""
    cur = store.connection().execute("SELECT * FROM states ORDER BY touched, rowid")
    names = [d[0] for d in cur.description]
    return [tuple(v for n, v in zip(names, row, strict=True) if n != "touched") for row in cur]


def test_chunked_save_all_writes_exactly_what_all_states_holds(tmp_path: Path) -> None:
    table = StateTable((1, 4), capacity=100)
    tracker = SequenceTracker(gap_reset_s=600.0, max_sensors=100)
    keys = [f"m{i}/s0" for i in range(23)]
    for i in range(0, 20, 3):
        table.rows_for(keys[i : i + 3])  # sensors 0..20 have a hidden state, in LRU groups
    rng = np.random.default_rng(0)
    table.data["h"][:] = rng.standard_normal(table.data["h"].shape).astype(np.float32)
    table.data["alarm"][:] = rng.integers(0, 3, len(table.data))
    table.data["steps"][:] = rng.integers(0, 99, len(table.data))
    for k in keys[5:]:  # sensors 0..4 are known to the scorer only, 21..22 to the tracker only
        tracker.check(k, 3, 1_700_000_000_000_000_000)
    scorer: Any = _Scorer(table)
    with (
        Store.open(tmp_path / "whole.db", budget_bytes=2**30) as whole,
        Store.open(tmp_path / "chunked.db", budget_bytes=2**30) as chunked,
    ):
        whole.save_states(saved_states.all_states(scorer, tracker))
        chunked.save_states(saved_states.state_chunks(scorer, tracker, size=4))
        assert len(_rows(whole)) == 23
        assert _rows(chunked) == _rows(whole)
        assert list(chunked.load_states()) == list(saved_states.all_states(scorer, tracker))
