"""The alarm state machine: ok / warning / alarm with hysteresis, stepped for many sensors at once.

Each window's health score maps to a level: 2 (alarm) when score >= thresholds.alarm, 1 (warning)
when score >= thresholds.warning, else 0 (ok). Per sensor, two run-length counters per level are kept:

- `above[k-1]` = consecutive windows (ending now) whose level was >= k, for k = 1, 2;
- `below[k]`   = consecutive windows (ending now) whose level was <= k, for k = 0, 1.

After a window the state rises to the highest level k > state with above >= raise_windows;
otherwise it falls to the lowest level k < state with below >= clear_windows. So a state is raised
only after N consecutive windows at or above its threshold and cleared only after M consecutive
windows under it; one noisy window never flips a state. The counters do not depend on the state,
which keeps the step a handful of vectorised numpy operations (see `step`).

>>> t = Thresholds(warning=0.5, alarm=0.8, raise_windows=2, clear_windows=3)
>>> st = AlarmState.fresh(1)
>>> [STATE_NAMES[int(step(st, np.array([s]), t)[1][0])] for s in (0.9, 0.9, 0.1, 0.1, 0.1)]
['ok', 'alarm', 'alarm', 'alarm', 'ok']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

#: The alarm states, by level (0, 1, 2): the one definition (protocol, store and trainer use it).
STATE_NAMES: Final[tuple[str, str, str]] = ("ok", "warning", "alarm")
State = Literal["ok", "warning", "alarm"]
OK, WARNING, ALARM = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Transition:
    """One alarm state change of one sensor at one window (as published, stored and exported).

    The scorer fills `seq` / `ts_ns` from the windows it is given (from `score_features` without
    them: `seq` is the sensor's step count and `ts_ns` 0).
    """

    sensor: str
    seq: int
    ts_ns: int
    previous_state: str
    state: str
    score: float
    model: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Alarm thresholds and hysteresis, as in card.json "thresholds"."""

    warning: float
    alarm: float
    raise_windows: int = 1
    clear_windows: int = 1

    def __post_init__(self) -> None:
        if not (0.0 <= self.warning <= self.alarm <= 1.0):
            raise ValueError(f"need 0 <= warning ({self.warning}) <= alarm ({self.alarm}) <= 1")
        if self.raise_windows < 1 or self.clear_windows < 1:
            raise ValueError("raise_windows and clear_windows must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "warning": self.warning,
            "alarm": self.alarm,
            "raise_windows": self.raise_windows,
            "clear_windows": self.clear_windows,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        """From card.json; raises ValueError (the bundle loader turns it into BundleError("bad_card"))."""
        if not isinstance(d, dict):
            raise ValueError("thresholds must be an object")
        w, a = d.get("warning"), d.get("alarm")
        rw, cw = d.get("raise_windows"), d.get("clear_windows")
        for name, v in (("warning", w), ("alarm", a)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
                raise ValueError(f"thresholds.{name} must be a finite number, got {v!r}")
        for name, v in (("raise_windows", rw), ("clear_windows", cw)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"thresholds.{name} must be an integer, got {v!r}")
        return cls(float(w), float(a), int(rw), int(cw))  # type: ignore[arg-type]


@dataclass(slots=True)
class AlarmState:
    """Alarm state for B sensors: `state` int8 [B] (0/1/2), `above` and `below` int32 [B, 2]."""

    state: npt.NDArray[np.int8]
    above: npt.NDArray[np.int32]
    below: npt.NDArray[np.int32]

    @classmethod
    def fresh(cls, n: int) -> AlarmState:
        """n sensors in state ok with empty counters."""
        return cls(
            np.zeros(n, dtype=np.int8), np.zeros((n, 2), dtype=np.int32), np.zeros((n, 2), dtype=np.int32)
        )


def levels(health: npt.NDArray[np.floating[Any]], t: Thresholds) -> npt.NDArray[np.int8]:
    """0/1/2 per score (NaN counts as ok: a score the model could not give raises nothing)."""
    h = np.asarray(health)
    lv = (h >= t.warning).view(np.int8) + (h >= t.alarm).view(np.int8)
    return lv


_UP_LEVELS = np.array([[1, 2]], dtype=np.int8)  # above[:, j] counts windows with level >= j + 1
_DOWN_LEVELS = np.array([[0, 1]], dtype=np.int8)  # below[:, j] counts windows with level <= j


SMALL_BATCH = 8  # below this, plain Python beats a dozen numpy calls of ~1-3 µs each


def step(
    st: AlarmState, health: npt.NDArray[np.floating[Any]], t: Thresholds
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    """Advance B sensors by one window each. Returns (previous_state, new_state).

    `st` is updated: its fields are rebound to the new arrays (the old arrays are left as they were,
    so `previous_state` is the old `st.state`). Small batches take a scalar path with the same rule.
    """
    if len(st.state) <= SMALL_BATCH:
        return step_scalar(st, health, t)
    return step_vectorised(st, health, t)


def step_scalar(
    st: AlarmState, health: npt.NDArray[np.floating[Any]], t: Thresholds
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    """`step` one sensor at a time in plain Python (for small batches; same results)."""
    scores = np.asarray(health).tolist()
    if len(scores) != len(st.state):
        raise ValueError(f"{len(scores)} scores for {len(st.state)} sensors")
    cap, N, M = max(t.raise_windows, t.clear_windows), t.raise_windows, t.clear_windows
    above, below, states = st.above.tolist(), st.below.tolist(), st.state.tolist()
    for i, v in enumerate(scores):
        lv = 2 if v >= t.alarm else 1 if v >= t.warning else 0
        a, b = above[i], below[i]
        a0 = min(a[0] + 1, cap) if lv >= 1 else 0
        a1 = min(a[1] + 1, cap) if lv >= 2 else 0
        b0 = min(b[0] + 1, cap) if lv <= 0 else 0
        b1 = min(b[1] + 1, cap) if lv <= 1 else 0
        above[i], below[i] = [a0, a1], [b0, b1]
        rise_to = (a0 >= N) + (a1 >= N)
        fall_to = 2 - (b0 >= M) - (b1 >= M)
        states[i] = max(min(states[i], fall_to), rise_to)
    previous = st.state
    st.state = np.array(states, dtype=np.int8)
    st.above = np.array(above, dtype=np.int32).reshape(-1, 2)
    st.below = np.array(below, dtype=np.int32).reshape(-1, 2)
    return previous, st.state


def step_vectorised(
    st: AlarmState, health: npt.NDArray[np.floating[Any]], t: Thresholds
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    """`step` with numpy over the whole batch (same results as `step_scalar`)."""
    lv = levels(health, t)
    if lv.shape != st.state.shape:
        raise ValueError(f"{lv.shape[0]} scores for {st.state.shape[0]} sensors")
    col = lv[:, None]
    # Counters only need to tell "long enough" from "not yet": saturate at that, never overflow.
    cap = max(t.raise_windows, t.clear_windows)
    above = np.minimum(st.above + 1, cap) * (col >= _UP_LEVELS)
    below = np.minimum(st.below + 1, cap) * (col <= _DOWN_LEVELS)
    # A run of level >= 2 is also a run of level >= 1, so the raised flags are monotone and their
    # sum is the highest level reached for raise_windows; likewise for the cleared flags.
    rise_to = (above >= t.raise_windows).sum(axis=1, dtype=np.int8)
    fall_to = 2 - (below >= t.clear_windows).sum(axis=1, dtype=np.int8)
    previous = st.state
    # Rising and falling exclude each other (both would bound the current level from both sides),
    # and rise_to <= current level <= fall_to, so one expression does both.
    new = np.maximum(np.minimum(previous, fall_to), rise_to).astype(np.int8, copy=False)
    st.state, st.above, st.below = new, above.astype(np.int32, copy=False), below.astype(np.int32, copy=False)
    return previous, new
