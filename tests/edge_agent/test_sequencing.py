"""Per-sensor sequence tracking: duplicates, stale windows, gaps, sensor restarts, wrap-around, bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sequencing import Accepted, SequenceTracker, Verdict, seq_newer, split_at_resets

S = 10**9  # ns per second


def test_duplicates_and_stale_windows_are_dropped_in_order() -> None:
    t = SequenceTracker(gap_reset_s=100.0, max_sensors=10)
    outcomes = [t.check("m/s0", seq, seq * 10 * S).outcome for seq in (5, 6, 6, 4, 7, 5, 8)]
    assert outcomes == ["new", "ok", "duplicate", "stale", "ok", "stale", "ok"]
    assert t.last("m/s0") == (8, 80 * S)
    assert Verdict("duplicate").accept is False
    assert Verdict("ok").accept is True
    assert Verdict("new").reset
    assert Verdict("gap").reset
    assert not Verdict("ok").reset


def test_sensors_do_not_influence_each_other() -> None:
    t = SequenceTracker(gap_reset_s=100.0, max_sensors=10)
    assert t.check("a/s", 10, 10 * S).outcome == "new"
    assert t.check("b/s", 3, 3 * S).outcome == "new"
    assert t.check("b/s", 4, 4 * S).outcome == "ok"
    assert t.check("a/s", 10, 10 * S).outcome == "duplicate"


def test_a_long_silence_resets_and_says_how_long() -> None:
    t = SequenceTracker(gap_reset_s=60.0, max_sensors=10)
    t.check("m/s", 1, 0)
    short = t.check("m/s", 2, 60 * S)  # exactly the limit: not longer than it
    assert short.outcome == "ok"
    long = t.check("m/s", 3, 60 * S + 61 * S)
    assert long.outcome == "gap"
    assert long.gap_s == 61.0
    assert long.reset


def test_a_sensor_restart_counts_again_from_zero() -> None:
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    t.check("m/s", 500, 500 * S)
    v = t.check("m/s", 0, 501 * S)  # older seq but a later timestamp: the sensor rebooted
    assert v.outcome == "restart"
    assert v.accept
    assert v.reset
    assert t.check("m/s", 1, 502 * S).outcome == "ok"


def test_sequence_numbers_wrap_around() -> None:
    top = 2**32 - 1
    assert seq_newer(0, top)
    assert seq_newer(5, top - 3)
    assert not seq_newer(top, 0)
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    t.check("m/s", top, 1 * S)
    assert t.check("m/s", 0, 2 * S).outcome == "ok"
    assert t.check("m/s", top, 1 * S).outcome == "stale"


def test_tracked_sensors_are_bounded_least_recent_first() -> None:
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=3)
    for i in range(3):
        t.check(f"m/s{i}", 1, S)
    t.check("m/s0", 2, 2 * S)  # s0 is now the most recent
    t.check("m/s3", 1, S)  # evicts s1
    assert len(t) == 3
    assert "m/s1" not in t
    assert "m/s0" in t
    assert t.evicted_total == 1
    assert t.check("m/s1", 1, S).outcome == "new"


def test_export_and_restore_round_trip() -> None:
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=5)
    for i in range(4):
        t.check(f"m/s{i}", 10 + i, (10 + i) * S)
    u = SequenceTracker(gap_reset_s=600.0, max_sensors=2)
    u.restore(t.export())
    assert len(u) == 2
    assert u.last("m/s3") == (13, 13 * S)
    assert "m/s0" not in u
    assert u.check("m/s3", 13, 13 * S).outcome == "duplicate"


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40)), max_size=80))
def test_accepted_windows_strictly_increase_per_sensor(events: list[tuple[int, int]]) -> None:
    """Whatever the arrival order, the accepted seqs of a sensor increase unless it reset (restart)."""
    t = SequenceTracker(gap_reset_s=1e6, max_sensors=100)
    last: dict[str, int] = {}
    for sensor, seq in events:
        key = f"m/s{sensor}"
        v = t.check(key, seq, seq * S)  # timestamps follow seqs: nothing is a restart
        assert v.outcome != "restart"
        if v.accept:
            assert key not in last or seq > last[key]
            last[key] = seq
        else:
            assert seq <= last[key]


def test_a_reset_of_a_sensor_already_in_the_batch_starts_a_new_chunk() -> None:
    class _Item:
        def __init__(self, key: str) -> None:
            self.key = key

    def p(key: str, outcome: str) -> Accepted[_Item]:
        return Accepted(_Item(key), Verdict(outcome))  # type: ignore[arg-type]

    batch = [p("a", "ok"), p("b", "new"), p("a", "gap"), p("b", "ok"), p("c", "new")]
    chunks = split_at_resets(batch)
    assert [[x.item.key for x in c] for c in chunks] == [["a", "b"], ["a", "b", "c"]]


def test_a_seq_jump_counts_the_windows_that_never_came() -> None:
    t = SequenceTracker(gap_reset_s=60.0, max_sensors=4)
    assert t.check("m/s", 0, 0).missed == 0  # new
    assert t.check("m/s", 1, 10**9).missed == 0
    v = t.check("m/s", 5, 2 * 10**9)
    assert (v.outcome, v.missed) == ("ok", 3)
    assert t.check("m/s", 5, 2 * 10**9).missed == 0  # duplicate
    assert t.check("m/s", 4, 0).outcome == "stale"
    w = SequenceTracker(gap_reset_s=60.0, max_sensors=4)
    w.check("m/w", 2**32 - 2, 0)
    assert w.check("m/w", 1, 10**9).missed == 2  # 2**32 - 1 and 0 never came (u32 wrap)
    g = w.check("m/w", 4, 10**12)  # a long silence: reset, and the jump still counted
    assert (g.outcome, g.missed) == ("gap", 2)
    assert w.check("m/w", 0, 2 * 10**12).missed == 0  # restart: seq counts from 0 again
