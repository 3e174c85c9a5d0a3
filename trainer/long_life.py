"""A healthy life far longer than any the model was trained on: does the exported GRU stay quiet?

The agent advances one hidden state per sensor for as long as the sensor lives (a FEMTO-like
snapshot every 10 s is 8,640 steps a day), while training runs last hundreds of windows. This
scores, exactly as the agent does (`edge_agent.scorer.Scorer`, one step per window), each run's
first half in order (run-in and the healthy baseline), then `extra` windows drawn at random from
that healthy first half (after the run-in), then the run's real second half; and reports, per run,
how the health score and the alarm behave in each stretch. Used by `benchmarks/long_life.py` and
tests/trainer/test_long_life.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent import baseline
from edge_agent.scorer import Scorer
from trainer import rms_rule
from trainer.data.runs import Run

#: Windows skipped at the start of a run before drawing healthy ones (FEMTO's run-in is louder).
RUN_IN = 30


@dataclass(frozen=True)
class Stretch:
    """How one run's health score and alarm behaved over one stretch of its long life."""

    name: str  # "first half", "long healthy", "second half"
    windows: int
    median: float
    p99: float
    max: float
    alarm_windows: int
    alarm_raises: int
    quarter_medians: tuple[float, ...]  # median health per quarter of the stretch (drift)
    first_alarm: int | None  # index in the stretch of the first window in alarm
    #: the same for the classic rule on this sequence (trainer.rms_rule; None: it never fired, or the
    #: bundle has no per-sensor baseline or no log_rms feature)
    rms_rule_first_alarm: int | None = None


def long_life(
    scorer: Scorer, runs: list[Run], extra: int, *, gain: float = 1.0, seed: int = 0
) -> dict[str, list[Stretch]]:
    """Score every run through first half → `extra` healthy windows → second half, all runs in step.

    `gain` ≠ 1 adds a slow drift: the long stretch's windows are scaled up (or down) geometrically
    until the last is `gain` × the drawn one, and the second half stays at `gain` × (a level change
    of the whole vibration, as a warmer machine or a heavier load may bring; the run's shape is kept).
    """
    rng = np.random.default_rng(seed)
    plans: list[tuple[str, np.ndarray, int]] = []
    for run in runs:
        n = run.n_windows
        half = n // 2
        if half <= RUN_IN:
            raise ValueError(
                f"{run.run_id}: {n} windows, too short to draw healthy ones after a run-in of {RUN_IN}"
            )
        drawn = rng.integers(RUN_IN, half, extra)
        ramp = gain ** (np.arange(1, extra + 1) / max(extra, 1))
        parts = [
            _features(scorer, run, np.arange(half), np.ones(half)),
            _features(scorer, run, drawn, ramp),
            _features(scorer, run, np.arange(half, n), np.full(n - half, gain)),
        ]
        plans.append((run.run_id, np.concatenate(parts), half))
    steps = max(len(feats) for _, feats, _ in plans)
    health = {rid: np.empty(len(feats), np.float32) for rid, feats, _ in plans}
    states = {rid: np.empty(len(feats), dtype=object) for rid, feats, _ in plans}
    for k in range(steps):
        live = [p for p in plans if k < len(p[1])]
        batch = scorer.score_features(
            [rid for rid, *_ in live],
            np.stack([feats[k] for _, feats, _ in live]),
            seqs=[k] * len(live),
            ts_ns=[10**18 + k * 10**10] * len(live),  # one snapshot every 10 s: never a gap reset
        )
        for i, (rid, *_) in enumerate(live):
            health[rid][k] = batch.health[i]
            states[rid][k] = batch.states[i]
    out: dict[str, list[Stretch]] = {}
    for rid, feats, half in plans:
        bounds = [
            ("first half", 0, half),
            ("long healthy", half, half + extra),
            ("second half", half + extra, len(feats)),
        ]
        rule = _rule_input(scorer, feats)
        out[rid] = [
            _stretch(name, health[rid][a:b], states[rid][a:b], None if rule is None else rule[a:b])
            for name, a, b in bounds
            if b > a
        ]
    return out


def _rule_input(scorer: Scorer, feats: np.ndarray, chunk: int = 4096) -> np.ndarray | None:
    """log_rms on the per-sensor baseline's scale, window by window, as the scorer normalises it."""
    spec = scorer.spec.baseline
    if spec is None or "log_rms" not in scorer.spec.names:
        return None
    j = scorer.spec.names.index("log_rms")
    state = baseline.init_state(1, feats.shape[1])
    learned = min(spec.ready_after, len(feats))
    out = np.empty(len(feats))
    for k in range(learned):  # step by step while it learns; from then on the baseline is fixed,
        y, state = baseline.step(spec, state, feats[k : k + 1])
        out[k] = y[0, j]
    for a in range(learned, len(feats), chunk):  # so the rest is stepped in blocks from that state
        block = feats[a : a + chunk]
        out[a : a + len(block)] = baseline.step(spec, np.repeat(state, len(block), axis=0), block)[0][:, j]
    return out


def _features(scorer: Scorer, run: Run, idx: np.ndarray, gains: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Features of run.windows[idx] × gains, as the agent extracts them (unscaled ones computed once)."""
    from edge_agent.protocol import Window

    def of(rows: np.ndarray) -> np.ndarray:
        return scorer.features_of([Window(0, 0, run.fs, run.rpm, w) for w in rows])

    if np.all(gains == 1.0):
        uniq, inverse = np.unique(idx, return_inverse=True)
        return of(run.windows[uniq])[inverse]
    return np.concatenate(
        [
            of(run.windows[idx[a : a + chunk]] * gains[a : a + chunk, None].astype(np.float32))
            for a in range(0, len(idx), chunk)
        ]
        or [np.zeros((0, scorer.n_features), np.float32)]
    )


def _stretch(name: str, h: np.ndarray, s: np.ndarray, rule: np.ndarray | None) -> Stretch:
    alarm = s == "alarm"
    raises = int(alarm[0]) + int(np.sum(alarm[1:] & ~alarm[:-1]))
    first = np.flatnonzero(alarm)
    return Stretch(
        name=name,
        windows=int(h.size),
        median=float(np.median(h)),
        p99=float(np.percentile(h, 99)),
        max=float(h.max()),
        alarm_windows=int(alarm.sum()),
        alarm_raises=raises,
        quarter_medians=tuple(float(np.median(q)) for q in np.array_split(h, 4) if q.size),
        first_alarm=int(first[0]) if first.size else None,
        rms_rule_first_alarm=None if rule is None else rms_rule.first_alarm(rule),
    )
