"""Health-indicator targets for run-to-failure training: what the loss fits instead of 0/1 labels.

The binary target (degraded := remaining life <= horizon) asks the model for a step at one horizon
that nothing in the signal marks. A health indicator (HI) asks instead for a quantity that grows
towards the failure, so windows before the horizon already count a little:

- `binary` (default): the sequence's own 0/1 target.
- `hi-linear`: the piecewise-linear HI of the prognostics literature, `clip(1 − rul / (cap ×
  horizon), 0, 1)` — 0 until `cap` horizons before the end of life, then a straight rise to 1
  (needs a horizon: `train` refuses it without one, e.g. on simulator onsets).
- `life-fraction`: the share of the run's life elapsed at each window, 0 at its first window and 1
  at its last.

Only sequences whose last window is degraded (a failure at the end: real failing runs, synthetic
failures and the step copies of failing runs) get an HI; every other sequence keeps its target.
Windows whose target is unknown (NaN) stay unknown. The loss uses the HI (`FeatureSequence.
loss_target`, binary cross-entropy with soft targets and no positive-class re-weighting); the
validation metrics and the alarm calibration keep the binary target, so the thresholds still mean
"no false alarm before the horizon".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from trainer.data.runs import DataError
from trainer.sequences import FeatureSequence

HEALTH_TARGETS = ("binary", "hi-linear", "life-fraction")


def check_health_target(kind: str, horizon_s: float | None) -> None:
    """DataError (what to do) when `kind` cannot be fitted: hi-linear needs a horizon to rise over."""
    if kind not in HEALTH_TARGETS:
        raise DataError(f"--health-target must be one of {', '.join(HEALTH_TARGETS)}, not {kind!r}")
    if kind == "hi-linear" and not horizon_s:
        raise DataError(
            "--health-target hi-linear rises over --hi-cap horizons before a failure, but there is no "
            "horizon: give --horizon, or use --health-target binary or life-fraction"
        )


def health_index(seq: FeatureSequence, kind: str, horizon_s: float | None, cap: float) -> np.ndarray:
    """float32 [N]: the loss target of `seq` for target `kind` (module docstring)."""
    if kind not in HEALTH_TARGETS:
        raise ValueError(f"health target must be one of {', '.join(HEALTH_TARGETS)}, not {kind!r}")
    target = seq.target
    if kind == "binary" or len(target) == 0 or target[-1] != 1:
        return target
    ts = np.asarray(seq.ts, np.float64)
    if kind == "hi-linear":
        if not horizon_s or horizon_s <= 0 or cap <= 0:
            raise ValueError("the hi-linear target needs a horizon and a cap > 0")
        hi = np.clip(1.0 - (ts[-1] - ts) / (cap * horizon_s), 0.0, 1.0)
    else:
        life = ts[-1] - ts[0]
        hi = (ts - ts[0]) / life if life > 0 else np.ones_like(ts)
    return np.where(np.isnan(target), np.nan, hi).astype(np.float32)


def with_health_targets(
    seqs: Sequence[FeatureSequence], kind: str, horizon_s: float | None, cap: float
) -> list[FeatureSequence]:
    """Copies of `seqs` whose `loss_target` is their health index (the sequences themselves for binary)."""
    if kind == "binary":
        return list(seqs)
    return [replace(s, loss_target=health_index(s, kind, horizon_s, cap)) for s in seqs]
