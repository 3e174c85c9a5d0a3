"""Evaluation metrics in maintenance terms: alarm lead time, false alarms per machine-day, and the
`quality` summary of step-wise results (`RunEval`) that metrics.json and the baselines table report.

scikit-learn computes the window AUROC, the ROC curve, the confusion matrix and accuracies; this
module adds what it lacks: None instead of an error where a class is missing, the ROC thinned for
the report, and the alarm metrics on arrays of one run:

- `alarm_raises(states)`: windows at which the alarm state (0 ok, 1 warning, 2 alarm, as in
  `edge_agent.alarms`) went up to alarm.
- `sustained_alarm_start(states)`: the first window of the alarm that is still on at the end of the
  run (never cleared after its raise) — the alarm an operator would have acted on before the failure.
- `lead_time(ts, states)`: end of life (the run's last window) minus that raise, in seconds and as a
  fraction of the observed life (`ts[-1] - ts[0]`); None when the alarm is not on at the end.
- `false_alarms(states, target)` / `false_alarms_per_machine_day`: raises at windows labelled
  healthy (target 0), per day of healthy time (healthy windows × window spacing / 86,400 s) — the
  same definition as `trainer.calibrate`.

>>> states = np.array([0, 2, 0, 0, 2, 2, 2])      # a false raise at t=10, cleared, raised again at t=40
>>> lead_time(np.arange(7) * 10.0, states)
(20.0, 0.3333333333333333)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

ALARM = 2  # edge_agent.alarms.ALARM
SECONDS_PER_DAY = 86_400.0


# ------------------------------------------------------------------------------------------ windows
def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """scikit-learn's ROC AUC of `scores` for binary `labels`; None without both classes."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def roc_points(labels: np.ndarray, scores: np.ndarray, *, max_points: int = 400) -> dict[str, list[float]]:
    """scikit-learn's ROC curve from (0, 0) to (1, 1) thinned to about `max_points` points for the report."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=np.float64), drop_intermediate=False)
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


# ----------------------------------------------------------------------------------- step-wise runs
@dataclass
class RunEval:
    """One run's step-wise results, aligned with its windows."""

    run_id: str
    machine: str
    sensor: str
    source: str
    ts: np.ndarray  # float64 [N] seconds since the run's start
    scores: np.ndarray  # float32 [N, K] as the scorer returned them
    states: np.ndarray  # int8 [N] 0 ok, 1 warning, 2 alarm (the scorer's state after each window)
    target: np.ndarray  # float32 [N] 1 degraded, 0 healthy, NaN unknown
    fault: np.ndarray  # int64 [N] fault class index (bundle outputs order), -1 unknown
    failed_at_end: bool
    failure_after_end_s: float | None = None  # a recording cut short: its known failure came this much later

    @property
    def health(self) -> np.ndarray:
        return self.scores[:, 0]


def fault_classes_of(outputs: Sequence[str]) -> tuple[str, ...]:
    """Fault classes named by a bundle's outputs: ("health", "p_outer", ...) -> ("outer", ...)."""
    return tuple(o[2:] for o in outputs[1:] if o.startswith("p_"))


def cell_of(card: dict[str, Any]) -> str:
    """The recurrent cell a bundle's card names ("gru" or "lstm"; bundles from before `--cell` hold a GRU)."""
    return str(card.get("cell") or (card.get("training") or {}).get("cell") or "gru")


def run_row(r: RunEval) -> dict[str, Any]:
    """The per-run entry of json "runs"."""
    raises = alarm_raises(r.states)
    lead_s, lead_frac = lead_time(r.ts, r.states) if r.failed_at_end else (None, None)
    before_failure_s = None
    if r.failure_after_end_s is not None:  # cut short: how long before the known failure the alarm stood
        start = sustained_alarm_start(r.states)
        if start is not None:
            before_failure_s = float(r.ts[-1] - r.ts[start]) + r.failure_after_end_s
    deg = np.flatnonzero(r.target == 1)
    onset_s = float(r.ts[deg[0]]) if deg.size else None
    first_alarm_s = float(r.ts[raises[0]]) if raises.size else None
    delay_s = None
    if deg.size:
        after = raises[raises >= deg[0]]
        if after.size:
            delay_s = float(r.ts[after[0]] - r.ts[deg[0]])
    n = len(r.ts)
    return {
        "run_id": r.run_id,
        "machine": r.machine,
        "sensor": r.sensor,
        "source": r.source,
        "windows": n,
        "life_s": float(r.ts[-1] - r.ts[0]) if n else 0.0,
        "failed_at_end": r.failed_at_end,
        "degraded_from_s": onset_s,
        "first_alarm_s": first_alarm_s,
        "alarm_raises": int(raises.size),
        "alarm_at_end": bool(n and r.states[-1] == ALARM),
        "lead_time_s": lead_s,
        "lead_fraction": lead_frac,
        "failure_after_end_s": r.failure_after_end_s,
        "alarm_before_failure_s": before_failure_s,
        "detection_delay_s": delay_s,
        "false_alarms": false_alarms(r.states, r.target),
        "healthy_days": healthy_days(r.target, window_interval(r.ts)),
        "max_health": float(np.max(r.health)) if n else None,
    }


def quality(results: Sequence[RunEval], classes: Sequence[str] = ()) -> dict[str, Any]:
    """Window AUROC, alarm lead times, false alarms per machine-day and fault-type accuracy."""
    target = np.concatenate([r.target for r in results]) if results else np.zeros(0, np.float32)
    health = np.concatenate([r.health for r in results]) if results else np.zeros(0, np.float32)
    states = np.concatenate([r.states for r in results]) if results else np.zeros(0, np.int8)
    known = ~np.isnan(target)
    y = target[known] == 1
    rows = [run_row(r) for r in results]
    failing = [row for row in rows if row["failed_at_end"]]
    cut_short = [row for row in rows if row["failure_after_end_s"] is not None]
    count, days, rate = false_alarms_per_machine_day(
        [r.states for r in results], [r.target for r in results], [r.ts for r in results]
    )
    out: dict[str, Any] = {
        "windows": {
            "count": int(target.size),
            "labelled": int(known.sum()),
            "degraded": int(y.sum()),
            "healthy": int((~y).sum()),
            "auroc": auroc(y, health[known]),
            "roc": roc_points(y, health[known]),
        },
        "alarms": {
            "failing_runs": len(failing),
            "detected": sum(1 for row in failing if row["lead_time_s"] is not None),
            "missed": sum(1 for row in failing if row["lead_time_s"] is None),
            "lead_time_s": describe([row["lead_time_s"] for row in failing]),
            "lead_fraction": describe([row["lead_fraction"] for row in failing]),
            "false_alarms": count,
            "healthy_machine_days": days,
            "false_alarms_per_machine_day": rate,
            "degraded_windows_in_alarm": (
                float(np.mean(states[target == 1] == ALARM)) if np.any(target == 1) else None
            ),
            "cut_short": {  # recordings that end before their known failure (FEMTO's Test_set)
                "runs": len(cut_short),
                "alarm_at_end": sum(1 for row in cut_short if row["alarm_before_failure_s"] is not None),
                "alarm_before_failure_s": describe([row["alarm_before_failure_s"] for row in cut_short]),
            },
        },
        "fault_types": None,
    }
    if classes:
        true = np.concatenate([r.fault for r in results])
        pred = np.concatenate([r.scores[:, 1:].argmax(axis=1) for r in results])
        deg = target == 1
        has = true >= 0
        cm = (
            confusion_matrix(true[has], pred[has], labels=range(len(classes)))
            if has.any()
            else np.zeros((len(classes), len(classes)), np.int64)
        )
        out["fault_types"] = {
            "classes": list(classes),
            "windows": int(np.sum(true >= 0)),
            "accuracy": _accuracy(true, pred, has),
            "accuracy_degraded": _accuracy(true, pred, deg & has),
            "confusion": cm.tolist(),
        }
    out["runs"] = rows
    return out


def summary_row(name: str, q: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One line of the comparison table (the bundle and each baseline)."""
    a = q["alarms"]
    ft = q.get("fault_types")
    return {
        "name": name,
        "auroc": q["windows"]["auroc"],
        "detected": a["detected"],
        "failing_runs": a["failing_runs"],
        "lead_time_s_median": a["lead_time_s"]["median"],
        "lead_fraction_median": a["lead_fraction"]["median"],
        "false_alarms": a["false_alarms"],
        "false_alarms_per_machine_day": a["false_alarms_per_machine_day"],
        "fault_accuracy": None if not ft else ft["accuracy"],
        "cut_short_runs": a["cut_short"]["runs"],
        "cut_short_alarm_at_end": a["cut_short"]["alarm_at_end"],
        **extra,
    }


def _accuracy(true: np.ndarray, pred: np.ndarray, use: np.ndarray) -> float | None:
    """Share of the `use` windows whose predicted class is right (None when there are none)."""
    return float(accuracy_score(true[use], pred[use])) if use.any() else None
