"""Vibration-window features: one fixed-length float32 vector per window, the same for trainer and agent.

A `FeatureSpec` names the features and every parameter they depend on, in physical units only (Hz, or
shaft orders when the speed is known), never in FFT bins, so a model trained at one sample rate and
window length scores windows of another. The spec travels in each model bundle (`to_dict`), and an
agent refuses a spec it cannot compute (`from_dict` raises FeatureError). docs/features.md defines
every feature exactly; edge_agent/spectra.py holds the spectral kernels.

>>> import numpy as np
>>> t = np.arange(2560) / 25600.0
>>> x = np.sin(2 * np.pi * 300.0 * t).astype(np.float32)
>>> v = extract(x, fs=25600.0, rpm=1800.0)
>>> v.dtype, v.shape == (DEFAULT_SPEC.n_features,)
(dtype('float32'), True)
>>> round(float(v[DEFAULT_SPEC.names.index("crest")]), 3)  # a sine: peak / RMS = √2
1.414
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.baseline import BaselineSpec
from edge_agent.bearing import BearingGeometry
from edge_agent.errors import FeatureError, ProtocolError
from edge_agent.spectra import (
    analytic_envelope,
    band_powers,
    band_stop,
    envelope_power_spectrum,
    hann_from_rect,
    hann_window,
    range_means,
    spectral_kurtosis,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

SPEC_NAME = "gruwatch-vib"
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1, 2, 3})
# v2 = v1 + two optional parameters: the per-sensor healthy baseline (`baseline`, edge_agent/baseline.py)
# and band powers relative to the window's total power (`relative_bands`). v1 has neither.
V2 = 2
V3 = 3  # v3 = v2 + spectral kurtosis per band (`sk_band_edges_hz`, `sk_segment_s`); v1, v2 hold neither

# v1 default band edges (Hz): 16 log-spaced bands from 10 Hz to 5 kHz (ratio 500^(1/16) ≈ 1.475,
# rounded to 3 significant figures). Written out, not computed, so the spec can never drift.
# 5 kHz is below the Nyquist frequency of CWRU (12 kHz) and FEMTO (25.6 kHz) data alike.
DEFAULT_BAND_EDGES_HZ: tuple[float, ...] = (
    10.0, 14.7, 21.7, 32.0, 47.3, 69.7, 103.0, 152.0, 224.0,
    330.0, 486.0, 717.0, 1060.0, 1560.0, 2300.0, 3390.0, 5000.0,
)  # fmt: skip

# The defects the envelope features look for: (feature suffix, key of BearingGeometry.orders(), multiple).
# A ball defect strikes a race twice per ball revolution: 2×BSF.
DEFECTS: tuple[tuple[str, str, float], ...] = (
    ("bpfo", "bpfo", 1.0),
    ("bpfi", "bpfi", 1.0),
    ("2bsf", "bsf", 2.0),
    ("ftf", "ftf", 1.0),
)

TIME_FEATURES: tuple[str, ...] = ("log_rms", "log_peak", "crest", "kurtosis", "skewness")

# A window whose standard deviation is below this fraction of its largest |sample| is "constant"
# (a stuck sensor): float noise must not turn it into a kurtosis of 1 or a crest of 1e9.
_CONSTANT_RELATIVE_STD = 1e-12
# Envelope ratios are clipped below at 10^-6 so the log stays finite.
_MIN_ENVELOPE_RATIO = 1e-6


def _edge_label(hz: float) -> str:
    return str(round(hz)) if hz >= 100.0 else f"{hz:.3g}"


@dataclass(frozen=True)
class FeatureSpec:
    """What to compute from a window, with every parameter in physical units (docs/features.md).

    Construct with keywords; invalid parameters raise FeatureError at once, so a spec that exists is
    a spec this build can compute.
    """

    name: str = SPEC_NAME
    version: int = 1
    band_edges_hz: tuple[float, ...] = DEFAULT_BAND_EDGES_HZ
    envelope_band_hz: tuple[float, float] = (1000.0, 5000.0)
    envelope_ref_orders: tuple[float, float] = (0.25, 20.0)
    defect_tolerance: float = 0.02
    defect_harmonics: int = 2
    nominal_rpm: float = 0.0
    power_floor_g2: float = 1e-12
    geometry: BearingGeometry | None = None
    # v2: normalise every feature against the sensor's own healthy start (edge_agent.baseline) before
    # the model sees it. The features themselves are unchanged; the model's input is the deviation.
    baseline: BaselineSpec | None = None
    # v2: band powers as log10(P_b + ε) − log10(m2 + ε), the spectrum's shape rather than its level
    # (named rel_band_*): seeded-fault classes transfer across motor loads (docs/features.md).
    relative_bands: bool = False
    # v3: spectral kurtosis of the short-time spectrum (segments of `sk_segment_s`) per band between these
    # edges (Hz), appended after the envelope features as sk_<lo>_<hi>hz; () = none (docs/features.md).
    sk_band_edges_hz: tuple[float, ...] = ()
    sk_segment_s: float = 0.0025
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name != SPEC_NAME:
            raise FeatureError(
                f"unknown feature spec {self.name!r}: this build computes only {SPEC_NAME!r}; "
                "update gruwatch on this machine or retrain the model with this build"
            )
        if isinstance(self.version, bool) or self.version not in SUPPORTED_VERSIONS:
            raise FeatureError(
                f"feature spec {SPEC_NAME!r} version {self.version!r} is not supported by this build "
                f"(supported: {sorted(SUPPORTED_VERSIONS)}); update gruwatch on this machine"
            )
        edges = self.band_edges_hz
        if len(edges) < 2 or not all(_positive_finite(e) for e in edges):
            raise FeatureError("band_edges_hz needs at least 2 finite edges > 0 Hz")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise FeatureError(f"band_edges_hz must increase strictly, got {list(edges)}")
        lo, hi = self.envelope_band_hz
        if not (_positive_finite(lo) and _positive_finite(hi) and lo < hi):
            raise FeatureError(f"envelope_band_hz must be 0 < low < high (Hz), got {[lo, hi]}")
        lo, hi = self.envelope_ref_orders
        if not (_positive_finite(lo) and _positive_finite(hi) and lo < hi):
            raise FeatureError(f"envelope_ref_orders must be 0 < low < high (orders), got {[lo, hi]}")
        if not (_positive_finite(self.defect_tolerance) and self.defect_tolerance < 0.5):
            raise FeatureError(f"defect_tolerance must be in (0, 0.5), got {self.defect_tolerance!r}")
        if isinstance(self.defect_harmonics, bool) or not 1 <= self.defect_harmonics <= 10:
            raise FeatureError(f"defect_harmonics must be an int in 1..10, got {self.defect_harmonics!r}")
        if not (math.isfinite(self.nominal_rpm) and self.nominal_rpm >= 0.0):
            raise FeatureError(f"nominal_rpm must be finite and ≥ 0 (0 = none), got {self.nominal_rpm!r}")
        if not (_positive_finite(self.power_floor_g2)):
            raise FeatureError(f"power_floor_g2 must be > 0, got {self.power_floor_g2!r}")
        if self.geometry is not None and not isinstance(self.geometry, BearingGeometry):
            raise FeatureError("geometry must be a BearingGeometry or None")
        if self.baseline is not None and not isinstance(self.baseline, BaselineSpec):
            raise FeatureError("baseline must be a BaselineSpec or None")
        if not isinstance(self.relative_bands, bool):
            raise FeatureError(f"relative_bands must be true or false, got {self.relative_bands!r}")
        if self.version < V2 and (self.baseline is not None or self.relative_bands):
            raise FeatureError(
                f"feature spec version {self.version} cannot hold a per-sensor baseline or relative bands "
                f"(version {V2} can)"
            )
        sk_edges = self.sk_band_edges_hz
        if sk_edges and (len(sk_edges) < 2 or not all(_positive_finite(e) for e in sk_edges)):
            raise FeatureError("sk_band_edges_hz needs no edges or at least 2 finite edges > 0 Hz")
        if any(b <= a for a, b in itertools.pairwise(sk_edges)):
            raise FeatureError(f"sk_band_edges_hz must increase strictly, got {list(sk_edges)}")
        if not (_positive_finite(self.sk_segment_s) and self.sk_segment_s <= 1.0):
            raise FeatureError(f"sk_segment_s must be in (0, 1] seconds, got {self.sk_segment_s!r}")
        if self.version < V3 and sk_edges:
            raise FeatureError(f"spec version {self.version} cannot hold spectral kurtosis (v{V3} can)")
        kind = "rel_band" if self.relative_bands else "log_band"
        bands = tuple(f"{kind}_{_edge_label(a)}_{_edge_label(b)}hz" for a, b in itertools.pairwise(edges))
        sk = tuple(f"sk_{_edge_label(a)}_{_edge_label(b)}hz" for a, b in itertools.pairwise(sk_edges))
        names = TIME_FEATURES + bands + tuple(f"env_{suffix}" for suffix, _, _ in DEFECTS) + sk
        if len(set(names)) != len(names):
            raise FeatureError(f"band_edges_hz {list(edges)} are too close to name each band uniquely")
        object.__setattr__(self, "_names", names)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in the order of the vector's entries."""
        return self._names

    @property
    def n_features(self) -> int:
        return len(self._names)

    @property
    def n_bands(self) -> int:
        return len(self.band_edges_hz) - 1

    @property
    def n_sk_bands(self) -> int:
        return max(len(self.sk_band_edges_hz) - 1, 0)

    @property
    def min_full_sample_rate(self) -> float:
        """Lowest sample rate (Hz) at which every band and the whole envelope band lie below Nyquist.

        Windows sampled slower are still scored (docs/features.md says what the features become), but
        an agent may warn about them.
        """
        return 2.0 * max(self.band_edges_hz[-1], self.envelope_band_hz[1], *self.sk_band_edges_hz)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for a model bundle's card; `from_dict(to_dict())` gives an equal spec."""
        return {
            "name": self.name,
            "version": self.version,
            "band_edges_hz": list(self.band_edges_hz),
            "envelope_band_hz": list(self.envelope_band_hz),
            "envelope_ref_orders": list(self.envelope_ref_orders),
            "defect_tolerance": self.defect_tolerance,
            "defect_harmonics": self.defect_harmonics,
            "nominal_rpm": self.nominal_rpm,
            "power_floor_g2": self.power_floor_g2,
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
            **({} if self.baseline is None else {"baseline": self.baseline.to_dict()}),
            **({"relative_bands": True} if self.relative_bands else {}),
            **({"sk_band_edges_hz": list(self.sk_band_edges_hz)} if self.sk_band_edges_hz else {}),
            **({"sk_segment_s": self.sk_segment_s} if self.sk_band_edges_hz else {}),
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """The spec a bundle names; FeatureError for an unknown name, version or parameter.

        "names", when present, must equal the names this build computes for those parameters, so a
        bundle can never be scored with features in another order.
        """
        if not isinstance(data, dict):
            raise FeatureError(f"a feature spec is a JSON object, got {type(data).__name__}")
        params = dict(data)
        if params.get("name") != SPEC_NAME:
            raise FeatureError(
                f"unknown feature spec {params.get('name')!r}: this build computes only {SPEC_NAME!r}; "
                "update gruwatch on this machine or retrain the model with this build"
            )
        if params.get("version") not in SUPPORTED_VERSIONS or isinstance(params.get("version"), bool):
            raise FeatureError(
                f"feature spec {SPEC_NAME!r} version {params.get('version')!r} is not supported by this "
                f"build (supported: {sorted(SUPPORTED_VERSIONS)}); update gruwatch on this machine"
            )
        names = params.pop("names", None)
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(params) - known)
        if unknown:
            raise FeatureError(
                f"feature spec {SPEC_NAME!r} v{params['version']} has unknown parameters {unknown}; "
                "the bundle was made by a newer gruwatch: update this machine"
            )
        try:
            kwargs: dict[str, Any] = {"name": params["name"], "version": params["version"]}
            if "band_edges_hz" in params:
                kwargs["band_edges_hz"] = tuple(_number(v) for v in params["band_edges_hz"])
            for key in ("envelope_band_hz", "envelope_ref_orders"):
                if key in params:
                    pair = tuple(_number(v) for v in params[key])
                    if len(pair) != 2:
                        raise FeatureError(f"{key} must hold 2 numbers, got {params[key]!r}")
                    kwargs[key] = pair
            if "sk_band_edges_hz" in params:
                kwargs["sk_band_edges_hz"] = tuple(_number(v) for v in params["sk_band_edges_hz"])
            for key in ("defect_tolerance", "nominal_rpm", "power_floor_g2", "sk_segment_s"):
                if key in params:
                    kwargs[key] = _number(params[key])
            if "defect_harmonics" in params:
                harmonics = params["defect_harmonics"]
                if isinstance(harmonics, bool) or not isinstance(harmonics, int):
                    raise FeatureError(f"defect_harmonics must be an integer, got {harmonics!r}")
                kwargs["defect_harmonics"] = harmonics
            geometry = params.get("geometry")
            if geometry is not None:
                if not isinstance(geometry, dict):
                    raise FeatureError(f"geometry must be an object or null, got {geometry!r}")
                kwargs["geometry"] = BearingGeometry.from_dict(geometry)
            if params.get("baseline") is not None:
                kwargs["baseline"] = BaselineSpec.from_dict(params["baseline"])
            if "relative_bands" in params:
                if not isinstance(params["relative_bands"], bool):
                    raise FeatureError(
                        f"relative_bands must be true or false, got {params['relative_bands']!r}"
                    )
                kwargs["relative_bands"] = params["relative_bands"]
            spec = cls(**kwargs)
        except FeatureError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise FeatureError(f"feature spec parameters are invalid: {exc}") from exc
        if names is not None and list(names) != list(spec.names):
            raise FeatureError(
                "the bundle's feature names differ from what this build computes for the same spec: "
                "update gruwatch on this machine or retrain the model with this build"
            )
        return spec

    @classmethod
    def with_geometry(cls, geometry: BearingGeometry | None, **params: Any) -> FeatureSpec:
        """The default spec with a bearing geometry (enables the envelope features) and overrides.

        A `baseline=` or `relative_bands=True` override selects version 2, `sk_band_edges_hz=` version
        3, unless a version is given.
        """
        if params.get("sk_band_edges_hz"):
            params.setdefault("version", V3)
        if params.get("baseline") is not None or params.get("relative_bands"):
            params.setdefault("version", V2)
        try:
            return cls(geometry=geometry, **params)
        except TypeError as exc:
            raise FeatureError(f"unknown feature spec parameter: {exc}") from exc


def _positive_finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _number(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FeatureError(f"expected a number, got {v!r}")
    return float(v)


DEFAULT_SPEC = FeatureSpec()


def extract(samples: npt.ArrayLike, fs: float, rpm: float = 0.0, spec: FeatureSpec = DEFAULT_SPEC) -> F32:
    """Features of one window: float32 [spec.n_features], equal to extract_batch(samples[None])[0].

    samples: 1-D, in g, float32 or float64 (not modified). fs in Hz. rpm: shaft speed, 0 = unknown.
    Raises ProtocolError("empty") for no samples, ("nan") for NaN/inf in samples, fs or rpm,
    ("bad_field") for fs ≤ 0 or rpm < 0.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"extract takes one window (1-D samples), got shape {x.shape}; use extract_batch")
    row: F32 = extract_batch(x[None, :], fs, rpm, spec)[0]
    return row


def extract_batch(
    windows: npt.ArrayLike,
    fs: float,
    rpm: float | npt.ArrayLike = 0.0,
    spec: FeatureSpec = DEFAULT_SPEC,
) -> F32:
    """Features of N windows of equal length at one sample rate: [N, L] -> float32 [N, F].

    rpm is one speed for all windows or one per window ([N]); 0 = unknown (then spec.nominal_rpm is
    used if set, else the envelope features are 0.0). Errors as for `extract`.
    """
    x_in = np.asarray(windows)
    if x_in.ndim != 2:
        raise ValueError(f"extract_batch takes windows as a 2-D array [N, L], got shape {x_in.shape}")
    n_windows, length = x_in.shape
    if length == 0:
        raise ProtocolError("empty", "a window with no samples has no features")
    if not (np.issubdtype(x_in.dtype, np.floating) or np.issubdtype(x_in.dtype, np.integer)):
        raise ProtocolError("bad_field", f"samples must be real numbers, got dtype {x_in.dtype}")
    fs_value = _check_fs(fs)
    speeds = _check_rpm(rpm, n_windows, spec.nominal_rpm)
    if n_windows == 0:
        return np.zeros((0, spec.n_features), dtype=np.float32)
    # float32 / float64 windows are read in place (never written); other types are converted once.
    # Every step computes in float64: float32 samples are widened exactly inside the first subtraction.
    x = x_in if x_in.dtype in (np.float32, np.float64) else x_in.astype(np.float64)
    # Each row's extremes, in float64 (squares of float32 extremes overflow float32). NaN propagates
    # through max/min and ±inf shows in them: this is the finiteness check.
    high, low = x.max(axis=-1).astype(np.float64), x.min(axis=-1).astype(np.float64)
    if not (np.isfinite(high).all() and np.isfinite(low).all()):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ProtocolError("nan", f"{bad} of {x.size} samples are NaN or infinite")

    # The heavy passes over the samples run block by block (_block_spectra), in a per-thread
    # workspace; the per-window scalars are turned into features once for the whole batch.
    mean = np.empty(n_windows)
    moments = np.empty((n_windows, 3))  # 2nd, 3rd, 4th central moments
    powers = np.empty((n_windows, spec.n_bands))
    envelope = np.zeros((n_windows, len(DEFECTS)))
    sk = np.zeros((n_windows, spec.n_sk_bands))
    rows = max(4, _BLOCK_SAMPLES // length)
    ws = _workspace(min(rows, n_windows), length)
    for start in range(0, n_windows, rows):
        b = slice(start, start + rows)
        _block_spectra(
            x[b], fs_value, speeds[b], spec, ws, high[b], low[b], mean[b], moments[b], powers[b], envelope[b]
        )
        if spec.n_sk_bands:  # v3: from the block's mean-removed windows, still in the workspace
            n = sk[b].shape[0]
            sk[b] = spectral_kurtosis(ws.centred[:n], fs_value, spec.sk_band_edges_hz, spec.sk_segment_s)
    return _assemble(mean, moments, high, low, powers, envelope, sk, spec)


# Blocks of about _BLOCK_SAMPLES samples: big enough to amortise numpy's per-call costs, small
# enough that the block's arrays stay in cache.
_BLOCK_SAMPLES = 32_768


class _Workspace:
    """A block's float64 arrays, reused from call to call. Fresh numpy arrays of this size may be
    handed back to the OS by malloc when freed and faulted in again page by page on the next call:
    on the development VM a bare rFFT of 64 windows cost 4-5x more on a fresh array than on a reused
    one (docs/performance.md)."""

    def __init__(self, rows: int, length: int) -> None:
        self.centred = np.empty((rows, length))
        self.scratch = np.empty((rows, length))
        self.spectrum: C128 = np.empty((rows, length // 2 + 1), dtype=np.complex128)


_local = threading.local()
_WORKSPACES_PER_THREAD = 4


def _workspace(rows: int, length: int) -> _Workspace:
    """This thread's workspace for blocks of `rows` windows of `length` samples (a few shapes kept)."""
    cache: dict[tuple[int, int], _Workspace] | None = getattr(_local, "workspaces", None)
    if cache is None:
        cache = _local.workspaces = {}
    ws = cache.get((rows, length))
    if ws is None:
        if len(cache) >= _WORKSPACES_PER_THREAD:
            cache.pop(next(iter(cache)))
        ws = cache[(rows, length)] = _Workspace(rows, length)
    return ws


def _block_spectra(
    x: npt.NDArray[np.floating[Any]],
    fs: float,
    speeds: F64,
    spec: FeatureSpec,
    ws: _Workspace,
    high: F64,
    low: F64,
    mean: F64,
    moments: F64,
    powers: F64,
    envelope: F64,
) -> None:
    """A block of validated windows [n, L] (float32 or float64, never written): each row's mean and
    central moments, band powers, and (with a geometry) envelope features, into the given rows."""
    n_rows, length = x.shape
    inv_len = 1.0 / length  # sum·(1/L), not .mean(): the same moments without numpy's Python wrapper
    centred, scratch = ws.centred[:n_rows], ws.scratch[:n_rows]
    # Time domain, about the window's mean (an accelerometer's DC offset is not vibration); float32
    # samples are widened exactly by the copy.
    np.copyto(centred, x)
    np.multiply(centred.sum(axis=-1), inv_len, out=mean)
    np.subtract(centred, mean[:, None], out=centred)
    _row_dots(centred, centred, moments[:, 0])
    np.multiply(centred, centred, out=scratch)
    _row_dots(scratch, centred, moments[:, 1])
    _row_dots(scratch, scratch, moments[:, 2])
    moments *= inv_len

    # Band powers (g²) on the Hann-tapered periodogram, integrated over each band in Hz. One rFFT
    # per window: of the tapered window when only the bands need it, else of the window itself (the
    # envelope's input), tapered in the frequency domain.
    stop = band_stop(length, fs, spec.band_edges_hz)  # only the bins the bands reach
    spectrum = ws.spectrum[:n_rows]
    if spec.geometry is None:
        np.multiply(centred, hann_window(length), out=scratch)
        np.fft.rfft(scratch, axis=-1, out=spectrum)
        powers[:] = band_powers(spectrum[:, :stop], fs, length, spec.band_edges_hz)
        return
    np.fft.rfft(centred, axis=-1, out=spectrum)
    powers[:] = band_powers(hann_from_rect(spectrum, length, stop), fs, length, spec.band_edges_hz)

    # Envelope spectrum at the bearing's defect frequencies (needs a speed, and vibration).
    known = (speeds > 0.0) & ~_constant(moments[:, 0], high, low)
    if bool(known.all()):
        envelope[:] = _envelope_features(spectrum, length, fs, speeds, spec)
    elif bool(known.any()):
        rows = np.flatnonzero(known)
        envelope[rows] = _envelope_features(spectrum[rows], length, fs, speeds[rows], spec)


# Row dot products run as BLAS dots (np.vecdot, twice as fast as np.einsum here) of at most this
# many samples, which OpenBLAS computes on the calling thread (it may spread longer ones over
# threads: on a busy gateway that turned microseconds into milliseconds).
_DOT_CHUNK = 8192


def _row_dots(a: F64, b: F64, out: F64) -> None:
    """out[i] = a[i] · b[i] for each row."""
    length = a.shape[1]
    if length <= _DOT_CHUNK:
        np.vecdot(a, b, out=out)
        return
    out[:] = 0.0
    for start in range(0, length, _DOT_CHUNK):
        out += np.vecdot(a[:, start : start + _DOT_CHUNK], b[:, start : start + _DOT_CHUNK])


def _constant(m2: F64, high: F64, low: F64) -> npt.NDArray[np.bool_]:
    """Windows whose spread is float noise beside their largest |sample| (a stuck sensor)."""
    result: npt.NDArray[np.bool_] = m2 <= (_CONSTANT_RELATIVE_STD * np.maximum(high, -low)) ** 2
    return result


def _assemble(
    mean: F64, moments: F64, high: F64, low: F64, powers: F64, envelope: F64, sk: F64, spec: FeatureSpec
) -> F32:
    """The feature rows [N, F] (float32) from each window's scalars, for the whole batch at once."""
    floor = spec.power_floor_g2
    out = np.empty((len(mean), spec.n_features), dtype=np.float64)
    m2, m3, m4 = moments[:, 0], moments[:, 1], moments[:, 2]
    # max(x − mean) = max(x) − mean exactly (rounding is monotonic): no pass over the samples.
    peak = np.maximum(high - mean, mean - low)
    constant = _constant(m2, high, low)
    m2 = np.where(constant, 0.0, m2)
    peak = np.where(constant, 0.0, peak)
    safe_m2 = np.where(constant, 1.0, m2)
    out[:, 0] = 0.5 * np.log10(m2 + floor)
    out[:, 1] = 0.5 * np.log10(peak * peak + floor)
    out[:, 2] = np.where(constant, 0.0, peak / np.sqrt(safe_m2))
    out[:, 3] = np.where(constant, 0.0, m4 / (safe_m2 * safe_m2))
    out[:, 4] = np.where(constant, 0.0, m3 / (safe_m2 * np.sqrt(safe_m2)))
    n_time, n_bands = len(TIME_FEATURES), spec.n_bands
    bands = out[:, n_time : n_time + n_bands]
    bands[:] = np.log10(powers + floor)
    bands[constant] = math.log10(floor)  # not float noise from the mean
    if spec.relative_bands:  # the spectrum's shape: each band relative to the window's variance
        bands -= np.log10(m2 + floor)[:, None]
    out[:, n_time + n_bands : n_time + n_bands + len(DEFECTS)] = envelope
    out[:, n_time + n_bands + len(DEFECTS) :] = np.where(constant[:, None], 0.0, sk)
    return out.astype(np.float32)


def _check_fs(fs: object) -> float:
    if isinstance(fs, bool) or not isinstance(fs, int | float | np.floating | np.integer):
        raise ProtocolError("bad_field", f"sample rate must be a number, got {fs!r}")
    value = float(fs)
    if not math.isfinite(value):
        raise ProtocolError("nan", f"sample rate is {value}")
    if value <= 0.0:
        raise ProtocolError("bad_field", f"sample rate must be > 0 Hz, got {value}")
    return value


def _check_rpm(rpm: float | npt.ArrayLike, n_windows: int, nominal: float) -> F64:
    speeds = np.asarray(rpm, dtype=np.float64)
    if speeds.ndim == 0:
        speeds = np.full(n_windows, float(speeds))
    elif speeds.shape != (n_windows,):
        raise ValueError(f"rpm must be a number or one per window ({n_windows}), got shape {speeds.shape}")
    else:
        speeds = speeds.copy()
    if not np.isfinite(speeds).all():
        raise ProtocolError("nan", "shaft speed (rpm) is NaN or infinite")
    if (speeds < 0.0).any():
        raise ProtocolError("bad_field", "shaft speed (rpm) must be ≥ 0 (0 = unknown)")
    if nominal > 0.0:
        speeds[speeds == 0.0] = nominal
    return speeds


@lru_cache(maxsize=32)
def _envelope_ranges(spec: FeatureSpec) -> tuple[F64, F64]:
    """Centres (orders) and half-widths (fraction of the centre) of the reference and defect ranges."""
    assert spec.geometry is not None
    orders = spec.geometry.orders()
    harmonics = np.arange(1, spec.defect_harmonics + 1, dtype=np.float64)
    defect_orders = np.array([orders[key] * mult for _, key, mult in DEFECTS])
    ref_lo, ref_hi = spec.envelope_ref_orders
    centres = np.concatenate(([0.5 * (ref_lo + ref_hi)], np.outer(defect_orders, harmonics).ravel()))
    relative = np.full(centres.shape, spec.defect_tolerance)
    relative[0] = (ref_hi - ref_lo) / (ref_hi + ref_lo)
    centres.setflags(write=False)
    relative.setflags(write=False)
    return centres, relative


def _envelope_features(spectrum: C128, length: int, fs: float, rpm: F64, spec: FeatureSpec) -> F64:
    """log10(mean envelope power at each defect's harmonics / mean over the reference orders)."""
    assert spec.geometry is not None
    n_rows = spectrum.shape[0]
    df = fs / length
    shaft_hz = rpm / 60.0  # [n]

    # Range 0 is the reference band of orders; range 1 + d·H + (h − 1) is defect d's harmonic h.
    n_defects, n_harm = len(DEFECTS), spec.defect_harmonics
    centre_orders, relative_half = _envelope_ranges(spec)
    centres = shaft_hz[:, None] * centre_orders
    halves = np.maximum(relative_half * centres, df)
    # Only the envelope-spectrum bins below the highest range's end are read (range_means' bounds).
    reach = float(np.max(np.floor((centres + halves) / df + 1e-9))) + 1.0
    stop = int(min(reach, length // 2 + 1.0))
    envelope = analytic_envelope(spectrum, length, fs, spec.envelope_band_hz)
    power = envelope_power_spectrum(envelope, max(stop, 1), overwrite=True)
    means, counts = range_means(power, centres, halves, df)

    reference = means[:, 0:1]
    present = (counts[:, 1:] > 0) & (centres[:, 1:] <= fs / 2.0)
    present = present.reshape(n_rows, n_defects, n_harm)
    n_present = present.sum(axis=-1)
    harmonic_means = means[:, 1:].reshape(n_rows, n_defects, n_harm)
    defect_mean = np.where(present, harmonic_means, 0.0).sum(axis=-1) / np.maximum(n_present, 1)

    valid = (n_present > 0) & (counts[:, 0:1] > 0) & (reference > 0.0)
    ratio = np.divide(defect_mean, reference, out=np.ones_like(defect_mean), where=valid)
    result: F64 = np.where(valid, np.log10(np.maximum(ratio, _MIN_ENVELOPE_RATIO)), 0.0)
    return result
