"""Degradation model of one machine's bearing: run-in, a random fault onset, and severity growth to failure.

A machine's life has three phases (see docs/simulator.md for the references):

1. run-in: for the first minutes after install the broadband level is raised and decays exponentially
   (FEMTO/PRONOSTIA records often start louder than their mid-life, Nectoux et al. 2012);
2. healthy life: stationary vibration until a random onset time;
3. degradation: a severity ``s(t)`` grows from 0 at onset to 1.0 at failure following a normalised
   exponential, ``s = expm1(b·u) / expm1(b)`` with ``u = (t − onset) / (failure − onset)`` and a
   per-machine shape ``b`` (exponential health-indicator growth as in Gebraeel et al. 2005 and most
   run-to-failure records: flat for long, then a sharp rise).

Severity is the share of the failure-level fault power present in the signal: at ``s`` the signal carries
``s · (R² − 1)`` times the healthy power on top of the healthy level, where ``R`` (per machine, 4–7) is the
end-of-life RMS ratio. Failure (``s = 1.0``) is therefore also an amplitude criterion: the expected
window RMS reaches ``R`` times its healthy level (a FEMTO-like 0.35 g sensor ends near 2 g RMS with peaks
of 15–20 g, where PRONOSTIA stopped its tests at 20 g).

Everything scales with the horizon so short test horizons still contain whole lives. Healthy machines
never fail; a faulty machine whose failure would fall past the horizon is censored (``failure_s`` None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FAULTS: tuple[str, ...] = ("outer", "inner", "ball", "cage")
"""Fault types a degrading machine can have; "healthy" machines have none."""

FAULT_WEIGHTS: dict[str, float] = {"outer": 0.35, "inner": 0.3, "ball": 0.2, "cage": 0.15}
"""Relative frequency of each fault type (outer-race faults are the most common in practice)."""

HEALTHY = "healthy"


@dataclass(frozen=True)
class Degradation:
    """One machine's life: fault type, onset, failure and how the fault grows. Times in s since install."""

    fault: str
    onset_s: float | None
    failure_s: float | None
    growth_s: float
    shape: float
    eol_rms_ratio: float
    broadband_share: float
    run_in_gain: float
    run_in_tau_s: float

    def severity(self, t: float) -> float:
        """Fault severity at ``t`` seconds since install: 0 before onset, 1.0 at failure (clipped)."""
        if self.onset_s is None or t < self.onset_s:
            return 0.0
        u = min((t - self.onset_s) / self.growth_s, 1.0)
        return float(math.expm1(self.shape * u) / math.expm1(self.shape))

    def fault_power(self, severity: float) -> float:
        """Added fault power at ``severity``, in units of the healthy power: s · (R² − 1)."""
        return severity * (self.eol_rms_ratio**2 - 1.0)

    def run_in_factor(self, t: float) -> float:
        """Multiplier of the healthy broadband amplitude at ``t``: 1 + g·exp(−t/τ)."""
        return 1.0 + self.run_in_gain * math.exp(-t / self.run_in_tau_s)


def draw_degradation(
    rng: np.random.Generator,
    *,
    horizon_s: float,
    interval_s: float,
    healthy: bool,
    faults: tuple[str, ...] = FAULTS,
) -> Degradation:
    """Draw one machine's life. Onset ~ U(0.15, 0.5)·horizon, growth ~ 0.3·horizon·LogNormal(0, 0.35).

    Failure is snapped to the window grid so that the last window of a failing run has severity 1.0
    exactly; a failure past the horizon is censored (``failure_s`` None, the run ends at the horizon).
    """
    for fault in faults:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault type {fault!r}; choose from {', '.join(FAULTS)}")
    if not faults and not healthy:
        raise ValueError("no fault types to choose from")
    # Draw every number whatever the branch, so one machine's draws never shift another's.
    weights = np.array([FAULT_WEIGHTS[f] for f in faults] or [1.0])
    pick = int(rng.choice(len(weights), p=weights / weights.sum()))
    onset = float(rng.uniform(0.15, 0.5)) * horizon_s
    growth = 0.3 * horizon_s * float(np.exp(0.35 * rng.standard_normal()))
    shape = float(rng.uniform(2.0, 5.0))
    eol_ratio = float(rng.uniform(4.0, 7.0))
    share = float(rng.uniform(0.2, 0.45))
    run_in_gain = float(rng.uniform(0.2, 0.8))
    run_in_tau = float(rng.uniform(0.01, 0.04)) * horizon_s
    common = {
        "shape": shape,
        "eol_rms_ratio": eol_ratio,
        "run_in_gain": run_in_gain,
        "run_in_tau_s": max(run_in_tau, interval_s),
    }
    if healthy:
        return Degradation(
            fault=HEALTHY, onset_s=None, failure_s=None, growth_s=growth, broadband_share=share, **common
        )
    fault = faults[pick]
    if fault == "cage":
        # A failing cage shows more as modulated broadband than as sharp impacts (few hits per turn).
        share = 0.75 + 0.35 * (share - 0.2)
    # Onset and failure on the window grid; at least two windows of growth.
    onset = math.ceil(onset / interval_s) * interval_s
    k_fail = max(math.ceil((onset + growth) / interval_s), round(onset / interval_s) + 2)
    failure: float | None = k_fail * interval_s
    growth = k_fail * interval_s - onset
    last_t = math.floor(horizon_s / interval_s + 1e-9) * interval_s
    if failure is not None and failure > last_t + 1e-9:
        failure = None
    return Degradation(
        fault=fault, onset_s=onset, failure_s=failure, growth_s=growth, broadband_share=share, **common
    )
