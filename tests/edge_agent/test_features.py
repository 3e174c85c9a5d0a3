"""Tests for edge_agent.features: the spec contract, input rejection, and every feature against scipy."""

from __future__ import annotations

import doctest
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.signal
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edge_agent.features as features_module
from edge_agent import spectra
from edge_agent.bearing import PRESETS
from edge_agent.errors import FeatureError, ProtocolError
from edge_agent.features import (
    DEFAULT_BAND_EDGES_HZ,
    DEFAULT_SPEC,
    TIME_FEATURES,
    FeatureSpec,
    extract,
    extract_batch,
)

CWRU = FeatureSpec.with_geometry(PRESETS["cwru_6205"])
FEMTO = FeatureSpec.with_geometry(PRESETS["femto_6804"])


def _idx(spec: FeatureSpec, name: str) -> int:
    return spec.names.index(name)


def _tones(fs: float, n: int, freqs: np.ndarray, amps: np.ndarray, seed: int = 0) -> np.ndarray:
    """A continuous-time sum of sines sampled at fs: the same physical signal at any fs and length."""
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(freqs))
    t = np.arange(n) / fs
    return (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None])).sum(0)


def _impacts(fs: float, n: int, rate_hz: float, *, resonance_hz: float = 3000.0, seed: int = 0) -> np.ndarray:
    """Decaying resonance excited at rate_hz (a localised bearing defect) plus a little white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    x = 0.05 * rng.standard_normal(n)
    for t0 in np.arange(rng.uniform(0, 1 / rate_hz), t[-1], 1 / rate_hz):
        tail = t >= t0
        dt = t[tail] - t0
        x[tail] += np.exp(-dt * 900.0) * np.sin(2 * np.pi * resonance_hz * dt)
    return x


# --- the spec ---------------------------------------------------------------------------------------


def test_doctests_pass() -> None:
    result = doctest.testmod(features_module)
    assert result.attempted >= 3
    assert result.failed == 0


def test_default_spec_names_and_count() -> None:
    names = DEFAULT_SPEC.names
    assert DEFAULT_SPEC.n_features == len(names) == 5 + 16 + 4
    assert names[:5] == TIME_FEATURES
    assert names[5] == "log_band_10_14.7hz"
    assert names[20] == "log_band_3390_5000hz"
    assert names[-4:] == ("env_bpfo", "env_bpfi", "env_2bsf", "env_ftf")
    assert len(set(names)) == len(names)
    assert DEFAULT_SPEC.min_full_sample_rate == 10_000.0


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, CWRU, FeatureSpec(nominal_rpm=1500.0, defect_harmonics=3)])
def test_spec_round_trips_through_json(spec: FeatureSpec) -> None:
    text = json.dumps(spec.to_dict())
    back = FeatureSpec.from_dict(json.loads(text))
    assert back == spec
    assert back.names == spec.names
    assert hash(back) == hash(spec)


def test_to_dict_names_every_parameter() -> None:
    d = CWRU.to_dict()
    assert d["name"] == "gruwatch-vib"
    assert d["version"] == 1
    assert d["band_edges_hz"] == list(DEFAULT_BAND_EDGES_HZ)
    assert d["geometry"] == PRESETS["cwru_6205"].to_dict()
    assert d["names"] == list(CWRU.names)
    assert DEFAULT_SPEC.to_dict()["geometry"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "other-features"}, "unknown feature spec"),
        ({"version": 4}, "version 4 is not supported"),
        ({"sk_band_edges_hz": [500.0, 1600.0]}, "cannot hold spectral kurtosis"),
        ({"version": 3, "sk_band_edges_hz": [500.0]}, "at least 2"),
        ({"version": 3, "sk_band_edges_hz": [1600.0, 500.0]}, "increase strictly"),
        ({"version": 3, "sk_band_edges_hz": [500.0, 1600.0], "sk_segment_s": 0.0}, "sk_segment_s"),
        ({"baseline": {"skip_windows": 1, "learn_windows": 5}}, "cannot hold a per-sensor baseline"),
        ({"relative_bands": True}, "cannot hold"),
        ({"version": 2, "relative_bands": 1}, "relative_bands must be"),
        ({"version": 2, "baseline": {"learn_windows": 1}}, "learn_windows must be"),
        ({"version": 2, "baseline": {"smoothing": 3}}, "does not know"),
        ({"version": True}, "not supported"),
        ({"version": "1"}, "not supported"),
        ({"window_function": "blackman"}, "unknown parameters"),
        ({"band_edges_hz": [100.0, 50.0]}, "increase strictly"),
        ({"band_edges_hz": [100.0]}, "at least 2"),
        ({"band_edges_hz": [0.0, 50.0]}, "at least 2 finite edges"),
        ({"band_edges_hz": ["10", 50.0]}, "expected a number"),
        ({"envelope_band_hz": [5000.0, 1000.0]}, "envelope_band_hz"),
        ({"envelope_band_hz": [1000.0, 2000.0, 3000.0]}, "2 numbers"),
        ({"envelope_ref_orders": [-1.0, 10.0]}, "envelope_ref_orders"),
        ({"defect_tolerance": 0.7}, "defect_tolerance"),
        ({"defect_harmonics": 0}, "defect_harmonics"),
        ({"defect_harmonics": 2.0}, "integer"),
        ({"nominal_rpm": -5.0}, "nominal_rpm"),
        ({"power_floor_g2": 0.0}, "power_floor_g2"),
        ({"geometry": {"name": "x", "n_balls": 2, "ball_diameter": 1, "pitch_diameter": 5}}, "invalid"),
        ({"geometry": "cwru_6205"}, "geometry"),
        ({"names": ["log_rms"]}, "feature names differ"),
    ],
)
def test_from_dict_refuses_what_it_cannot_compute(change: dict[str, object], message: str) -> None:
    d = CWRU.to_dict()
    d.update(change)
    with pytest.raises(FeatureError, match=message):
        FeatureSpec.from_dict(d)


def test_from_dict_refuses_non_objects_and_missing_version() -> None:
    with pytest.raises(FeatureError):
        FeatureSpec.from_dict([1, 2])  # type: ignore[arg-type]
    d = DEFAULT_SPEC.to_dict()
    del d["version"]
    with pytest.raises(FeatureError, match="not supported"):
        FeatureSpec.from_dict(d)


def test_from_dict_fills_defaults_for_omitted_parameters() -> None:
    assert FeatureSpec.from_dict({"name": "gruwatch-vib", "version": 1}) == DEFAULT_SPEC


def test_constructor_and_with_geometry_validate() -> None:
    with pytest.raises(FeatureError, match="version"):
        FeatureSpec(version=7)
    with pytest.raises(FeatureError, match="unknown feature spec parameter"):
        FeatureSpec.with_geometry(None, bogus=1)
    with pytest.raises(FeatureError, match="too close"):
        FeatureSpec(band_edges_hz=(10.0, 10.0001, 10.0002))
    spec = FeatureSpec.with_geometry(PRESETS["femto_6804"], defect_harmonics=3)
    assert spec.geometry == PRESETS["femto_6804"]
    assert spec.defect_harmonics == 3


# --- input handling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_rejected_with_reason_nan(bad: float) -> None:
    x = np.ones(64, dtype=np.float32)
    x[10] = bad
    with pytest.raises(ProtocolError) as info:
        extract(x, 1000.0)
    assert info.value.reason == "nan"
    batch = np.zeros((3, 64))
    batch[2, 5] = bad
    with pytest.raises(ProtocolError) as info:
        extract_batch(batch, 1000.0)
    assert info.value.reason == "nan"


def test_empty_window_is_rejected_with_reason_empty() -> None:
    with pytest.raises(ProtocolError) as info:
        extract(np.zeros(0, dtype=np.float32), 1000.0)
    assert info.value.reason == "empty"
    with pytest.raises(ProtocolError) as info:
        extract_batch(np.zeros((2, 0)), 1000.0)
    assert info.value.reason == "empty"


def test_no_windows_give_no_rows() -> None:
    out = extract_batch(np.zeros((0, 128), dtype=np.float32), 1000.0, spec=CWRU)
    assert out.shape == (0, CWRU.n_features)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("fs", "rpm", "reason"),
    [
        (float("nan"), 0.0, "nan"),
        (float("inf"), 0.0, "nan"),
        (0.0, 0.0, "bad_field"),
        (-100.0, 0.0, "bad_field"),
        (1000.0, float("nan"), "nan"),
        (1000.0, -1.0, "bad_field"),
    ],
)
def test_bad_rate_or_speed_is_rejected(fs: float, rpm: float, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        extract(np.ones(32), fs, rpm, CWRU)
    assert info.value.reason == reason


def test_wrong_shapes_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="1-D"):
        extract(np.zeros((2, 8)), 100.0)
    with pytest.raises(ValueError, match="2-D"):
        extract_batch(np.zeros(8), 100.0)
    with pytest.raises(ValueError, match="one per window"):
        extract_batch(np.zeros((3, 8)), 100.0, rpm=np.array([1.0, 2.0]))
    with pytest.raises(ProtocolError) as info:
        extract(np.zeros(8, dtype=np.complex64), 100.0)
    assert info.value.reason == "bad_field"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_not_mutated_and_output_is_float32(dtype: type) -> None:
    rng = np.random.default_rng(3)
    windows = rng.standard_normal((4, 1000)).astype(dtype)
    rpm = np.array([0.0, 1797.0, 1772.0, 0.0])
    windows_before, rpm_before = windows.copy(), rpm.copy()
    spec = FeatureSpec.with_geometry(PRESETS["cwru_6205"], nominal_rpm=1750.0)
    out = extract_batch(windows, 12000.0, rpm, spec)
    single = extract(windows[1], 12000.0, 1797.0, spec)
    np.testing.assert_array_equal(windows, windows_before)
    np.testing.assert_array_equal(rpm, rpm_before)
    assert windows.dtype == dtype
    assert out.dtype == np.float32
    assert single.dtype == np.float32
    assert out.shape == (4, spec.n_features)
    assert np.isfinite(out).all()


def test_extract_equals_batch_row_and_batch_equals_rows() -> None:
    rng = np.random.default_rng(4)
    windows = rng.standard_normal((37, 2048)).astype(np.float32)  # more than one internal block
    rpm = rng.uniform(1000.0, 3000.0, 37)
    batch = extract_batch(windows, 12000.0, rpm, CWRU)
    for i in (0, 15, 16, 36):
        np.testing.assert_array_equal(extract(windows[i], 12000.0, rpm[i], CWRU), batch[i])
        np.testing.assert_array_equal(extract_batch(windows[i][None], 12000.0, rpm[i], CWRU)[0], batch[i])


def test_integer_samples_are_accepted() -> None:
    x = np.random.default_rng(5).integers(-1000, 1000, 512).astype(np.int16)
    np.testing.assert_allclose(extract(x, 1000.0), extract(x.astype(np.float64), 1000.0))


# --- time-domain features against scipy -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_time_features_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (0.3 + rng.standard_gamma(2.0, 3000) * 0.2).astype(np.float32)  # skewed, with a DC offset
    v = extract(x, 20000.0)
    xd = x.astype(np.float64)
    rms = np.std(xd)
    peak = np.max(np.abs(xd - xd.mean()))
    floor = DEFAULT_SPEC.power_floor_g2
    np.testing.assert_allclose(v[0], 0.5 * np.log10(rms**2 + floor), rtol=1e-6)
    np.testing.assert_allclose(v[1], 0.5 * np.log10(peak**2 + floor), rtol=1e-6)
    np.testing.assert_allclose(v[2], peak / rms, rtol=1e-6)
    np.testing.assert_allclose(v[3], scipy.stats.kurtosis(xd, fisher=False), rtol=1e-5)
    np.testing.assert_allclose(v[4], scipy.stats.skew(xd), rtol=1e-5)
    assert v[4] > 0.5  # gamma noise is right-skewed


def test_sine_has_textbook_time_features() -> None:
    fs, n = 10_000.0, 10_000
    x = 2.0 * np.sin(2 * np.pi * 50.0 * np.arange(n) / fs)
    v = extract(x, fs)
    np.testing.assert_allclose(10 ** v[0], 2.0 / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(10 ** v[1], 2.0, rtol=1e-5)
    np.testing.assert_allclose(v[2], np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(v[3], 1.5, rtol=1e-5)
    assert abs(v[4]) < 1e-5


def test_constant_window_is_defined() -> None:
    for value in (0.0, 0.1, -3.7, 1e5 / 3):
        v = extract(np.full(300, value, dtype=np.float32), 1000.0, 1800.0, CWRU)
        np.testing.assert_array_equal(v[:5], [-6.0, -6.0, 0.0, 0.0, 0.0])
        np.testing.assert_array_equal(v[5:21], np.float32(-12.0))
        np.testing.assert_array_equal(v[21:], 0.0)


def test_scaling_the_signal_shifts_only_the_logs() -> None:
    x = _impacts(12000.0, 4096, 107.0)
    a, b = extract(x, 12000.0, 1797.0, CWRU), extract(100.0 * x, 12000.0, 1797.0, CWRU)
    np.testing.assert_allclose(b[:2] - a[:2], 2.0, atol=1e-5)  # log10(100) on RMS and peak
    np.testing.assert_allclose(b[2:5], a[2:5], rtol=1e-4)  # crest, kurtosis, skewness
    np.testing.assert_allclose(b[5:21] - a[5:21], 4.0, atol=1e-3)  # band powers scale by 100²
    np.testing.assert_allclose(b[21:], a[21:], atol=1e-4)  # envelope ratios are unitless


# --- band powers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "fs"), [(2048, 12000.0), (2560, 25600.0), (999, 5000.0)])
def test_band_powers_match_scipy_periodogram(n: int, fs: float) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n)
    df = fs / n
    # Edges on bin boundaries, so each band is a plain sum of scipy's periodogram bins.
    cuts = [1, 2, 5, 17, 60, n // 4, n // 2 - 1]
    spec = FeatureSpec(band_edges_hz=tuple((k - 0.5) * df for k in cuts))
    v = extract(x, fs, spec=spec)
    _f, pxx = scipy.signal.periodogram(x, fs, window="hann", detrend="constant", scaling="density")
    expected = [pxx[a:b].sum() * df for a, b in itertools.pairwise(cuts)]
    np.testing.assert_allclose(
        v[5 : 5 + spec.n_bands], np.log10(np.array(expected) + spec.power_floor_g2), rtol=1e-5
    )


@pytest.mark.parametrize("n", [2048, 2049])
def test_band_powers_integrate_to_the_tapered_variance(n: int) -> None:
    """Parseval: bands covering [0, fs/2] hold Σ(x·w)²/Σw², whatever the length's parity."""
    fs = 1000.0
    x = np.random.default_rng(7).standard_normal(n)
    centred = x - x.mean()
    w = scipy.signal.get_window("hann", n)
    edges = (1e-9, 0.3, 7.77, 123.4, 499.9, 10_000.0)  # the last edge lies above Nyquist
    powers = spectra.band_powers(spectra.hann_from_rect(np.fft.rfft(centred)[None], n), fs, n, edges)[0]
    np.testing.assert_allclose(powers.sum(), np.sum((centred * w) ** 2) / np.sum(w**2), rtol=1e-10)
    assert (powers >= 0).all()


def test_hann_from_rect_equals_tapered_fft() -> None:
    rng = np.random.default_rng(8)
    for n in (1, 2, 3, 4, 5, 64, 101):
        x = rng.standard_normal((2, n))
        w = scipy.signal.get_window("hann", n) if n > 1 else np.ones(1)
        np.testing.assert_allclose(
            spectra.hann_from_rect(np.fft.rfft(x, axis=-1), n), np.fft.rfft(x * w, axis=-1), atol=1e-12
        )


def test_a_sine_puts_its_power_in_its_band() -> None:
    fs, n = 25600.0, 2560
    x = 0.5 * np.sin(2 * np.pi * 400.0 * np.arange(n) / fs)  # band 330–486 Hz
    v = extract(x, fs)
    i = _idx(DEFAULT_SPEC, "log_band_330_486hz")
    np.testing.assert_allclose(10 ** v[i], 0.5**2 / 2, rtol=1e-3)
    others = np.delete(v[5:21], i - 5)
    assert (others < np.log10(0.125) - 3).all()


def test_bands_above_nyquist_are_zero_power() -> None:
    fs = 4000.0  # Nyquist 2 kHz: bands from 2300 Hz up see nothing; 1560–2300 Hz is cut at 2 kHz
    x = np.random.default_rng(9).standard_normal(4000)
    v = extract(x, fs)
    for name in ("log_band_2300_3390hz", "log_band_3390_5000hz"):
        assert v[_idx(DEFAULT_SPEC, name)] == np.float32(np.log10(DEFAULT_SPEC.power_floor_g2))
    # White noise of variance 1 has density 1/(fs/2): the 1560–2000 Hz part holds 440/2000 of it.
    np.testing.assert_allclose(10 ** v[_idx(DEFAULT_SPEC, "log_band_1560_2300hz")], 440 / 2000, rtol=0.15)


@pytest.mark.parametrize(("fs", "n"), [(12000.0, 2048), (12000.0, 4096), (25600.0, 2560), (25600.0, 8192)])
def test_features_are_physical_not_per_bin(fs: float, n: int) -> None:
    """The same continuous signal gives the same band powers and RMS at any rate and window length."""
    edges = np.array(DEFAULT_BAND_EDGES_HZ)
    lo, hi = edges[6:-1], edges[7:]  # bands from 103 Hz: each at least 4 bins wide at every rate here
    centres = np.sqrt(lo * hi)
    amps = np.linspace(0.05, 0.4, len(centres))
    x = _tones(fs, n, centres, amps)
    v = extract(x.astype(np.float32), fs)
    expected = np.log10(amps**2 / 2 + DEFAULT_SPEC.power_floor_g2)
    np.testing.assert_allclose(v[5 + 6 : 5 + 16], expected, atol=0.02)  # within 5% of the true power
    np.testing.assert_allclose(v[0], 0.5 * np.log10(np.sum(amps**2) / 2), atol=0.02)


def test_length_and_rate_independence_between_configurations() -> None:
    """Random tones, kept 15 Hz (2½ bins at the coarsest resolution here) from every band edge so the
    taper's main lobe does not straddle bands, and 30 Hz from each other so that no two beat within a
    window (tones closer than the resolution really do have a window-dependent power)."""
    rng = np.random.default_rng(10)
    edges = np.array(DEFAULT_BAND_EDGES_HZ)
    chosen: list[float] = []
    for f in rng.uniform(160.0, 4800.0, 400):
        if np.abs(edges - f).min() > 15.0 and all(abs(f - g) > 30.0 for g in chosen):
            chosen.append(f)
    freqs = np.array(chosen[:60])
    assert len(freqs) == 60
    amps = rng.uniform(0.01, 0.2, len(freqs))
    runs = [
        extract(_tones(fs, n, freqs, amps), fs)
        for fs, n in [(12000.0, 2048), (12000.0, 4096), (25600.0, 5120)]
    ]
    band = np.searchsorted(edges, freqs) - 1
    expected = np.array([np.sum(amps[band == b] ** 2) / 2 for b in range(16)])
    has_tones = expected > 0
    assert has_tones.sum() >= 8
    for other in runs[1:]:
        np.testing.assert_allclose(other[0], runs[0][0], atol=0.02)
        np.testing.assert_allclose(other[5:21][has_tones], runs[0][5:21][has_tones], atol=0.03)
    np.testing.assert_allclose(runs[0][5:21][has_tones], np.log10(expected[has_tones]), atol=0.03)


# --- envelope features --------------------------------------------------------------------------------------


def _reference_envelope_features(x: np.ndarray, fs: float, rpm: float, spec: FeatureSpec) -> np.ndarray:
    """The envelope features written out plainly with scipy.signal.hilbert and explicit loops."""
    assert spec.geometry is not None
    n = len(x)
    df = fs / n
    spectrum = np.fft.rfft(x - x.mean())
    k = np.arange(len(spectrum))
    lo, hi = spec.envelope_band_hz
    keep = (k * df >= lo) & (k * df <= hi) & (k > 0) & ~((n % 2 == 0) & (k == n // 2))
    band_passed = np.fft.irfft(np.where(keep, spectrum, 0), n)
    envelope = np.abs(scipy.signal.hilbert(band_passed))
    w = scipy.signal.get_window("hann", n)
    envelope = envelope - np.sum(envelope * w) / np.sum(w)
    power = np.abs(np.fft.rfft(envelope * w)) ** 2
    freqs = np.arange(len(power)) * df
    shaft = rpm / 60.0

    def mean_near(centre: float, half: float) -> tuple[float, int]:
        sel = [i for i in range(1, len(power)) if abs(freqs[i] - centre) <= half + 1e-9 * df]
        return (float(np.mean(power[sel])) if sel else 0.0), len(sel)

    r_lo, r_hi = spec.envelope_ref_orders
    ref, ref_n = mean_near(0.5 * (r_lo + r_hi) * shaft, max(0.5 * (r_hi - r_lo) * shaft, df))
    orders = spec.geometry.orders()
    out = []
    for key, mult in (("bpfo", 1), ("bpfi", 1), ("bsf", 2), ("ftf", 1)):
        means = []
        for h in range(1, spec.defect_harmonics + 1):
            centre = orders[key] * mult * h * shaft
            m, count = mean_near(centre, max(spec.defect_tolerance * centre, df))
            if count and centre <= fs / 2:
                means.append(m)
        if not means or ref_n == 0 or ref <= 0:
            out.append(0.0)
        else:
            out.append(np.log10(max(np.mean(means) / ref, 1e-6)))
    return np.array(out)


@pytest.mark.parametrize(
    ("fs", "n", "rpm", "rate_key"),
    [(12000.0, 2048, 1797.0, "bpfo"), (25600.0, 2560, 1800.0, "bpfi"), (12000.0, 3001, 1500.0, "bsf")],
)
def test_envelope_features_match_scipy_hilbert_reference(
    fs: float, n: int, rpm: float, rate_key: str
) -> None:
    spec = CWRU if fs == 12000.0 else FEMTO
    assert spec.geometry is not None
    x = _impacts(fs, n, spec.geometry.orders()[rate_key] * rpm / 60.0, seed=n)
    v = extract(x, fs, rpm, spec)
    np.testing.assert_allclose(v[-4:], _reference_envelope_features(x, fs, rpm, spec), atol=1e-5)


def test_analytic_envelope_equals_scipy_hilbert() -> None:
    fs, n = 12000.0, 1000
    x = np.random.default_rng(11).standard_normal((2, n))
    env = spectra.analytic_envelope(np.fft.rfft(x, axis=-1), n, fs, (1000.0, 5000.0))
    spectrum = np.fft.rfft(x, axis=-1)
    k = np.arange(spectrum.shape[-1]) * fs / n
    passed = np.fft.irfft(np.where((k >= 1000.0) & (k <= 5000.0), spectrum, 0), n, axis=-1)
    np.testing.assert_allclose(env, np.abs(scipy.signal.hilbert(passed, axis=-1)), atol=1e-10)


@pytest.mark.parametrize(
    ("key", "feature"), [("bpfo", "env_bpfo"), ("bpfi", "env_bpfi"), ("bsf", "env_2bsf")]
)
def test_a_defect_lights_up_its_own_envelope_feature(key: str, feature: str) -> None:
    rpm, fs = 1797.0, 12000.0
    geometry = PRESETS["cwru_6205"]
    rate = geometry.orders()[key] * (2.0 if key == "bsf" else 1.0) * rpm / 60.0
    v = extract(_impacts(fs, 8192, rate), fs, rpm, CWRU)
    env = dict(zip(CWRU.names[-4:], v[-4:], strict=True))
    assert env[feature] > 0.7  # at least 5× the envelope spectrum's mean level
    assert env[feature] == max(env.values())


def test_envelope_features_need_speed_and_geometry() -> None:
    x = _impacts(12000.0, 4096, PRESETS["cwru_6205"].bpfo(1797.0))
    assert (extract(x, 12000.0, 0.0, CWRU)[-4:] == 0.0).all()  # speed unknown
    assert (extract(x, 12000.0, 1797.0, DEFAULT_SPEC)[-4:] == 0.0).all()  # no geometry
    with_nominal = FeatureSpec.with_geometry(PRESETS["cwru_6205"], nominal_rpm=1797.0)
    np.testing.assert_array_equal(extract(x, 12000.0, 0.0, with_nominal), extract(x, 12000.0, 1797.0, CWRU))
    # A measured speed beats the nominal one.
    np.testing.assert_array_equal(
        extract(x, 12000.0, 1500.0, with_nominal), extract(x, 12000.0, 1500.0, CWRU)
    )


def test_per_window_speeds_match_one_by_one() -> None:
    rng = np.random.default_rng(12)
    windows = np.stack([_impacts(12000.0, 2048, 100.0 + 20 * i, seed=i) for i in range(5)])
    rpm = np.array([1797.0, 0.0, 1500.0, 3000.0, 0.0])
    batch = extract_batch(windows, 12000.0, rpm, CWRU)
    for i in range(5):
        np.testing.assert_array_equal(batch[i], extract(windows[i], 12000.0, rpm[i], CWRU))
    assert (batch[[1, 4], -4:] == 0.0).all()
    assert (batch[[0, 2, 3], -4:] != 0.0).any(axis=1).all()
    del rng


def test_envelope_band_above_nyquist_gives_zero_features() -> None:
    x = np.random.default_rng(13).standard_normal(1000)
    v = extract(x, 1500.0, 1797.0, CWRU)  # Nyquist 750 Hz < the 1–5 kHz envelope band
    assert (v[-4:] == 0.0).all()
    assert np.isfinite(v).all()


def test_white_noise_envelope_ratios_are_near_zero() -> None:
    fs = 25600.0
    x = np.random.default_rng(14).standard_normal((32, 2560))
    v = extract_batch(x, fs, 1800.0, FEMTO)
    np.testing.assert_allclose(v[:, -4:].mean(axis=0), 0.0, atol=0.25)


# --- robustness ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
    ),
    fs=st.floats(1.0, 100_000.0),
    rpm=st.one_of(st.just(0.0), st.floats(0.0, 20_000.0)),
)
def test_any_finite_window_gives_finite_features(x: np.ndarray, fs: float, rpm: float) -> None:
    before = x.copy()
    v = extract(x, fs, rpm, FEMTO)
    assert v.shape == (FEMTO.n_features,)
    assert v.dtype == np.float32
    assert np.isfinite(v).all()
    np.testing.assert_array_equal(x, before)


def test_extreme_magnitudes_stay_finite() -> None:
    x = np.zeros(256, dtype=np.float32)
    x[::7] = np.finfo(np.float32).max
    x[3::7] = -np.finfo(np.float32).max
    assert np.isfinite(extract(x, 1000.0, 600.0, CWRU)).all()
    tiny = np.random.default_rng(15).standard_normal(256).astype(np.float32) * 1e-30
    assert np.isfinite(extract(tiny, 1000.0, 600.0, CWRU)).all()


def test_slow_shaft_reference_range_is_at_least_one_bin_wide() -> None:
    fs, n, rpm = 12000.0, 2048, 30.0  # 0.5 Hz shaft: the reference orders span < 1 bin (5.9 Hz)
    x = _impacts(fs, n, 40.0)
    v = extract(x, fs, rpm, CWRU)
    np.testing.assert_allclose(v[-4:], _reference_envelope_features(x, fs, rpm, CWRU), atol=1e-5)
    assert np.isfinite(v).all()


def test_importing_features_pulls_in_no_heavy_dependency() -> None:
    code = (
        "import sys, edge_agent.features, edge_agent.spectra; "
        "heavy = {'scipy', 'torch', 'pandas', 'sklearn', 'pyarrow'} & {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- real data ------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_cwru_seeded_faults_show_at_their_defect_frequencies(real_data: Path) -> None:
    """Inner- and outer-race faults light up BPFI and BPFO at 12 kHz, and BPFO again at 48 kHz."""
    cases = {
        "12k_Drive_End_IR007_0_105.mat": (12000.0, "env_bpfi"),
        "12k_Drive_End_OR007@6_0_130.mat": (12000.0, "env_bpfo"),
        "48k_Drive_End_OR007@6_0_135.mat": (48000.0, "env_bpfo"),
    }
    seen = {}
    for name, (fs, expected) in cases.items():
        path = real_data / "cwru" / name
        if not path.exists():
            pytest.skip(f"{path} is missing from the shared data folder")
        mat = scipy.io.loadmat(path)
        signal = next(v for k, v in mat.items() if k.endswith("_DE_time")).ravel()[: int(fs)]  # first second
        rpm = float(next(v for k, v in mat.items() if k.endswith("RPM")).ravel()[0])
        length = round(2048 * fs / 12000.0)  # the same 0.17 s at either rate
        windows = signal[: len(signal) // length * length].reshape(-1, length)
        v = extract_batch(windows, fs, rpm, CWRU).mean(axis=0)
        env = dict(zip(CWRU.names[-4:], v[-4:], strict=True))
        assert env[expected] > 0.7, (name, env)
        assert env[expected] == max(env.values()), (name, env)
        seen[name] = v
    # The outer-race fault looks alike at 12 and 48 kHz: the features are in Hz, not bins.
    a, b = seen["12k_Drive_End_OR007@6_0_130.mat"], seen["48k_Drive_End_OR007@6_0_135.mat"]
    assert abs(a[_idx(CWRU, "env_bpfo")] - b[_idx(CWRU, "env_bpfo")]) < 0.3


def test_relative_bands_are_the_band_powers_less_the_window_variance() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 2048)).astype(np.float32)
    rel = FeatureSpec.with_geometry(None, relative_bands=True)
    assert rel.version == 2
    assert rel.names[5].startswith("rel_band_")
    assert FeatureSpec.from_dict(rel.to_dict()) == rel
    a = extract_batch(x, 12000.0, 0.0, DEFAULT_SPEC).astype(np.float64)
    b = extract_batch(x, 12000.0, 0.0, rel).astype(np.float64)
    np.testing.assert_allclose(b[:, :5], a[:, :5])
    np.testing.assert_allclose(b[:, 5:21], a[:, 5:21] - 2.0 * a[:, [0]], atol=1e-4)
    # a louder copy of the same signal has the same relative bands
    np.testing.assert_allclose(extract_batch(10 * x, 12000.0, 0.0, rel)[:, 5:21], b[:, 5:21], atol=1e-4)


def test_reused_workspace_and_chunked_moments() -> None:
    """extract_batch keeps its block arrays from call to call (per thread) and takes long windows'
    moments as sums of BLAS dots over chunks: a batch's features must not depend on what the
    workspace held before, and the chunked moments must be the windows' own."""
    rng = np.random.default_rng(11)
    spec = FeatureSpec.with_geometry(PRESETS["femto_6804"])
    long = (rng.standard_normal((3, 20480)) * 0.3 + 2.0).astype(np.float32)  # 20,480 > _DOT_CHUNK
    first = extract_batch(long, 25600.0, 1800.0, spec)
    extract_batch(rng.standard_normal((3, 20480)) * 50.0, 25600.0, 1800.0, spec)  # dirties the workspace
    extract_batch(np.full((1, 20480), 7.0), 25600.0, 1800.0, spec)  # a constant window, shorter block
    np.testing.assert_array_equal(extract_batch(long, 25600.0, 1800.0, spec), first)
    xd = long.astype(np.float64)
    np.testing.assert_allclose(first[:, 3], scipy.stats.kurtosis(xd, axis=-1, fisher=False), rtol=1e-5)
    np.testing.assert_allclose(first[:, 4], scipy.stats.skew(xd, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(10 ** first[:, 0], xd.std(axis=-1), rtol=1e-5)


SK = FeatureSpec.with_geometry(None, sk_band_edges_hz=(500.0, 1600.0, 3200.0, 6400.0, 12800.0))


def test_spectral_kurtosis_is_zero_for_noise_minus_one_for_a_tone_and_large_for_impacts() -> None:
    assert SK.version == 3
    assert SK.names[-4:] == ("sk_500_1600hz", "sk_1600_3200hz", "sk_3200_6400hz", "sk_6400_12800hz")
    assert FeatureSpec.from_dict(json.loads(json.dumps(SK.to_dict()))) == SK
    assert SK.min_full_sample_rate == 25_600.0  # the top spectral-kurtosis band reaches 12.8 kHz
    fs, n = 25_600.0, 2560
    rng = np.random.default_rng(0)
    noise = extract_batch(rng.standard_normal((32, n)), fs, 0.0, SK)[:, -4:]
    assert np.abs(noise.mean(axis=0)).max() < 0.1
    tone = _tones(fs, n, np.array([2000.0]), np.array([1.0])) + 1e-3 * rng.standard_normal(n)
    sk_tone = extract(tone, fs, 0.0, SK)
    assert sk_tone[SK.names.index("sk_1600_3200hz")] < -0.5  # a steady tone: constant magnitude
    impacts = extract(_impacts(fs, n, 100.0, resonance_hz=4500.0), fs, 0.0, SK)
    assert impacts[SK.names.index("sk_3200_6400hz")] > 3.0  # ringing bursts at 4.5 kHz
    # the features before the spectral kurtosis are the v1 features, unchanged
    x = rng.standard_normal((3, n))
    np.testing.assert_array_equal(
        extract_batch(x, fs, 0.0, SK)[:, :-4], extract_batch(x, fs, 0.0, DEFAULT_SPEC)
    )


def test_spectral_kurtosis_matches_a_scipy_stft_reference() -> None:
    fs, n = 25_600.0, 2560
    x = _impacts(fs, n, 60.0, resonance_hz=9000.0, seed=2)
    got = extract(x, fs, 0.0, SK)[-4:]
    nw = 64
    _, _, z = scipy.signal.stft(
        x - x.mean(), fs, window="hann", nperseg=nw, noverlap=nw // 2, boundary=None, padded=False
    )
    p = np.abs(z) ** 2
    sk = (p**2).mean(axis=1) / p.mean(axis=1) ** 2 - 2.0
    freqs = np.arange(nw // 2 + 1) * fs / nw
    edges = SK.sk_band_edges_hz
    want = [sk[1:-1][(freqs[1:-1] >= a) & (freqs[1:-1] < b)].mean() for a, b in itertools.pairwise(edges)]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_spectral_kurtosis_of_short_or_constant_windows_is_zero() -> None:
    assert np.all(extract(np.ones(2560), 25_600.0, 0.0, SK)[-4:] == 0.0)
    assert np.all(extract(np.random.default_rng(1).standard_normal(100), 25_600.0, 0.0, SK)[-4:] == 0.0)
    low = extract(np.random.default_rng(1).standard_normal(2048), 12_000.0, 0.0, SK)
    assert low[-1] == 0.0
    assert np.isfinite(low).all()
