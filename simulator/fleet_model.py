"""A simulated fleet: one `SensorRun` per sensor of each machine, whose windows are computed on demand.

`build_fleet` draws every machine's bearing life (fault type, onset, failure; simulator/degradation.py)
and every sensor's physics (noise, resonances, gain; simulator/signal.py) from one seed. Window ``k`` of a
run is a pure function of (seed, machine, sensor, k): its random generator is seeded from
``np.random.SeedSequence(seed, spawn_key=(3, machine, sensor, k))``, so the dataset writer and the live
fleet publisher produce the same samples, in any order, without holding a run in memory.

>>> runs = build_fleet(2, seed=1, horizon_s=600.0, window=1024)
>>> x, labels = runs[0].window(0)
>>> x.dtype, x.shape, labels.severity
(dtype('float32'), (1024,), 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_agent.bearing import BearingGeometry
from simulator.degradation import FAULTS, HEALTHY, Degradation, draw_degradation
from simulator.signal import RIG_PRESETS, SensorPhysics, draw_sensor_physics, synthesize

DEFAULT_HORIZON_S = 3 * 3600.0
"""Three hours: at 10 s per window, lives of 1–3 h like the FEMTO/PRONOSTIA accelerated tests."""

DEFAULT_HEALTHY_FRACTION = 0.2
DEFAULT_PRESET = "femto_6804"

# Domains of the seed tree: SeedSequence(seed, spawn_key=(domain, machine[, sensor[, window]])).
_MACHINE, _SENSOR, _WINDOW = 1, 2, 3


@dataclass(frozen=True)
class WindowLabels:
    """Ground truth for one window."""

    fault: str  # "healthy" before onset (and for healthy machines), else the run's fault type
    severity: float  # 0 before onset, 1.0 = failure criterion
    rul_s: float  # remaining life in s; inf if the run does not fail within its horizon
    failed: bool  # True on the window at which the failure criterion is reached (the run's last)


@dataclass(frozen=True)
class SpeedProfile:
    """Optional slow shaft-speed variation within a run: rpm·(1 + depth·sin(2π t / period + phase))."""

    depth: float = 0.0
    period_s: float = 3600.0
    phase: float = 0.0

    def factor(self, t: float) -> float:
        if self.depth == 0.0:
            return 1.0
        return 1.0 + self.depth * math.sin(2 * math.pi * t / self.period_s + self.phase)


@dataclass(frozen=True)
class SensorRun:
    """One sensor of one machine from install to failure (or the horizon). Windows are made on demand.

    The shared interface named both the window length (`window: int`) and the sample method
    (`window(k)`) "window"; a dataclass cannot hold both, so the length is `window_length`.
    """

    machine: str
    sensor: str
    fault: str  # "healthy" for machines that never fail
    fs: float
    rpm: float  # the run's nominal shaft speed; see rpm_at for speed variation
    geometry: BearingGeometry
    onset_s: float | None
    failure_s: float | None
    interval_s: float
    window_length: int  # samples per window (the shared interface's `window: int`, renamed: see below)
    n_windows: int
    seed: int
    # Beyond the shared interface: what window() needs.
    machine_index: int
    sensor_index: int
    degradation: Degradation
    physics: SensorPhysics
    speed: SpeedProfile
    wander_depth: float = 0.0
    wander_period_s: float = 3600.0
    wander_phase: float = 0.0

    def t(self, k: int) -> float:
        """Seconds since install of window k."""
        return k * self.interval_s

    def rpm_at(self, k: int) -> float:
        """Shaft speed during window k (equal to `rpm` unless the fleet was built with speed variation)."""
        return self.rpm * self.speed.factor(self.t(k))

    @property
    def adc_scale(self) -> float:
        """g per ADC count: every sample is an exact int16 count times this (lossless int16 encoding)."""
        return self.physics.adc_scale

    def labels(self, k: int) -> WindowLabels:
        """Ground truth of window k, without synthesising its samples."""
        self._check(k)
        t = self.t(k)
        deg = self.degradation
        severity = deg.severity(t)
        fault = self.fault if deg.onset_s is not None and t >= deg.onset_s else HEALTHY
        if self.failure_s is None:
            return WindowLabels(fault, severity, math.inf, False)
        rul = max(self.failure_s - t, 0.0)
        return WindowLabels(fault, severity, rul, k == self.n_windows - 1)

    def window(self, k: int) -> tuple[np.ndarray, WindowLabels]:
        """Samples of window k (float32 [window], g) and its labels; independent of every other window."""
        labels = self.labels(k)
        t = self.t(k)
        deg = self.degradation
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(_WINDOW, self.machine_index, self.sensor_index, k))
        )
        wander = 1.0 + self.wander_depth * math.sin(
            2 * math.pi * t / self.wander_period_s + self.wander_phase
        )
        # Per-window fluctuation of the fault's strength (load, lubricant, debris): ±10 % in power.
        power = deg.fault_power(labels.severity) * float(np.exp(0.1 * rng.standard_normal()))
        x = synthesize(
            self.physics,
            self.geometry,
            rng,
            rpm=self.rpm_at(k),
            fault=labels.fault,
            fault_power=power,
            broadband_share=deg.broadband_share,
            level=deg.run_in_factor(t) * wander,
        )
        return x, labels

    def _check(self, k: int) -> None:
        if not 0 <= k < self.n_windows:
            raise IndexError(
                f"window {k} out of range: run {self.machine}/{self.sensor} has {self.n_windows}"
            )


def build_fleet(
    machines: int,
    seed: int,
    *,
    fs: float = 25600.0,
    window: int = 2560,
    interval_s: float = 10.0,
    horizon_s: float = DEFAULT_HORIZON_S,
    sensors: int = 1,
    healthy_fraction: float = DEFAULT_HEALTHY_FRACTION,
    preset: str = DEFAULT_PRESET,
    faults: tuple[str, ...] = FAULTS,
    speed_variation: float = 0.0,
) -> list[SensorRun]:
    """Draw a fleet of `machines` machines × `sensors` sensors, deterministic in `seed`.

    Machine i is healthy with probability `healthy_fraction` (never fails); otherwise it gets a fault
    from `faults`. Each machine runs near the preset's nominal speed (±1 % s.d., within ±3 %), and with
    `speed_variation` > 0 its speed also swings slowly by that fraction during the run. Sensors of one
    machine share its life and differ in noise, resonances and gain.
    """
    if machines < 1 or sensors < 1:
        raise ValueError("need at least one machine and one sensor")
    if fs <= 0 or window < 16 or interval_s <= 0 or horizon_s < interval_s:
        raise ValueError("need fs > 0, window >= 16, interval_s > 0 and horizon_s >= interval_s")
    if window / fs > interval_s:
        raise ValueError(
            f"a window of {window} samples at {fs} Hz lasts longer than the interval {interval_s} s"
        )
    if not 0.0 <= healthy_fraction <= 1.0:
        raise ValueError("healthy_fraction must be within [0, 1]")
    if not 0.0 <= speed_variation < 0.5:
        raise ValueError("speed_variation is a fraction of the nominal speed, within [0, 0.5)")
    rig = RIG_PRESETS.get(preset)
    if rig is None:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(sorted(RIG_PRESETS))}")
    n_horizon = math.floor(horizon_s / interval_s + 1e-9) + 1
    runs: list[SensorRun] = []
    for m in range(machines):
        mrng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_MACHINE, m)))
        healthy = bool(mrng.random() < healthy_fraction) or not faults
        deg = draw_degradation(
            mrng, horizon_s=horizon_s, interval_s=interval_s, healthy=healthy, faults=faults or FAULTS
        )
        rpm = rig.rpm * float(np.clip(1.0 + 0.01 * mrng.standard_normal(), 0.97, 1.03))
        speed = SpeedProfile(
            depth=speed_variation,
            period_s=float(mrng.uniform(0.2, 0.6)) * horizon_s,
            phase=float(mrng.uniform(0.0, 2 * math.pi)),
        )
        n_windows = n_horizon if deg.failure_s is None else round(deg.failure_s / interval_s) + 1
        for s in range(sensors):
            srng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SENSOR, m, s)))
            physics = draw_sensor_physics(srng, rig, fs=fs, window=window)
            runs.append(
                SensorRun(
                    machine=f"m{m:03d}",
                    sensor=f"s{s}",
                    fault=deg.fault,
                    fs=float(fs),
                    rpm=rpm,
                    geometry=rig.geometry,
                    onset_s=deg.onset_s,
                    failure_s=deg.failure_s,
                    interval_s=float(interval_s),
                    window_length=int(window),
                    n_windows=int(n_windows),
                    seed=int(seed),
                    machine_index=m,
                    sensor_index=s,
                    degradation=deg,
                    physics=physics,
                    speed=speed,
                    wander_depth=float(srng.uniform(0.02, 0.08)),
                    wander_period_s=float(srng.uniform(0.2, 0.6)) * horizon_s,
                    wander_phase=float(srng.uniform(0.0, 2 * math.pi)),
                )
            )
    return runs
