"""Evaluation metrics in maintenance terms: window AUROC, alarm lead time, false alarms per machine-day.

All functions take plain numpy arrays of one run (or pooled windows) so they can be checked by hand:

- `auroc(labels, scores)`: probability that a random degraded window scores higher than a random
  healthy one (ties count one half) — the Mann-Whitney statistic, no scikit-learn needed.
- `roc_curve(labels, scores)`: false/true positive rates at every distinct score threshold.
- `alarm_raises(states)`: windows at which the alarm state (0 ok, 1 warning, 2 alarm, as in
  `edge_agent.alarms`) went up to alarm.
- `sustained_alarm_start(states)`: the first window of the alarm that is still on at the end of the
  run (never cleared after its raise) — the alarm an operator would have acted on before the failure.
- `lead_time(ts, states)`: end of life (the run's last window) minus that raise, in seconds and as a
  fraction of the observed life (`ts[-1] - ts[0]`); None when the alarm is not on at the end.
- `false_alarms(states, target)` / `false_alarms_per_machine_day`: raises at windows labelled
  healthy (target 0), per day of healthy time (healthy windows × window spacing / 86,400 s) — the
  same definition as `trainer.calibrate`.
- `confusion_matrix` / `fault_accuracy`: fault-type classification on windows with a known class.

>>> auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
>>> states = np.array([0, 2, 0, 0, 2, 2, 2])      # a false raise at t=10, cleared, raised again at t=40
>>> lead_time(np.arange(7) * 10.0, states)
(20.0, 0.3333333333333333)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ALARM = 2  # edge_agent.alarms.ALARM
SECONDS_PER_DAY = 86_400.0


# ------------------------------------------------------------------------------------------ windows
def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (like scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.concatenate([[True], xs[1:] != xs[:-1]]))
    ends = np.concatenate([starts[1:], [len(xs)]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks_sorted = np.repeat(avg, ends - starts)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for binary `labels` (1 positive); None without both classes."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def roc_curve(labels: np.ndarray, scores: np.ndarray, *, max_points: int = 400) -> dict[str, list[float]]:
    """{"fpr": [...], "tpr": [...]} from (0, 0) to (1, 1), at most about `max_points` points."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return {"fpr": [], "tpr": []}
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last_of_value = np.flatnonzero(np.concatenate([s_sorted[1:] != s_sorted[:-1], [True]]))
    fpr = np.concatenate([[0.0], fp[last_of_value] / n_neg])
    tpr = np.concatenate([[0.0], tp[last_of_value] / n_pos])
    if len(fpr) > max_points:  # thin evenly, keep both ends
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]}


# ------------------------------------------------------------------------------------------- alarms
def alarm_raises(states: np.ndarray) -> np.ndarray:
    """Indices of windows where the state became alarm (from ok or warning; a run starts 'ok')."""
    on = np.asarray(states) == ALARM
    prev = np.concatenate([[False], on[:-1]])
    return np.flatnonzero(on & ~prev)


def sustained_alarm_start(states: np.ndarray) -> int | None:
    """First window of the alarm still on at the run's last window (None when it is not on then)."""
    on = np.asarray(states) == ALARM
    if on.size == 0 or not on[-1]:
        return None
    off = np.flatnonzero(~on)
    return int(off[-1] + 1) if off.size else 0


def lead_time(ts: np.ndarray, states: np.ndarray) -> tuple[float | None, float | None]:
    """(seconds, fraction of life) from the sustained alarm's raise to the last window (end of life).

    The life is the observed span `ts[-1] - ts[0]`; the fraction is None when it is zero.
    """
    t = np.asarray(ts, dtype=np.float64)
    start = sustained_alarm_start(states)
    if start is None:
        return None, None
    lead = float(t[-1] - t[start])
    life = float(t[-1] - t[0])
    return lead, (lead / life if life > 0 else None)


def window_interval(ts: np.ndarray) -> float:
    """Typical time between windows: the median spacing (0 for fewer than two windows)."""
    t = np.asarray(ts, dtype=np.float64)
    return float(np.median(np.diff(t))) if t.size >= 2 else 0.0


def false_alarms(states: np.ndarray, target: np.ndarray) -> int:
    """Raises of the alarm at windows labelled healthy (target == 0; NaN = unknown is not counted)."""
    tgt = np.asarray(target, dtype=np.float64)
    raises = alarm_raises(states)
    return int(np.sum(tgt[raises] == 0)) if raises.size else 0


def healthy_days(target: np.ndarray, interval_s: float) -> float:
    """Healthy time in days: windows labelled healthy × the window spacing."""
    return float(np.sum(np.asarray(target, dtype=np.float64) == 0) * interval_s / SECONDS_PER_DAY)


def false_alarms_per_machine_day(
    states: Sequence[np.ndarray], targets: Sequence[np.ndarray], ts: Sequence[np.ndarray]
) -> tuple[int, float, float | None]:
    """(false raises, healthy machine-days, rate per machine-day or None without healthy time), pooled."""
    count, days = 0, 0.0
    for st, tg, t in zip(states, targets, ts, strict=True):
        count += false_alarms(st, tg)
        days += healthy_days(tg, window_interval(t))
    return count, days, (count / days if days > 0 else None)


# -------------------------------------------------------------------------------------- fault types
def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [C, C]: rows are the true class, columns the predicted one; entries with true < 0 are skipped."""
    t = np.asarray(true, dtype=np.int64)
    p = np.asarray(pred, dtype=np.int64)
    keep = (t >= 0) & (t < n_classes) & (p >= 0) & (p < n_classes)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t[keep], p[keep]), 1)
    return cm


def fault_accuracy(true: np.ndarray, pred: np.ndarray) -> float | None:
    """Share of windows with a known class (true >= 0) whose predicted class is right."""
    t = np.asarray(true, dtype=np.int64)
    keep = t >= 0
    if not keep.any():
        return None
    return float(np.mean(np.asarray(pred)[keep] == t[keep]))


# ----------------------------------------------------------------------------------------- summaries
def describe(values: Sequence[float]) -> dict[str, Any]:
    """{"n", "median", "mean", "min", "max"} of the non-None values (None entries when there are none)."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "median": None, "mean": None, "min": None, "max": None}
    return {
        "n": int(v.size),
        "median": float(np.median(v)),
        "mean": float(np.mean(v)),
        "min": float(np.min(v)),
        "max": float(np.max(v)),
    }
