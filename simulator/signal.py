"""Synthesis of one vibration window of a rolling-element bearing, in g, vectorised with numpy.

The model (references in docs/simulator.md) is the standard one of McFadden & Smith (1984) and
Randall & Antoni (2011): each passage of a rolling element over a localised defect is a short impulse that
rings the structure's resonances (decaying sinusoids), at the defect frequency (BPFO, BPFI, 2×BSF, FTF
from `edge_agent.bearing`), amplitude-modulated by the load zone (inner race by the shaft, a ball by the
cage), with 1–2 % random slip of each interval (Antoni & Randall 2002). Added to it: shaft harmonics
(unbalance, misalignment), broadband noise shaped by the same resonances, the sensor's gain error and the
quantisation and clipping of a 16-bit ADC.

`synthesize` is the hot path: no Python loop over samples or impulses; each impulse is a precomputed
kernel placed with `np.bincount`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_agent.bearing import PRESETS as BEARINGS
from edge_agent.bearing import BearingGeometry

ADC_BITS = 16
ADC_FULL_SCALE_G = 32.0
"""±32 g on 16 bits: 2⁻¹⁰ g ≈ 0.98 mg per count, a power of two so samples are exact int16 × scale."""

JITTER = 0.1
"""Relative standard deviation of each impulse's amplitude (surface roughness, slip of the contact)."""


@dataclass(frozen=True)
class RigPreset:
    """A test rig: its bearing, nominal shaft speed, healthy noise level and structural resonances."""

    name: str
    geometry: BearingGeometry
    rpm: float
    noise_rms_g: tuple[float, float]
    resonances_hz: tuple[tuple[float, float], ...]
    description: str


RIG_PRESETS: dict[str, RigPreset] = {
    "femto_6804": RigPreset(
        name="femto_6804",
        geometry=BEARINGS["femto_6804"],
        rpm=1800.0,
        noise_rms_g=(0.25, 0.45),
        resonances_hz=((2500.0, 4500.0), (5500.0, 8000.0), (9000.0, 11000.0)),
        description="PRONOSTIA-like accelerated life rig (NSK 6804, 1800 rpm, ~0.35 g healthy RMS)",
    ),
    "cwru_6205": RigPreset(
        name="cwru_6205",
        geometry=BEARINGS["cwru_6205"],
        rpm=1797.0,
        noise_rms_g=(0.05, 0.09),
        resonances_hz=((2500.0, 3800.0), (1200.0, 2000.0), (4200.0, 5200.0)),
        description="CWRU drive-end motor rig (SKF 6205, 1797 rpm at 0 hp, ~0.07 g healthy RMS)",
    ),
}


@dataclass(frozen=True, eq=False)
class SensorPhysics:
    """Everything fixed about one sensor on one machine; drawn once, then used for every window."""

    fs: float
    window: int
    noise_rms_g: float
    harmonics_g: tuple[float, ...]
    resonances_hz: tuple[float, ...]
    damping: tuple[float, ...]
    mode_weights: tuple[float, ...]
    gain: float
    adc_scale: float
    slip: float
    modulation_depth: float
    ball_alternation: float
    kernel: np.ndarray  # unit-energy impulse response of the resonances, float64 [K]
    noise_filter: np.ndarray  # rFFT gains shaping white noise to unit variance, float64 [window//2+1]

    @property
    def healthy_power(self) -> float:
        """Mean square (g²) of a healthy window without run-in: broadband plus shaft harmonics."""
        return self.noise_rms_g**2 + sum(a * a for a in self.harmonics_g) / 2.0


def _mode_kernel(
    fs: float, freqs: tuple[float, ...], zetas: tuple[float, ...], weights: tuple[float, ...]
) -> np.ndarray:
    """Sum of decaying sinusoids, long enough for the slowest mode to decay by 60 dB; unit energy."""
    slowest = min(z * 2 * math.pi * f for f, z in zip(freqs, zetas, strict=True))
    n = min(max(math.ceil(6.9 / slowest * fs), 8), 4096)
    tau = np.arange(n) / fs
    k = np.zeros(n)
    for f, z, w in zip(freqs, zetas, weights, strict=True):
        wn = 2 * math.pi * f
        k += w * np.exp(-z * wn * tau) * np.sin(wn * math.sqrt(1 - z * z) * tau)
    return k / math.sqrt(float(np.sum(k * k)))


def _noise_filter(
    fs: float, window: int, freqs: tuple[float, ...], zetas: tuple[float, ...], weights: tuple[float, ...]
) -> np.ndarray:
    """rFFT gains: a flat floor plus the resonances' response, DC removed, scaled to unit output variance."""
    f = np.fft.rfftfreq(window, 1.0 / fs)
    resp = np.zeros_like(f)
    for fn, z, w in zip(freqs, zetas, weights, strict=True):
        r = f / fn
        resp += w * w / ((1 - r * r) ** 2 + (2 * z * r) ** 2)
    power = 1.0 + 3.0 * resp / resp.max()
    power[0] = 0.0  # accelerometers are AC-coupled
    c = np.full(f.shape, 2.0)
    c[0] = 1.0
    if window % 2 == 0:
        c[-1] = 1.0
    gains: np.ndarray = np.sqrt(power) / math.sqrt(float(np.sum(c * power)) / window)
    return gains


def draw_sensor_physics(
    rng: np.random.Generator, preset: RigPreset, *, fs: float, window: int
) -> SensorPhysics:
    """Draw one sensor's constants: noise level, harmonics, 1–3 resonances below 0.42·fs, gain, slip."""
    noise = float(rng.uniform(*preset.noise_rms_g))
    a1 = noise * float(rng.uniform(0.1, 0.25))
    harmonics = (a1, a1 * float(rng.uniform(0.3, 0.7)), a1 * float(rng.uniform(0.1, 0.4)))
    n_modes = int(rng.integers(1, len(preset.resonances_hz) + 1))
    draws = [float(rng.uniform(lo, hi)) for lo, hi in preset.resonances_hz]
    zetas_all = [float(rng.uniform(0.02, 0.06)) for _ in preset.resonances_hz]
    weights_all = [1.0] + [float(rng.uniform(0.3, 0.8)) for _ in preset.resonances_hz[1:]]
    freqs: list[float] = []
    zetas: list[float] = []
    weights: list[float] = []
    for f, z, w in zip(draws[:n_modes], zetas_all, weights_all, strict=False):
        if f < 0.42 * fs:
            freqs.append(f)
            zetas.append(z)
            weights.append(w)
    if not freqs:  # a low sample rate: keep one resonance the sensor can see
        freqs, zetas, weights = [min(draws[0], 0.3 * fs)], [zetas_all[0]], [1.0]
    gain = float(np.clip(1.0 + 0.03 * rng.standard_normal(), 0.9, 1.1))
    slip = float(rng.uniform(0.01, 0.02))
    depth = float(rng.uniform(0.5, 0.9))
    alternation = float(rng.uniform(0.4, 0.9))
    ft, zt, wt = tuple(freqs), tuple(zetas), tuple(weights)
    return SensorPhysics(
        fs=fs,
        window=window,
        noise_rms_g=noise,
        harmonics_g=harmonics,
        resonances_hz=ft,
        damping=zt,
        mode_weights=wt,
        gain=gain,
        adc_scale=ADC_FULL_SCALE_G / 2 ** (ADC_BITS - 1),
        slip=slip,
        modulation_depth=depth,
        ball_alternation=alternation,
        kernel=_mode_kernel(fs, ft, zt, wt),
        noise_filter=_noise_filter(fs, window, ft, zt, wt),
    )


def defect_frequency(geometry: BearingGeometry, fault: str, rpm: float) -> float:
    """Rate (Hz) at which the defect of `fault` produces impacts: BPFO, BPFI, 2×BSF or FTF."""
    if fault == "outer":
        return geometry.bpfo(rpm)
    if fault == "inner":
        return geometry.bpfi(rpm)
    if fault == "ball":
        return 2.0 * geometry.bsf(rpm)
    if fault == "cage":
        return geometry.ftf(rpm)
    raise ValueError(f"no defect frequency for fault {fault!r}")


def _impulses(
    phys: SensorPhysics,
    geometry: BearingGeometry,
    rng: np.random.Generator,
    *,
    fault: str,
    rpm: float,
    power: float,
) -> np.ndarray:
    """Impulse train at the defect rate with slip and load-zone modulation, ringing the resonances.

    Scaled so that its expected mean square is `power` (g²): each impulse carries kernel energy 1, so
    the power is rate/fs · E[A²] · a².
    """
    fs, n, kernel = phys.fs, phys.window, phys.kernel
    k_len = kernel.size
    rate = defect_frequency(geometry, fault, rpm)
    period = fs / rate  # samples between impacts
    # Start far enough before the window that ringing from earlier impacts is present at sample 0.
    count = math.ceil((n + k_len) / period * (1 + 5 * phys.slip)) + 2
    steps = period * (1.0 + phys.slip * rng.standard_normal(count))
    times = -k_len - period * rng.random() + np.cumsum(steps)  # sample index of each impact
    times = times[(times >= -k_len) & (times < n)]
    t_s = times / fs
    phase = 2 * math.pi * rng.random()
    m = phys.modulation_depth
    if fault == "inner":  # defect turns with the shaft through the load zone
        amp = 1.0 + m * np.cos(2 * math.pi * rpm / 60.0 * t_s + phase)
        mean_sq = 1.0 + m * m / 2
    elif fault == "ball":  # ball enters the load zone once per cage turn; hits inner and outer race in turn
        alt = np.where(np.arange(times.size) % 2 == 0, 1.0, phys.ball_alternation)
        amp = (1.0 + m * np.cos(2 * math.pi * geometry.ftf(rpm) * t_s + phase)) * alt
        mean_sq = (1.0 + m * m / 2) * (1.0 + phys.ball_alternation**2) / 2
    else:  # outer race: fixed defect, constant load; cage: one knock per cage turn
        amp = np.ones_like(t_s)
        mean_sq = 1.0
    amp = amp * (1.0 + JITTER * rng.standard_normal(times.size))
    mean_sq *= 1.0 + JITTER**2
    a = math.sqrt(power / (rate / fs * mean_sq))
    start = np.rint(times).astype(np.int64) + k_len  # index into a buffer that begins k_len before sample 0
    idx = start[:, None] + np.arange(k_len)[None, :]
    buf = np.bincount(
        idx.ravel(), weights=(a * amp[:, None] * kernel[None, :]).ravel(), minlength=n + 2 * k_len
    )
    return buf[k_len : k_len + n]


def synthesize(
    phys: SensorPhysics,
    geometry: BearingGeometry,
    rng: np.random.Generator,
    *,
    rpm: float,
    fault: str,
    fault_power: float,
    broadband_share: float,
    level: float,
) -> np.ndarray:
    """One window in g (float32, quantised by the ADC).

    `fault_power` is the added fault power in units of the healthy power (0 for a healthy window);
    `broadband_share` of it goes to extra broadband noise (spreading damage), the rest to the impulse
    train. `level` multiplies the healthy broadband amplitude (run-in, slow wander).
    """
    n, fs = phys.window, phys.fs
    t = np.arange(n) / fs
    fr = rpm / 60.0
    p0 = phys.healthy_power
    extra = max(fault_power, 0.0) * p0
    broadband = broadband_share * extra if fault != "healthy" else 0.0
    spectrum = np.fft.rfft(rng.standard_normal(n)) * phys.noise_filter
    unit_noise = np.fft.irfft(spectrum, n=n)
    healthy_sigma = phys.noise_rms_g * level
    if fault == "cage" and broadband > 0.0:
        m = phys.modulation_depth
        mod = 1.0 + m * np.cos(2 * math.pi * fr * geometry.ftf_order * t + 2 * math.pi * rng.random())
        sigma = np.sqrt(healthy_sigma**2 + broadband * mod * mod / (1.0 + m * m / 2))
        x = unit_noise * sigma
    else:
        x = unit_noise * math.sqrt(healthy_sigma**2 + broadband)
    phases = 2 * math.pi * rng.random(len(phys.harmonics_g))
    for h, (a_h, ph) in enumerate(zip(phys.harmonics_g, phases, strict=True), start=1):
        x += a_h * np.sin(2 * math.pi * h * fr * t + ph)
    impulsive = extra - broadband
    if fault != "healthy" and impulsive > 0.0:
        x += _impulses(phys, geometry, rng, fault=fault, rpm=rpm, power=impulsive)
    counts = np.clip(
        np.rint(x * (phys.gain / phys.adc_scale)), -(2 ** (ADC_BITS - 1)), 2 ** (ADC_BITS - 1) - 1
    )
    return (counts * phys.adc_scale).astype(np.float32)
