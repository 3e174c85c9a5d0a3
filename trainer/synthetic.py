"""Synthetic failures for run-to-failure training: healthy stretches of real runs given a made-up ending.

A run-to-failure data set holds a handful of failures (FEMTO's shared set: four bearings, so a
leave-one-out model learns from two or three). A recurrent model fitted to so few endings learns
their particulars — which band happened to move on which bearing — and misses the next bearing's.
What every failure shares is the prior a vibration analyst brings: the *level* features (log RMS,
log peak, band powers) of the sensor rise far above its own healthy baseline and keep rising.

`synthetic_failures` teaches that prior from the data itself. For each training run it takes
`per_run` healthy prefixes (cut at a random healthy window after the sensor's baseline is learned, at least one horizon
before its last healthy window)
and, over their last `horizon` windows, adds a rising deviation to a random share (30–100 %) of the
level features, 6–40 baseline standard deviations at the end (log-uniform per feature; the rise
starts at 30 % of that). Those windows are labelled degraded; the rest of the prefix keeps its real,
healthy targets. The real run's own healthy history — including steps in a few bands that did not
lead to a failure (FEMTO Bearing2_1 and 2_2) — stays in the prefix, so the model also learns that a
step in one or two bands is not yet a failure.

The features must be baseline-normalised (`edge_agent.baseline`: y = sign(z)·log1p|z|, z in baseline
standard deviations); the deviation is added in z and mapped back. Deterministic in `seed`. Training
only: the agent never sees these sequences, and the bundle declares nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.features import FeatureSpec
from trainer.sequences import FeatureSequence
from trainer.train import TrainConfig

SHARE = (0.3, 1.0)  # share of the level features that move in one synthetic failure
STEP_SHARE = (0.05, 0.4)  # share of the level features in one lasting healthy step
SIGMA = (6.0, 40.0)  # their deviation at the end, in baseline standard deviations (log-uniform)
RAMP_START = 0.3  # the deviation at the first degraded window, as a share of the final one
MARGIN_WINDOWS = 10  # a prefix keeps at least this many baseline-ready healthy windows before its ending


def level_features(names: Sequence[str]) -> np.ndarray:
    """Indices of the level features (log RMS, log peak, log band powers): those named log_*."""
    return np.flatnonzero([n.startswith("log_") for n in names])


def _eligible_runs(
    seqs: Sequence[FeatureSequence], names: Sequence[str], horizon_s: float, per_run: int
) -> tuple[np.ndarray, list[tuple[FeatureSequence, int, int, int]]]:
    """The level-feature columns and, per run a generator can use, (run, horizon in windows, first
    baseline-ready window, last healthy window). Nothing when there is nothing to generate.
    """
    cols = level_features(names)
    if per_run <= 0 or horizon_s <= 0 or cols.size == 0:
        return cols, []
    runs: list[tuple[FeatureSequence, int, int, int]] = []
    for s in seqs:
        if len(s) < 2 or s.interval_s <= 0:
            continue
        n_horizon = max(round(horizon_s / s.interval_s), 3)
        ready = np.flatnonzero(np.any(s.features != 0.0, axis=1))  # the baseline gives zeros while learning
        healthy = np.flatnonzero(s.target == 0)
        if ready.size and healthy.size:
            runs.append((s, n_horizon, int(ready[0]), int(healthy[-1])))
    return cols, runs


def _variant(s: FeatureSequence, tag: str, z: np.ndarray, target: np.ndarray) -> FeatureSequence:
    """A made-up copy of the first len(z) windows of `s`: features from z (baseline σ) mapped back."""
    n = z.shape[0]
    return FeatureSequence(
        run_id=f"{s.run_id}#{tag}",
        machine=s.machine,
        source=s.source,
        features=(np.sign(z) * np.log1p(np.abs(z))).astype(np.float32),
        ts=s.ts[:n].copy(),
        target=target.astype(np.float32),
        fault=s.fault[:n].copy(),
    )


def synthetic_failures(
    seqs: Sequence[FeatureSequence],
    names: Sequence[str],
    horizon_s: float,
    per_run: int,
    seed: int,
) -> list[FeatureSequence]:
    """`per_run` synthetic failures from each run's healthy, baseline-ready windows (module docstring).

    Runs too short for a healthy prefix plus an ending of `horizon_s` are skipped.
    """
    cols, runs = _eligible_runs(seqs, names, horizon_s, per_run)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    out: list[FeatureSequence] = []
    for s, n_end, first_ready, last_healthy in runs:
        lo, hi = first_ready + n_end + MARGIN_WINDOWS, last_healthy - n_end
        if hi <= lo:
            continue
        for k in range(per_run):
            end = int(rng.integers(lo, hi))
            y = s.features[:end].astype(np.float64)
            z = np.sign(y) * np.expm1(np.abs(y))
            n_move = max(1, round(rng.uniform(*SHARE) * cols.size))
            moved = rng.choice(cols, size=n_move, replace=False)
            final = np.exp(rng.uniform(np.log(SIGMA[0]), np.log(SIGMA[1]), size=n_move))
            ramp = RAMP_START + (1.0 - RAMP_START) * np.linspace(0.0, 1.0, n_end)
            z[end - n_end :, moved] += ramp[:, None] * final[None, :]
            target = s.target[:end].copy()
            target[end - n_end :] = 1.0
            out.append(_variant(s, f"synthetic{k}", z, target))
    return out


def synthetic_steps(
    seqs: Sequence[FeatureSequence],
    names: Sequence[str],
    horizon_s: float,
    per_run: int,
    seed: int,
) -> list[FeatureSequence]:
    """`per_run` copies of each run with a lasting step in a few level features (healthy, not a failure).

    At a random healthy window in the first half of the run, a random 5–40 % of the level features
    step up by 6–40 baseline σ and stay there to the end of the run (the real failure, if any, rides
    on top). The first horizon of windows after the step is unlabelled (NaN: it could be the start of
    a failure); later windows keep their real targets. FEMTO Bearing2_1 and 2_2 do this: a step in
    RMS and the 7–13 kHz bands at 15–25 % of life, then hours at that level before the failure.
    """
    cols, runs = _eligible_runs(seqs, names, horizon_s, per_run)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(8,)))
    out: list[FeatureSequence] = []
    for s, n_settle, first_ready, last_healthy in runs:
        lo, hi = first_ready + MARGIN_WINDOWS, min(len(s) // 2, last_healthy - 2 * n_settle)
        if hi <= lo:
            continue
        for k in range(per_run):
            at = int(rng.integers(lo, hi))
            y = s.features.astype(np.float64)
            z = np.sign(y) * np.expm1(np.abs(y))
            n_move = max(1, round(rng.uniform(*STEP_SHARE) * cols.size))
            moved = rng.choice(cols, size=n_move, replace=False)
            size = np.exp(rng.uniform(np.log(SIGMA[0]), np.log(SIGMA[1]), size=n_move))
            z[at:, moved] += size[None, :]
            target = s.target.copy()
            target[at : at + n_settle] = np.nan
            out.append(_variant(s, f"step{k}", z, target))
    return out


def training_failures(
    train_seqs: Sequence[FeatureSequence], spec: FeatureSpec, cfg: TrainConfig, *, rank: int = 0
) -> list[FeatureSequence]:
    """The synthetic failures `cfg` asks for (none without a per-sensor baseline or a horizon).

    Under torchrun each process makes them from its own shard of the training runs (`rank` varies
    the seed), so the union is the same kind of set as in one process.
    """
    if spec.baseline is None or not cfg.horizon_s:
        return []
    seed = cfg.seed + 1000 * rank
    horizon = float(cfg.horizon_s)
    return [
        *synthetic_failures(train_seqs, spec.names, horizon, cfg.synthetic_failures, seed),
        *synthetic_steps(train_seqs, spec.names, horizon, cfg.synthetic_steps, seed),
    ]
