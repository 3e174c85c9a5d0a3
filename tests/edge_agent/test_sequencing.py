"""Per-sensor sequence tracking: duplicates, stale windows, gaps, sensor restarts, wrap-around, bounds."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sequencing import (
    REPLAY_WINDOW,
    Accepted,
    SequenceTracker,
    Verdict,
    seq_newer,
    split_at_resets,
)

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
    now = [0]
    t = SequenceTracker(gap_reset_s=60.0, max_sensors=10, clock=lambda: now[0])
    t.check("m/s", 1, 0)
    now[0] = 60 * S
    short = t.check("m/s", 2, 60 * S)  # exactly the limit: not longer than it
    assert short.outcome == "ok"
    now[0] = 121 * S  # the agent waited 61 s too
    long = t.check("m/s", 3, 60 * S + 61 * S)
    assert long.outcome == "gap"
    assert long.gap_s == 61.0
    assert long.reset


def test_a_clock_step_without_a_missed_window_does_not_reset() -> None:
    """NTP moved the sensor's clock an hour on; the agent heard it every 10 s and no seq is missing."""
    now = [0]
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10, clock=lambda: now[0])
    t.check("m/s", 1, 0)
    now[0] = 10 * S
    v = t.check("m/s", 2, 3600 * S)
    assert (v.outcome, v.gap_s, v.missed) == ("ok", 3600.0, 0)
    now[0] = 20 * S
    w = t.check("m/s", 5, 7300 * S)  # a step AND windows missed: a real silence of the sensor
    assert (w.outcome, w.missed) == ("gap", 2)


def test_the_first_window_after_an_agent_restart_trusts_the_sensor_clock() -> None:
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10, clock=lambda: 0)
    t.restore({"m/s": (7, 0)})
    assert t.check("m/s", 8, 3600 * S).outcome == "gap"  # how long the agent waited is unknown


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


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 40)), max_size=80))
def test_accepted_windows_strictly_increase_per_sensor(events: list[tuple[int, int]]) -> None:
    """Whatever the arrival order, the accepted seqs of a sensor increase unless it reset (restart).
    seq 0 is left out: a seq 0 the tracker did not see in the sensor's run marks a reboot."""
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


# ------------------------------------------------------- reboots, clock skew, replays (issue 14, point 7)


def test_a_sensor_a_day_fast_that_reboots_with_the_right_time_is_not_dropped() -> None:
    day = 86_400 * S
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    for k in range(200):  # the clock runs a day ahead
        assert t.check("m/s", k, day + k * 10 * S).accept
    outcomes = [t.check("m/s", k, 2000 * S + k * 10 * S).outcome for k in range(200)]
    assert outcomes == ["restart"] + ["ok"] * 199


def test_a_reboot_that_keeps_a_fast_clock_counts_from_zero_again() -> None:
    """seq 0 unlike the run's own seq 0 is a reboot, whatever the clock says."""
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    for k in range(50):
        t.check("m/s", k, 1000 * S + k * S)
    assert t.check("m/s", 0, 1000 * S).outcome == "stale"  # the run's own seq 0 again: a replay
    assert t.check("m/s", 0, 1020 * S).outcome == "restart"  # a new seq 0, inside the old span
    assert t.check("m/s", 1, 1021 * S).outcome == "ok"


def test_a_seq_far_behind_is_a_reboot_and_a_close_one_a_replay() -> None:
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10, replay_window=100)
    for k in range(1000, 1300):
        t.check("m/s", k, k * S)
    assert t.check("m/s", 1250, 1250 * S).outcome == "stale"  # within the window, inside the span
    assert t.check("m/s", 1150, 1150 * S).outcome == "restart"  # 150 back > replay_window
    assert t.check("m/s", 1151, 1151 * S).outcome == "ok"


def test_after_an_agent_restart_redeliveries_are_stale_not_reboots() -> None:
    """The crash case: the store gave back (seq, ts) only; the broker resends the last batch."""
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    t.restore({"m/s": (40, 40 * S)})
    assert [t.check("m/s", k, k * S).outcome for k in range(24, 41)] == ["stale"] * 16 + ["duplicate"]
    assert t.check("m/s", 0, 0).outcome == "stale"  # seq 0 of this very run, resent
    assert t.check("m/s", 41, 41 * S).outcome == "ok"
    assert t.check("m/s", 0, 42 * S).outcome == "restart"  # later than everything: a reboot


@given(
    st.integers(1, 5000),
    st.integers(-(10**6), 10**6),
    st.lists(st.integers(0, 5000), min_size=1, max_size=30),
)
def test_a_replay_of_accepted_windows_is_never_accepted_again(
    n: int, skew_s: int, replayed: list[int]
) -> None:
    """Any clock offset, any windows of the run resent: never scored twice, never a reset."""
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    ts = {k: (skew_s + 10 * k) * S for k in range(n)}
    for k in range(n):
        t.check("m/s", k, ts[k])
    for k in replayed:
        if k < n and n - 1 - k <= REPLAY_WINDOW:  # further back is never a replay: a reboot
            assert t.check("m/s", k, ts[k]).outcome in ("stale", "duplicate")


# ------------------------------------------ an agent restart decides reboots and replays as before it


def _restarted(t: SequenceTracker, clock: Callable[[], int], *, runs: bool = True) -> SequenceTracker:
    """A new tracker restored from `t` as the states table holds it: each sensor's (seq, ts) and, with
    `runs`, its run since the last reset (without: a row an older agent wrote)."""
    u = SequenceTracker(
        gap_reset_s=t.gap_reset_s, max_sensors=t.max_sensors, replay_window=t.replay_window, clock=clock
    )
    last = t.export()
    saved = {k: r for k, (s, ts) in last.items() if (r := t.run(k, s, ts)) is not None} if runs else None
    u.restore(last, saved)
    return u


def test_a_reboot_with_the_right_time_after_an_agent_restart_is_a_reboot() -> None:
    """A day fast, the agent restarts, the sensor reboots with the right time: `restart`, as without
    the agent's restart (an older store row, without the run, left the windows `stale`)."""
    day = 86_400 * S
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    for k in range(30):
        t.check("m/s", k, day + k * 10 * S)
    right = [(k, 2000 * S + k * 10 * S) for k in range(5)]
    u = _restarted(t, t._clock)
    assert [u.check("m/s", *w).outcome for w in right] == ["restart"] + ["ok"] * 4
    old = _restarted(t, t._clock, runs=False)
    assert [old.check("m/s", *w).outcome for w in right] == ["stale"] * 5


def test_a_new_seq_0_after_an_agent_restart_is_a_reboot_and_the_old_one_a_replay() -> None:
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10)
    for k in range(50):
        t.check("m/s", k, 1000 * S + k * S)
    u = _restarted(t, t._clock)
    assert u.check("m/s", 0, 1000 * S).outcome == "stale"  # the run's own seq 0, resent
    assert u.check("m/s", 3, 1003 * S).outcome == "stale"  # a redelivery
    assert u.check("m/s", 0, 1020 * S).outcome == "restart"  # a new seq 0 inside the old span
    assert _restarted(t, t._clock, runs=False).check("m/s", 0, 1020 * S).outcome == "stale"  # before


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3000)), min_size=2, max_size=60),
    st.data(),
)
def test_a_restored_tracker_judges_every_window_as_the_one_that_never_stopped(
    events: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Any windows (seq 0-40, sensor clock 0-3000 s, two sensors), the agent restarted anywhere (down
    longer than gap_reset_s): from the restart on, the restored tracker's verdicts equal those of the
    tracker that never stopped. (Its wait for a sensor is not saved: the downtime makes it moot.)"""
    now = [0]
    t = SequenceTracker(gap_reset_s=600.0, max_sensors=10, replay_window=16, clock=lambda: now[0])
    cut = data.draw(st.integers(1, len(events) - 1))
    keys = [f"m/s{i % 2}" for i in range(len(events))]
    for i in range(cut):
        now[0] += S
        t.check(keys[i], events[i][0], events[i][1] * S)
    now[0] += 700 * S  # the agent was down longer than gap_reset_s
    u = _restarted(t, lambda: now[0])
    for i in range(cut, len(events)):
        now[0] += S
        seq, ts = events[i][0], events[i][1] * S
        assert u.check(keys[i], seq, ts) == t.check(keys[i], seq, ts), (i, events[: i + 1])
