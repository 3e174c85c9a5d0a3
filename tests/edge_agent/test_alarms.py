"""The alarm state machine against a history-based reference, and its hysteresis cases."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import alarms
from edge_agent.alarms import STATE_NAMES, AlarmState, Thresholds


def reference_states(health: list[float], t: Thresholds) -> list[str]:
    """The rule written from the window history (no counters): after each window, rise to the highest
    level k > state whose threshold the last `raise_windows` levels all reached, else fall to the
    lowest level k < state that the last `clear_windows` levels all stayed at or under."""
    lv = [2 if h >= t.alarm else 1 if h >= t.warning else 0 for h in health]
    state, out = 0, []
    for i in range(len(lv)):
        up = [
            k
            for k in (1, 2)
            if i + 1 >= t.raise_windows and all(v >= k for v in lv[i + 1 - t.raise_windows : i + 1])
        ]
        down = [
            k
            for k in (0, 1)
            if i + 1 >= t.clear_windows and all(v <= k for v in lv[i + 1 - t.clear_windows : i + 1])
        ]
        if up and max(up) > state:
            state = max(up)
        elif down and min(down) < state:
            state = min(down)
        out.append(STATE_NAMES[state])
    return out


def run(health: list[float], t: Thresholds) -> list[str]:
    s = AlarmState.fresh(1)
    return [STATE_NAMES[int(alarms.step(s, np.array([h]), t)[1][0])] for h in health]


T = Thresholds(warning=0.5, alarm=0.8, raise_windows=3, clear_windows=2)


def test_docstring_example() -> None:
    result = doctest.testmod(alarms, verbose=False)
    assert result.attempted >= 1
    assert result.failed == 0


def test_raises_only_after_n_consecutive_windows() -> None:
    assert run([0.9, 0.9, 0.9], T) == ["ok", "ok", "alarm"]
    # an interruption restarts the count
    assert run([0.9, 0.9, 0.1, 0.9, 0.9, 0.9], T) == ["ok", "ok", "ok", "ok", "ok", "alarm"]


def test_single_spike_changes_nothing() -> None:
    assert run([0.1, 0.99, 0.1, 0.1], T) == ["ok"] * 4


def test_clears_only_after_m_consecutive_windows() -> None:
    assert run([0.9] * 3 + [0.1, 0.9, 0.1, 0.1], T) == ["ok", "ok", "alarm", "alarm", "alarm", "alarm", "ok"]


def test_escalation_and_step_down_through_warning() -> None:
    seq = [0.6, 0.6, 0.6, 0.9, 0.9, 0.9, 0.6, 0.6, 0.1, 0.1]
    assert run(seq, T) == [
        "ok",
        "ok",
        "warning",
        "warning",
        "warning",
        "alarm",
        "alarm",
        "warning",
        "warning",
        "ok",
    ]


def test_mixed_warning_and_alarm_levels_count_towards_warning() -> None:
    # 0.6, 0.9, 0.6 are all >= warning: three in a row raise a warning, not an alarm
    assert run([0.6, 0.9, 0.6], T) == ["ok", "ok", "warning"]


def test_thresholds_are_inclusive() -> None:
    t = Thresholds(0.5, 0.8, 1, 1)
    assert run([0.5, 0.8, 0.79999], t) == ["warning", "alarm", "warning"]


def test_returns_previous_and_new_and_updates_in_place() -> None:
    s = AlarmState.fresh(3)
    t = Thresholds(0.5, 0.8, 1, 1)
    prev, new = alarms.step(s, np.array([0.1, 0.6, 0.9], dtype=np.float32), t)
    assert prev.tolist() == [0, 0, 0]
    assert new.tolist() == [0, 1, 2]
    assert s.state.tolist() == [0, 1, 2]
    for fn in (alarms.step_scalar, alarms.step_vectorised):
        with pytest.raises(ValueError, match="scores for"):
            fn(s, np.array([0.1]), t)


@settings(max_examples=60, deadline=None)
@given(
    raise_windows=st.integers(1, 4),
    clear_windows=st.integers(1, 4),
    data=st.lists(
        st.lists(st.sampled_from([0.0, 0.3, 0.5, 0.6, 0.8, 0.95]), min_size=12, max_size=12),
        min_size=1,
        max_size=6,
    ),
)
def test_both_paths_match_history_reference(
    raise_windows: int, clear_windows: int, data: list[list[float]]
) -> None:
    t = Thresholds(0.5, 0.8, raise_windows, clear_windows)
    H = np.array(data)  # [sensors, time]
    for fn in (alarms.step_scalar, alarms.step_vectorised, alarms.step):
        s = AlarmState.fresh(H.shape[0])
        got = [[STATE_NAMES[int(v)] for v in fn(s, H[:, i], t)[1]] for i in range(H.shape[1])]
        for j, row in enumerate(data):
            assert [g[j] for g in got] == reference_states(row, t), fn.__name__


def test_large_batch_uses_the_same_rule() -> None:
    rng = np.random.default_rng(0)
    t = Thresholds(0.4, 0.7, 3, 2)
    H = rng.uniform(size=(50, 30))  # 50 sensors: above SMALL_BATCH, the vectorised path
    assert H.shape[0] > alarms.SMALL_BATCH
    s = AlarmState.fresh(50)
    got = np.stack([alarms.step(s, H[:, i], t)[1] for i in range(30)], axis=1)
    for j in range(50):
        assert [STATE_NAMES[v] for v in got[j]] == reference_states(H[j].tolist(), t)


def test_thresholds_validation() -> None:
    with pytest.raises(ValueError, match="warning"):
        Thresholds(0.9, 0.5)
    with pytest.raises(ValueError, match="raise_windows"):
        Thresholds(0.5, 0.8, 0, 1)
    with pytest.raises(ValueError, match="integer"):
        Thresholds.from_dict({"warning": 0.5, "alarm": 0.8, "raise_windows": True, "clear_windows": 1})
    with pytest.raises(ValueError, match="finite"):
        Thresholds.from_dict({"warning": float("nan"), "alarm": 0.8, "raise_windows": 1, "clear_windows": 1})
    d = {"warning": 0.25, "alarm": 0.75, "raise_windows": 2, "clear_windows": 5}
    assert Thresholds.from_dict(d).to_dict() == d
