"""Physics of the simulator checked the way a vibration analyst would: envelope spectra, kurtosis, RMS trends.

Envelope analysis (Randall & Antoni 2011): band-pass around the structural resonance the impacts excite,
take the Hilbert envelope, and look for the defect frequency in its spectrum. Windows of 1.28 s
(32,768 samples at 25.6 kHz) give 0.8 Hz resolution, fine enough to tell 2 % from the truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import butter, hilbert, sosfiltfilt

from edge_agent.bearing import PRESETS as BEARINGS
from simulator.fleet_model import SensorRun, build_fleet

LONG = 32768


def _kurtosis(x: np.ndarray) -> float:
    x = x.astype(np.float64) - x.mean()
    return float(np.mean(x**4) / np.mean(x**2) ** 2)


def _rms(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.sqrt(np.mean((x - x.mean()) ** 2)))


def _envelope_spectrum(run: SensorRun, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fs = run.fs
    f0 = run.physics.resonances_hz[0]
    sos = butter(4, [0.75 * f0, min(1.25 * f0, 0.49 * fs)], btype="band", fs=fs, output="sos")
    env = np.abs(hilbert(sosfiltfilt(sos, x.astype(np.float64))))
    env -= env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(env.size)))
    return np.fft.rfftfreq(env.size, 1.0 / fs), spec


def _degraded_window(run: SensorRun, severity: float) -> tuple[int, np.ndarray]:
    k = next(k for k in range(run.n_windows) if run.labels(k).severity >= severity)
    x, labels = run.window(k)
    assert labels.fault == run.fault
    return k, x


def _faulty_run(fault: str, seed: int, preset: str = "femto_6804", fs: float = 25600.0) -> SensorRun:
    (run,) = build_fleet(
        1,
        seed,
        fs=fs,
        window=LONG,
        horizon_s=3600.0,
        healthy_fraction=0.0,
        faults=(fault,),
        preset=preset,
    )
    assert run.fault == fault
    assert run.failure_s is not None or run.onset_s is not None
    return run


def _peak(f: np.ndarray, spec: np.ndarray, lo: float, hi: float) -> float:
    band = (f >= lo) & (f <= hi)
    return float(f[band][np.argmax(spec[band])])


@pytest.mark.parametrize(
    ("preset", "fs", "seed"),
    [("femto_6804", 25600.0, 0), ("femto_6804", 25600.0, 7), ("cwru_6205", 12000.0, 3)],
)
def test_outer_race_fault_envelope_peaks_at_bpfo(preset: str, fs: float, seed: int) -> None:
    run = _faulty_run("outer", seed, preset, fs)
    k, x = _degraded_window(run, 0.2)
    f, spec = _envelope_spectrum(run, x)
    bpfo = run.geometry.bpfo(run.rpm_at(k))
    peak = _peak(f, spec, 5.0, 500.0)
    assert abs(peak - bpfo) / bpfo < 0.02, (peak, bpfo)
    # the geometry is the shared one from edge_agent.bearing
    assert run.geometry == BEARINGS[preset]


@pytest.mark.parametrize("seed", [1, 4])
def test_inner_race_fault_peaks_at_bpfi_with_shaft_sidebands(seed: int) -> None:
    run = _faulty_run("inner", seed)
    k, x = _degraded_window(run, 0.3)
    f, spec = _envelope_spectrum(run, x)
    rpm = run.rpm_at(k)
    bpfi, fr = run.geometry.bpfi(rpm), rpm / 60.0
    # The load-zone modulation also puts a line at 1× shaft speed itself; look above it.
    peak = _peak(f, spec, 2.5 * fr, 500.0)
    assert abs(peak - bpfi) / bpfi < 0.02, (peak, bpfi)
    floor = float(np.median(spec[(f > 5.0) & (f < 500.0)]))
    for side in (bpfi - fr, bpfi + fr):
        near = _peak(f, spec, 0.98 * side, 1.02 * side)
        assert abs(near - side) / side < 0.02
        level = float(spec[np.argmin(np.abs(f - near))])
        assert level > 5 * floor, f"sideband at {side:.1f} Hz is {level / floor:.1f}× the floor"


@pytest.mark.parametrize("seed", [2, 5])
def test_ball_fault_peaks_at_twice_bsf_or_bsf(seed: int) -> None:
    run = _faulty_run("ball", seed)
    k, x = _degraded_window(run, 0.3)
    f, spec = _envelope_spectrum(run, x)
    bsf = run.geometry.bsf(run.rpm_at(k))
    peak = _peak(f, spec, 0.5 * bsf, 3.0 * bsf)
    assert min(abs(peak - 2 * bsf) / (2 * bsf), abs(peak - bsf) / bsf) < 0.02, (peak, bsf)


def test_cage_fault_shows_an_ftf_comb() -> None:
    # One knock per cage turn: a comb of FTF harmonics of similar height, the fundamental among them.
    run = _faulty_run("cage", 6)
    k, x = _degraded_window(run, 0.3)
    f, spec = _envelope_spectrum(run, x)
    ftf = run.geometry.ftf(run.rpm_at(k))
    tolerance = max(0.02 * ftf, 1.5 * run.fs / LONG)
    peak = _peak(f, spec, 5.0, 500.0)
    order = round(peak / ftf)
    assert 1 <= order <= 6, (peak, ftf)
    assert abs(peak - order * ftf) <= order * tolerance, (peak, ftf)
    floor = float(np.median(spec[(f > 5.0) & (f < 500.0)]))
    fundamental = _peak(f, spec, ftf - tolerance, ftf + tolerance)
    assert float(spec[np.argmin(np.abs(f - fundamental))]) > 5 * floor


def test_healthy_windows_are_gaussian_and_faults_impulsive() -> None:
    (healthy,) = build_fleet(1, 3, horizon_s=3600.0, healthy_fraction=1.0)
    assert healthy.fault == "healthy"
    assert healthy.failure_s is None
    assert healthy.onset_s is None
    kurt = [_kurtosis(healthy.window(k)[0]) for k in range(60, healthy.n_windows, 12)]
    assert abs(float(np.mean(kurt)) - 3.0) < 0.15, kurt
    assert all(2.5 < v < 3.6 for v in kurt), kurt
    assert all(healthy.labels(k).severity == 0.0 for k in range(healthy.n_windows))
    run = _faulty_run("outer", 0)
    _, x = _degraded_window(run, 0.5)
    assert _kurtosis(x) > 4.0


@pytest.mark.parametrize("fault", ["outer", "inner", "ball", "cage"])
def test_severity_and_rms_rise_to_failure(fault: str) -> None:
    (run,) = build_fleet(1, 11, horizon_s=3600.0, healthy_fraction=0.0, faults=(fault,))
    assert run.failure_s is not None
    assert run.onset_s is not None
    assert 0 < run.onset_s < run.failure_s <= 3600.0
    labels = [run.labels(k) for k in range(run.n_windows)]
    sev = np.array([lab.severity for lab in labels])
    assert np.all(np.diff(sev) >= 0)
    assert sev[-1] == 1.0
    assert sev[0] == 0.0
    onset_k = round(run.onset_s / run.interval_s)
    assert all(lab.fault == "healthy" for lab in labels[:onset_k])
    assert all(lab.fault == fault for lab in labels[onset_k:])
    assert [lab.failed for lab in labels].count(True) == 1
    assert labels[-1].failed
    rul = np.array([lab.rul_s for lab in labels])
    assert rul[-1] == 0.0
    assert np.allclose(np.diff(rul), -run.interval_s)
    rms = np.array([_rms(run.window(k)[0]) for k in range(run.n_windows)])
    healthy_level = float(np.median(rms[onset_k // 2 : onset_k]))  # after run-in, before onset
    end_level = float(np.mean(rms[-3:]))
    assert end_level > 3.0 * healthy_level, (end_level, healthy_level)
    # RMS trends up over the degradation: last quarter above the first quarter
    deg = rms[onset_k:]
    q = max(len(deg) // 4, 1)
    assert deg[-q:].mean() > 1.5 * deg[:q].mean()
    # run-in: the first windows are louder than mid-life
    assert rms[:3].mean() > healthy_level


def test_windows_are_deterministic_and_independent() -> None:
    a = build_fleet(3, 42, horizon_s=1800.0, window=1024)
    b = build_fleet(3, 42, horizon_s=1800.0, window=1024)
    for ra, rb in zip(a, b, strict=True):
        assert (ra.fault, ra.onset_s, ra.failure_s, ra.rpm, ra.n_windows) == (
            rb.fault,
            rb.onset_s,
            rb.failure_s,
            rb.rpm,
            rb.n_windows,
        )
    run = a[0]
    last = run.n_windows - 1
    x_last, _ = run.window(last)
    x_first, _ = run.window(0)
    assert b[0].window(last)[0].tobytes() == x_last.tobytes()
    assert b[0].window(0)[0].tobytes() == x_first.tobytes()
    assert x_first.tobytes() != run.window(1)[0].tobytes()
    assert a[1].window(0)[0].tobytes() != x_first.tobytes()
    other_seed = build_fleet(3, 43, horizon_s=1800.0, window=1024)[0]
    assert other_seed.window(0)[0].tobytes() != x_first.tobytes()


def test_samples_are_adc_counts_in_g() -> None:
    (run,) = build_fleet(1, 9, horizon_s=600.0, window=2048, healthy_fraction=0.0)
    x, _ = run.window(run.n_windows - 1)
    assert x.dtype == np.float32
    assert x.shape == (2048,)
    counts = x.astype(np.float64) / run.adc_scale
    assert np.array_equal(counts, np.rint(counts))
    assert np.abs(counts).max() <= 32768


def test_fleet_mix_rpm_and_horizon() -> None:
    runs = build_fleet(40, 5, horizon_s=1200.0, interval_s=10.0, window=512, sensors=2)
    assert len(runs) == 80
    assert [r.machine for r in runs[:4]] == ["m000", "m000", "m001", "m001"]
    assert [r.sensor for r in runs[:2]] == ["s0", "s1"]
    faults = {r.fault for r in runs}
    assert {"healthy", "outer", "inner"} <= faults <= {"healthy", "outer", "inner", "ball", "cage"}
    for s0, s1 in zip(runs[::2], runs[1::2], strict=True):
        # sensors share the machine's life but not its noise
        assert (s0.fault, s0.onset_s, s0.failure_s, s0.rpm) == (s1.fault, s1.onset_s, s1.failure_s, s1.rpm)
        assert s0.window(0)[0].tobytes() != s1.window(0)[0].tobytes()
    for r in runs:
        assert 0.97 * 1800 <= r.rpm <= 1.03 * 1800
        assert r.rpm_at(r.n_windows - 1) == r.rpm
        if r.failure_s is None:
            assert r.n_windows == 121
            assert math.isinf(r.labels(0).rul_s)
        else:
            assert r.n_windows == round(r.failure_s / 10.0) + 1 <= 121
    assert len({r.rpm for r in runs}) == 40


def test_speed_variation_moves_the_defect_frequency() -> None:
    (run,) = build_fleet(
        1, 8, window=LONG, horizon_s=3600.0, healthy_fraction=0.0, faults=("outer",), speed_variation=0.1
    )
    speeds = [run.rpm_at(k) for k in range(run.n_windows)]
    assert max(speeds) / min(speeds) > 1.03
    k, x = _degraded_window(run, 0.3)
    f, spec = _envelope_spectrum(run, x)
    bpfo = run.geometry.bpfo(run.rpm_at(k))
    assert abs(_peak(f, spec, 5.0, 500.0) - bpfo) / bpfo < 0.02


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="preset"):
        build_fleet(1, 0, preset="nope")
    with pytest.raises(ValueError, match="longer than the interval"):
        build_fleet(1, 0, window=25600 * 20)
    with pytest.raises(ValueError, match="fault type"):
        build_fleet(1, 0, faults=("rust",), healthy_fraction=0.0)
    (run,) = build_fleet(1, 0, horizon_s=100.0, window=256)
    with pytest.raises(IndexError):
        run.window(run.n_windows)
