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

from edge_agent.scorer import Scorer
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


def long_life(scorer: Scorer, runs: list[Run], extra: int, *, seed: int = 0) -> dict[str, list[Stretch]]:
    """Score every run through first half → `extra` healthy windows → second half, all runs in step."""
    from edge_agent.protocol import Window

    rng = np.random.default_rng(seed)
    plans: list[tuple[str, np.ndarray, np.ndarray, int]] = []
    for run in runs:
        n = run.n_windows
        half = n // 2
        if half <= RUN_IN:
            raise ValueError(
                f"{run.run_id}: {n} windows, too short to draw healthy ones after a run-in of {RUN_IN}"
            )
        windows = [Window(k, 0, run.fs, run.rpm, run.windows[k]) for k in range(n)]
        feats = scorer.features_of(windows)
        order = np.concatenate([np.arange(half), rng.integers(RUN_IN, half, extra), np.arange(half, n)])
        plans.append((run.run_id, feats, order, half))
    steps = max(len(order) for _, _, order, _ in plans)
    health = {rid: np.empty(len(order), np.float32) for rid, _, order, _ in plans}
    states = {rid: np.empty(len(order), dtype=object) for rid, _, order, _ in plans}
    for k in range(steps):
        live = [p for p in plans if k < len(p[2])]
        batch = scorer.score_features(
            [rid for rid, *_ in live],
            np.stack([feats[order[k]] for _, feats, order, _ in live]),
            seqs=[k] * len(live),
            ts_ns=[10**18 + k * 10**10] * len(live),  # one snapshot every 10 s: never a gap reset
        )
        for i, (rid, *_) in enumerate(live):
            health[rid][k] = batch.health[i]
            states[rid][k] = batch.states[i]
    out: dict[str, list[Stretch]] = {}
    for rid, _, order, half in plans:
        bounds = [
            ("first half", 0, half),
            ("long healthy", half, half + extra),
            ("second half", half + extra, len(order)),
        ]
        out[rid] = [_stretch(name, health[rid][a:b], states[rid][a:b]) for name, a, b in bounds if b > a]
    return out


def _stretch(name: str, h: np.ndarray, s: np.ndarray) -> Stretch:
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
    )
