"""Alarm thresholds and hysteresis for a target false-alarm rate per machine-day, from validation runs.

Semantics are the agent's (`edge_agent.alarms`): the alarm is raised after `raise_windows` (N)
consecutive windows with score >= alarm, and cleared after `clear_windows` (M) consecutive windows
under it. A *false alarm* is a raise that happens at a healthy window (target 0); its rate is the
number of false raises divided by the healthy machine-days of validation data (healthy windows ×
the run's window spacing / 86,400 s).

`calibrate` searches thresholds (quantiles of the validation scores) × hysteresis pairs (N, M);
among the settings whose false-alarm rate is at most the target it picks the one that keeps the
alarm on for the largest share of degraded windows (ties: smaller N, then smaller M — faster to
react, less sticky), then sets `warning` the same way for a rate `warning_factor` times higher.
With little healthy validation time the allowed number of false raises rounds down to zero; the
card's validation metrics report the healthy machine-days so a reader can judge the estimate.
Two safety settings cover what few machine-hours cannot show: `min_raise_windows` (never raise on
fewer consecutive windows, e.g. a cold-start score) and `margin` (no false raise on validation even
with every score that much higher).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.alarms import ALARM, AlarmState, Thresholds, step

if TYPE_CHECKING:
    from trainer.train import TrainConfig

SECONDS_PER_DAY = 86_400.0
RAISE_CHOICES = (1, 2, 3, 5, 8)
CLEAR_CHOICES = (1, 3, 6, 12)


def settings_of(cfg: TrainConfig) -> dict[str, Any]:
    """`calibrate`'s keyword settings as a training configuration asks for them (the bundle's own, so
    baselines are calibrated the same way): false-alarm target, minimum raise windows, safety margin,
    and the clear-window choices (all of CLEAR_CHOICES for `clear_windows` 0, else only that one)."""
    return {
        "target_false_alarms_per_day": cfg.target_false_alarms_per_day,
        "min_raise_windows": cfg.min_raise_windows,
        "margin": cfg.alarm_margin,
        "clear_choices": (int(cfg.clear_windows),) if cfg.clear_windows > 0 else CLEAR_CHOICES,
    }


@dataclass
class ScoredRun:
    """One validation run's health scores [N], targets [N] (1/0/NaN) and window spacing in seconds."""

    scores: np.ndarray
    target: np.ndarray
    interval_s: float


def _in_alarm(scores: np.ndarray, thr: np.ndarray, n_raise: int, n_clear: int) -> np.ndarray:
    """bool [C, T]: alarm state after each window for each candidate threshold (state starts off).

    The alarm level's state machine only depends on the last completed run of N windows at/above or
    M windows under the threshold, so it is a forward fill of those events (vectorised over C).
    """
    above = scores[None, :] >= thr[:, None]  # [C, T]
    T = scores.shape[0]

    def run_done(b: np.ndarray, n: int) -> np.ndarray:
        c = np.cumsum(b, axis=1, dtype=np.int64)
        prev = np.zeros_like(c)
        prev[:, n:] = c[:, :-n] if n <= T else 0
        done = (c - prev) >= n
        done[:, : n - 1] = False
        return done

    raised = run_done(above, n_raise)
    cleared = run_done(~above, n_clear)
    idx = np.arange(T)[None, :]
    last_raise = np.maximum.accumulate(np.where(raised, idx, -1), axis=1)
    last_clear = np.maximum.accumulate(np.where(cleared, idx, -1), axis=1)
    return last_raise > last_clear


def _raises(state: np.ndarray) -> np.ndarray:
    """bool [C, T]: the alarm went on at this window."""
    prev = np.zeros_like(state)
    prev[:, 1:] = state[:, :-1]
    return state & ~prev


def healthy_days(runs: Sequence[ScoredRun]) -> float:
    return float(sum(np.sum(r.target == 0) * r.interval_s for r in runs) / SECONDS_PER_DAY)


def _evaluate(
    runs: Sequence[ScoredRun], thr: np.ndarray, n_raise: int, n_clear: int, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(false raises [C], degraded windows in alarm [C]) summed over runs.

    False raises are counted with every score raised by `margin` (a safety margin: a setting must
    stay free of false alarms even if healthy scores came out `margin` higher than in validation).
    """
    false = np.zeros(len(thr), np.int64)
    hits = np.zeros(len(thr), np.int64)
    for r in runs:
        if len(r.scores) == 0:
            continue
        state = _in_alarm(r.scores, thr, n_raise, n_clear)
        shifted = state if margin <= 0 else _in_alarm(r.scores + margin, thr, n_raise, n_clear)
        false += np.sum(_raises(shifted) & (r.target == 0)[None, :], axis=1)
        hits += np.sum(state & (r.target == 1)[None, :], axis=1)
    return false, hits


def _candidates(runs: Sequence[ScoredRun], count: int = 160) -> np.ndarray:
    """Threshold candidates: the upper half of all validation scores and of the healthy windows' scores.

    The healthy windows' own quantiles matter where degraded windows are the majority (seeded-fault
    recordings: one healthy recording among many faulty ones), whose scores would otherwise fill the
    whole grid and put its lowest candidate above every healthy score.
    """
    scores = np.concatenate([r.scores for r in runs]) if runs else np.zeros(0)
    healthy = np.concatenate([r.scores[r.target == 0] for r in runs]) if runs else np.zeros(0)
    scores, healthy = scores[np.isfinite(scores)], healthy[np.isfinite(healthy)]
    if scores.size == 0:
        return np.array([0.5])
    grid = np.linspace(0.5, 1.0, count)
    qs = np.quantile(scores, grid)
    if healthy.size:
        qs = np.concatenate([qs, np.quantile(healthy, grid)])
    qs = np.unique(qs)
    # Just above each quantile (a score equal to it would count as "above"), and never above 1.
    cand = np.unique(np.clip(np.concatenate([qs, np.nextafter(qs, np.inf)]), 0.0, 1.0))
    return cand


def _choose(
    runs: Sequence[ScoredRun],
    allowed_false: float,
    n_degraded: int,
    hysteresis: Sequence[tuple[int, int]],
    margin: float = 0.0,
) -> tuple[float, int, int, int, int]:
    """(threshold, N, M, false raises, degraded windows in alarm) of the best feasible setting."""
    thr = _candidates(runs)
    if margin > 0:  # the margin can push the lowest safe threshold past every validation quantile
        thr = np.unique(np.clip(np.concatenate([thr, thr + margin]), 0.0, 1.0))
    best: tuple[float, int, int, int, int] | None = None
    best_key: tuple[float, ...] | None = None
    for n_raise, n_clear in hysteresis:
        false, hits = _evaluate(runs, thr, n_raise, n_clear, margin)
        ok = np.flatnonzero(false <= allowed_false)
        if ok.size == 0:
            continue
        # Lowest feasible threshold for this (N, M) gives the most hits among them (hits fall with thr).
        i = int(ok[np.argmax(hits[ok] - 1e-9 * thr[ok])])
        key = (float(hits[i]), -n_raise, -n_clear, -float(thr[i]))
        if best_key is None or key > best_key:
            best_key = key
            best = (float(thr[i]), n_raise, n_clear, int(false[i]), int(hits[i]))
    if best is None:  # nothing feasible: the top score, slowest hysteresis
        n_raise, n_clear = max(hysteresis)
        false, hits = _evaluate(runs, np.array([1.0]), n_raise, n_clear)
        best = (1.0, n_raise, n_clear, int(false[0]), int(hits[0]))
    return best


def calibrate(
    runs: Sequence[ScoredRun],
    *,
    target_false_alarms_per_day: float = 0.1,
    warning_factor: float = 10.0,
    raise_choices: Sequence[int] = RAISE_CHOICES,
    clear_choices: Sequence[int] = CLEAR_CHOICES,
    min_raise_windows: int = 1,
    margin: float = 0.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(thresholds for card["thresholds"], metrics for card["validation"]["alarms"]).

    `min_raise_windows` drops faster hysteresis choices (one noisy window never raises an alarm);
    `margin` (in score units) makes the alarm and warning settings free of false raises with every
    validation score raised by it — a safety margin for few validation machine-hours.
    """
    if target_false_alarms_per_day <= 0:
        raise ValueError("target_false_alarms_per_day must be > 0")
    if margin < 0:
        raise ValueError("margin must be >= 0")
    days = healthy_days(runs)
    n_degraded = int(sum(np.sum(r.target == 1) for r in runs))
    raises = [n for n in raise_choices if n >= min_raise_windows] or [max(min_raise_windows, 1)]
    hysteresis = [(n, m) for n in raises for m in clear_choices]
    allowed = np.floor(target_false_alarms_per_day * days + 1e-9)
    alarm, n_raise, n_clear, _, _ = _choose(runs, allowed, n_degraded, hysteresis, margin)
    allowed_w = np.floor(target_false_alarms_per_day * warning_factor * days + 1e-9)
    # The margin guards the warning too: a warning just above the healthy validation scores would
    # sound on any healthy machine scoring a little higher (CWRU: 0.0005 without it).
    warning, _, _, _, _ = _choose(runs, allowed_w, n_degraded, [(n_raise, n_clear)], margin)
    warning = min(warning, alarm)
    thresholds = {"warning": warning, "alarm": alarm, "raise_windows": n_raise, "clear_windows": n_clear}
    metrics = alarm_metrics(runs, thresholds, target_false_alarms_per_day)
    metrics["min_raise_windows"] = int(min_raise_windows)
    metrics["margin"] = float(margin)
    return thresholds, metrics


def median_run_alarm(
    runs: Sequence[ScoredRun], n_raise: int, n_clear: int, margin: float = 0.0
) -> float | None:
    """The median over runs of each run's own lowest false-alarm-free alarm threshold (N, M, margin fixed).

    One run whose healthy life scores unusually high (a step that did not lead to a failure) then
    moves the threshold by one rank instead of setting it. None when no run has healthy windows.
    """
    per_run = []
    for r in runs:
        if len(r.scores) == 0 or not np.any(r.target == 0):
            continue
        thr = _candidates([r])
        thr = np.unique(np.clip(np.concatenate([[0.0], thr, thr + margin]), 0.0, 1.0))
        false, _ = _evaluate([r], thr, n_raise, n_clear, margin)
        ok = np.flatnonzero(false == 0)
        per_run.append(float(thr[ok[0]]) if ok.size else 1.0)
    return float(np.median(per_run)) if per_run else None


def alarm_metrics(
    runs: Sequence[ScoredRun], thresholds: dict[str, Any], target_false_alarms_per_day: float | None = None
) -> dict[str, Any]:
    """Replays the agent's own alarm state machine (edge_agent.alarms.step) over the runs."""
    t = Thresholds.from_dict(thresholds)
    false_raises = 0
    degraded_in_alarm = 0
    detected = 0
    degraded_runs = 0
    delays: list[float] = []
    for r in runs:
        st = AlarmState.fresh(1)
        states = np.zeros(len(r.scores), np.int8)
        for k, s in enumerate(r.scores):
            prev, new = step(st, np.array([s], np.float64), t)
            states[k] = new[0]
            if new[0] == ALARM and prev[0] != ALARM and r.target[k] == 0:
                false_raises += 1
        deg = r.target == 1
        degraded_in_alarm += int(np.sum((states == ALARM) & deg))
        if deg.any():
            degraded_runs += 1
            first_deg = int(np.argmax(deg))
            hits = np.flatnonzero((states[first_deg:] == ALARM) & deg[first_deg:])
            if hits.size:
                detected += 1
                delays.append(float(hits[0]) * r.interval_s)
    days = healthy_days(runs)
    n_deg = int(sum(np.sum(r.target == 1) for r in runs))
    out: dict[str, Any] = {
        "healthy_machine_days": float(f"{days:.4g}"),  # 4 significant digits: seconds of CWRU still show
        "false_alarms": false_raises,
        "false_alarms_per_day": (false_raises / days) if days > 0 else None,
        "degraded_windows": n_deg,
        "degraded_windows_in_alarm": (degraded_in_alarm / n_deg) if n_deg else None,
        "degraded_runs": degraded_runs,
        "degraded_runs_detected": detected,
        "median_detection_delay_s": float(np.median(delays)) if delays else None,
    }
    if target_false_alarms_per_day is not None:
        out["target_false_alarms_per_day"] = target_false_alarms_per_day
    return out
