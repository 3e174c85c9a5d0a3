"""Spectral kernels for vibration features: band powers, analytic envelope, narrow-band spectrum means.

Pure numpy, vectorised over windows (rows of a 2-D array, FFT along the last axis), float64 inside.
Everything takes frequencies in Hz and converts to FFT bins here, so callers (edge_agent.features)
never see a bin index. The conventions, used throughout and checked against scipy in
tests/edge_agent/test_features.py:

- Window length L, sample rate fs, bin spacing df = fs / L, rFFT bins k = 0 .. L // 2 at k·df.
- Taper: the periodic Hann window w[n] = 0.5 − 0.5·cos(2πn / L) (scipy.signal.get_window("hann", L)).
- One-sided power spectral density of a tapered window x·w (g²/Hz), the same for every bin:
      P[k] = 2·|rfft(x·w)[k]|² / (fs · Σw²)
  and bin k stands for the frequency interval [(k − ½)·df, (k + ½)·df] clipped to [0, fs/2].
  Integrating P over the clipped intervals gives exactly Σ(x·w)² / Σw² (Parseval), so the power in a
  band of Hz is the variance that band contributes, independent of L and fs. A bin that straddles a
  band edge contributes in proportion to its overlap; a band above fs/2 has power 0.
- No matrix products: numpy hands those to a threaded BLAS, which on a busy 2-core gateway turned a
  2 µs product into milliseconds now and then. Cumulative sums and gathers are as fast and steady.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

# Bin-boundary comparisons tolerate this much rounding (in units of bins), so that a frequency that
# is mathematically on a bin is treated as on it whatever the float noise.
_BIN_SLACK = 1e-9


def _readonly(a: F64) -> F64:
    a.setflags(write=False)
    return a


@lru_cache(maxsize=64)
def hann_window(n: int) -> F64:
    """Periodic Hann window of length n (read-only, cached); [1.0] when n == 1."""
    if n == 1:
        return _readonly(np.ones(1))
    k = np.arange(n, dtype=np.float64)
    return _readonly(0.5 - 0.5 * np.cos(2.0 * np.pi * k / n))


@lru_cache(maxsize=64)
def _band_plan(
    n: int, fs: float, edges_hz: tuple[float, ...]
) -> tuple[F64, npt.NDArray[np.intp], F64, float]:
    """Per-bin widths (Hz), and for each edge the bin that holds it and how far into that bin it is.

    The power below frequency e is I(e) = Σ_{k<j} P[k]·width[k] + P[j]·into, with j the bin whose
    interval holds min(e, fs/2); a band's power is I(high) − I(low). Also returns 2 / (fs·Σw²).
    """
    df = fs / n
    half = n // 2
    k = np.arange(half + 1, dtype=np.float64)
    lo = np.clip((k - 0.5) * df, 0.0, fs / 2.0)
    width = np.clip((k + 0.5) * df, 0.0, fs / 2.0) - lo
    edges = np.minimum(np.asarray(edges_hz, dtype=np.float64), fs / 2.0)
    bins = np.minimum(np.floor(edges / df + 0.5), half).astype(np.intp)
    into = np.clip(edges - lo[bins], 0.0, width[bins])
    w = hann_window(n)
    for a in (width, bins, into):
        a.setflags(write=False)
    return width, bins, into, 2.0 / (fs * float(np.dot(w, w)))


def power_spectrum(x: F64) -> F64:
    """|rfft(x·w)|² along the last axis (unnormalised), with w the periodic Hann window."""
    spectrum: C128 = np.fft.rfft(x * hann_window(x.shape[-1]), axis=-1)
    return spectrum.real**2 + spectrum.imag**2


def hann_from_rect(spectrum: C128, n: int, stop: int | None = None) -> C128:
    """rfft(x·w) from rfft(x) (length-n windows) without another FFT: the periodic Hann window is
    0.5 − 0.25·e^(+2πin/L) − 0.25·e^(−2πin/L), so tapering is the 3-tap convolution
    0.5·X[k] − 0.25·(X[k−1] + X[k+1]) over the full (Hermitian, periodic) spectrum.

    stop: taper only bins 0 .. stop − 1 (the same values as the full result's first `stop` bins)."""
    if n == 1:
        return spectrum.copy()
    half = n // 2
    if stop is not None and 2 <= stop < half:  # bins 0 .. stop: only bin −1 wraps (to conj(X[1]))
        head = spectrum[..., : stop + 1]
        ext = np.empty((*spectrum.shape[:-1], stop + 2), dtype=np.complex128)
        ext[..., 1:] = head
        ext[..., 0] = np.conj(spectrum[..., 1])
        part: C128 = 0.5 * head[..., :stop] - 0.25 * (ext[..., :stop] + ext[..., 2:])
        return part

    def full_bin(j: int) -> C128:  # X[j mod n] of the full DFT, from the one-sided rFFT
        j %= n
        column: C128 = spectrum[..., j] if j <= half else np.conj(spectrum[..., n - j])
        return column

    extended = np.empty((*spectrum.shape[:-1], half + 3), dtype=np.complex128)
    extended[..., 1 : half + 2] = spectrum
    extended[..., 0] = full_bin(-1)
    extended[..., half + 2] = full_bin(half + 1)
    tapered: C128 = 0.5 * spectrum - 0.25 * (extended[..., :-2] + extended[..., 2:])
    return tapered if stop is None else tapered[..., :stop]


def band_stop(n: int, fs: float, edges_hz: tuple[float, ...]) -> int:
    """How many leading bins of a length-n spectrum `band_powers` reads for these band edges."""
    _, bins, _, _ = _band_plan(n, float(fs), edges_hz)
    return int(bins[-1]) + 1


def band_powers(hann_spectrum: C128, fs: float, n: int, edges_hz: tuple[float, ...]) -> F64:
    """Power (g², i.e. the variance contributed) in each band [edges[b], edges[b+1]] Hz, per row.

    hann_spectrum = rfft(x·w) of mean-removed windows of length n (scipy's detrend="constant"), or
    its first `band_stop(n, fs, edges_hz)` bins or more (the rest is never read); result [N, B].
    """
    width, bins, into, scale = _band_plan(n, float(fs), edges_hz)
    reach = int(bins[-1]) + 1  # the bins past the last edge are never read
    head = hann_spectrum[:, :reach]
    power = head.real * head.real  # ∝ g²/Hz; scale applied at the end
    power += head.imag * head.imag
    below = np.empty((power.shape[0], reach + 1), dtype=np.float64)
    below[:, 0] = 0.0
    np.cumsum(power * width[:reach], axis=-1, out=below[:, 1:])
    integral = below[:, bins] + power[:, bins] * into  # I(edge) for every edge, [N, E]
    result: F64 = (integral[:, 1:] - integral[:, :-1]) * scale
    return result


@lru_cache(maxsize=64)
def _passband(n: int, fs: float, lo_hz: float, hi_hz: float) -> tuple[int, int]:
    """Bins [k0, k1) with lo_hz ≤ k·df ≤ hi_hz, excluding DC and the Nyquist bin; may be empty."""
    df = fs / n
    k0 = max(1, math.ceil(lo_hz / df - _BIN_SLACK))
    k1 = min((n + 1) // 2, math.floor(hi_hz / df + _BIN_SLACK) + 1)
    return k0, max(k0, k1)


def analytic_envelope(spectrum: C128, n: int, fs: float, band_hz: tuple[float, float]) -> F64:
    """|analytic signal| of each row band-passed to band_hz, from spectrum = rfft(x) of length-n rows.

    Equal to abs(scipy.signal.hilbert(irfft(band-passed rfft(x)))). Bins are kept where
    band_hz[0] ≤ k·df ≤ band_hz[1]; DC and the Nyquist bin are never kept, so a band that lies at
    or above fs/2 keeps nothing and the envelope is all zeros.
    """
    shape = (*spectrum.shape[:-1], n)
    k0, k1 = _passband(n, float(fs), float(band_hz[0]), float(band_hz[1]))
    if k1 <= k0:
        return np.zeros(shape, dtype=np.float64)
    full = np.zeros(shape, dtype=np.complex128)
    np.multiply(spectrum[..., k0:k1], 2.0, out=full[..., k0:k1])
    analytic: C128 = np.fft.ifft(full, axis=-1)
    magnitude: F64 = np.abs(analytic)  # np.abs, not np.hypot: the latter is ~15x slower here
    return magnitude


def envelope_power_spectrum(envelope: F64, stop: int | None = None, *, overwrite: bool = False) -> F64:
    """|rfft((e − ē_w)·w)|² per row, with ē_w the Hann-weighted mean, so the DC bin is exactly 0.

    Removing the weighted (not the plain) mean stops the envelope's large mean from leaking into the
    first bins through the taper, where cage (FTF) lines live at short windows.
    stop: only bins 0 .. stop − 1 (the same values). overwrite: `envelope` may be used as scratch.
    """
    w = hann_window(envelope.shape[-1])
    weighted_mean = np.einsum("ij,j->i", envelope, w) / float(w.sum())  # einsum: no BLAS
    tapered = envelope if overwrite else np.empty_like(envelope)
    np.subtract(envelope, weighted_mean[..., None], out=tapered)
    np.multiply(tapered, w, out=tapered)
    spectrum: C128 = np.fft.rfft(tapered, axis=-1)[..., :stop]
    power: F64 = spectrum.real**2 + spectrum.imag**2
    return power


def range_means(power: F64, centre_hz: F64, half_width_hz: F64, df: float) -> tuple[F64, F64]:
    """Mean of `power` over the bins k ≥ 1 with |k·df − centre| ≤ half_width, for many ranges per row.

    power [N, K]; centre_hz, half_width_hz [N, M]. Returns (means [N, M], counts [N, M]); a range
    with no bin (count 0) has mean 0. Runs in O(N·(K + M)) through a cumulative sum.
    """
    n_rows, n_bins = power.shape
    cumulative = np.zeros((n_rows, n_bins + 1), dtype=np.float64)
    np.cumsum(power, axis=-1, out=cumulative[:, 1:])
    first = np.ceil((centre_hz - half_width_hz) / df - _BIN_SLACK)
    stop = np.floor((centre_hz + half_width_hz) / df + _BIN_SLACK) + 1.0
    first = np.minimum(np.maximum(first, 1.0), float(n_bins))
    stop = np.maximum(np.minimum(stop, float(n_bins)), first)
    offsets = (np.arange(n_rows, dtype=np.int64) * (n_bins + 1))[:, None]
    flat = cumulative.ravel()
    sums = flat[stop.astype(np.int64) + offsets] - flat[first.astype(np.int64) + offsets]
    counts: F64 = stop - first
    means: F64 = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return means, counts


def spectral_kurtosis(x: F64, fs: float, edges_hz: tuple[float, ...], segment_s: float) -> F64:
    """Spectral kurtosis per band of mean-removed windows x [n, L] -> [n, len(edges_hz) − 1].

    Short-time spectrum: Hann-tapered segments of Nw = max(4, segment_s·fs rounded to even) samples,
    hop Nw / 2. Per bin f: SK(f) = mean_t |X(t, f)|⁴ / (mean_t |X(t, f)|²)² − 2 (Antoni's estimator:
    0 for stationary Gaussian noise, −1 for a steady tone, large for impulses ringing at f). A band's
    value is the mean SK over the bins whose centre lies in [lo, hi), DC and the Nyquist bin excluded;
    0.0 for a band without such a bin, a bin without power, or a window shorter than 4 segments.
    """
    n_rows, length = x.shape
    n_bands = len(edges_hz) - 1
    out = np.zeros((n_rows, n_bands))
    nw = max(4, 2 * round(segment_s * fs / 2.0))
    hop = nw // 2
    n_seg = (length - nw) // hop + 1 if length >= nw else 0
    if n_seg < 4 or n_bands < 1:
        return out
    starts = np.arange(n_seg) * hop
    segments = x[:, starts[:, None] + np.arange(nw)[None, :]] * hann_window(nw)  # [n, S, Nw]
    power = np.abs(np.fft.rfft(segments, axis=-1)) ** 2  # [n, S, Nw/2 + 1]
    m2 = power.mean(axis=1)
    m4 = (power * power).mean(axis=1)
    sk = np.divide(m4, m2 * m2, out=np.full_like(m2, 2.0), where=m2 > 0.0) - 2.0  # [n, Nw/2 + 1]
    freqs = np.arange(nw // 2 + 1) * (fs / nw)
    inner = (np.arange(nw // 2 + 1) > 0) & (np.arange(nw // 2 + 1) < nw // 2)
    for b in range(n_bands):
        use = inner & (freqs >= edges_hz[b]) & (freqs < edges_hz[b + 1])
        if use.any():
            out[:, b] = sk[:, use].mean(axis=1)
    return out
