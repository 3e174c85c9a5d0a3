"""The classic rule gruwatch is measured against: log RMS above the sensor's own healthy mean + 6σ.

On the per-sensor baseline's scale (edge_agent.baseline: y = sign(z)·log1p|z|, z in baseline σ) the
rule is `y(log_rms) >= log1p(SIGMA)` for `WINDOWS` windows in a row. `benchmarks/eval_real.py`
scores it beside the GRU on held-out bearings; `trainer.long_life` reports where it fires under a
slow drift.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

SIGMA: Final = 6.0
WINDOWS: Final = 3
LEVEL: Final = math.log1p(SIGMA)


def first_alarm(y_log_rms: np.ndarray) -> int | None:
    """Index of the first window at which the rule's alarm stands (the WINDOWS-th in a row), or None."""
    above = np.asarray(y_log_rms) >= LEVEL
    run = 0
    for i, a in enumerate(above):
        run = run + 1 if a else 0
        if run >= WINDOWS:
            return i
    return None
