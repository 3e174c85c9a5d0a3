"""The one in-memory form of training data: a `Run` of windows from one sensor, with optional labels.

Every loader (simulator datasets, FEMTO/PRONOSTIA, CWRU, later agent exports) returns `list[Run]`;
everything downstream (features, training, evaluation) reads only this form. Also here: the split
of runs into train/validation by machine (never by window), and the data fingerprint written into
a model bundle's card.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.bearing import BearingGeometry
from edge_agent.errors import GruwatchError

SOURCES: frozenset[str] = frozenset({"sim", "femto", "cwru", "agent"})


class DataError(GruwatchError, ValueError):
    """Training data that cannot be read or does not make sense; the message says what to fix."""

    reason = "bad_data"


@dataclass
class RunLabels:
    """What the data knows about each window of a run (arrays are aligned with `Run.windows`).

    rul_s: remaining life in seconds, +inf where the run does not fail within its horizon.
    degraded: True once a fault is known to be present (simulator: severity > 0; CWRU fault files:
        all True; FEMTO and event-labelled runs: all False, i.e. unknown; the trainer derives its own
        "degraded" targets from rul_s and a horizon).
    fault: per-window class name ("healthy", "outer", "inner", "ball", "cage" for the simulator;
        "normal", "IR007", ..., "OR021" for CWRU; "unknown" where the data does not say).
    severity: float per window where known (simulator), else None.
    failed_at_end: the run ends at end of life (a failure).
    """

    rul_s: np.ndarray
    degraded: np.ndarray
    fault: np.ndarray
    severity: np.ndarray | None
    failed_at_end: bool

    def __post_init__(self) -> None:
        self.rul_s = np.asarray(self.rul_s, dtype=np.float64)
        self.degraded = np.asarray(self.degraded, dtype=bool)
        self.fault = np.asarray(self.fault, dtype=object)
        if self.severity is not None:
            self.severity = np.asarray(self.severity, dtype=np.float64)
        self.failed_at_end = bool(self.failed_at_end)
        n = self.rul_s.shape[0]
        arrays = {"rul_s": self.rul_s, "degraded": self.degraded, "fault": self.fault}
        if self.severity is not None:
            arrays["severity"] = self.severity
        for name, arr in arrays.items():
            if arr.ndim != 1 or arr.shape[0] != n:
                raise DataError(f"RunLabels.{name} has shape {arr.shape}; expected ({n},) like rul_s")
        if np.isnan(self.rul_s).any():
            raise DataError("RunLabels.rul_s holds NaN; use +inf for 'does not fail within the horizon'")

    def __len__(self) -> int:
        return int(self.rul_s.shape[0])

    @property
    def failure_after_end_s(self) -> float | None:
        """Time from the last window to a failure the labels know but the run does not reach (a
        recording cut short, e.g. FEMTO's Test_set); None when the run ends in it or none is known."""
        if self.failed_at_end or self.rul_s.size == 0:
            return None
        last = float(self.rul_s[-1])
        return last if np.isfinite(last) and last > 0 else None

    def take(self, index: np.ndarray | slice) -> RunLabels:
        """The labels of a subset of windows (same order as `index`)."""
        return RunLabels(
            rul_s=self.rul_s[index],
            degraded=self.degraded[index],
            fault=self.fault[index],
            severity=None if self.severity is None else self.severity[index],
            failed_at_end=self.failed_at_end,
        )


@dataclass
class Run:
    """Ordered windows of one sensor on one machine (one bearing life, recording or collection).

    windows: float32 [N, L] in g, in time order; ts: float64 [N] seconds since the run's start;
    rpm 0.0 = unknown; source in SOURCES; meta holds format-specific facts (CWRU: load, fault size,
    file; sim: onset_s, failure_s; any run with absolute time: start_epoch_s = epoch seconds of ts 0).
    """

    run_id: str
    machine: str
    sensor: str
    source: str
    fs: float
    rpm: float
    windows: np.ndarray
    ts: np.ndarray
    geometry: BearingGeometry | None
    labels: RunLabels | None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise DataError(f"Run.source {self.source!r} is not one of {sorted(SOURCES)}")
        self.fs = float(self.fs)
        self.rpm = float(self.rpm)
        if not self.fs > 0:
            raise DataError(f"run {self.run_id}: sample rate must be > 0 Hz, got {self.fs}")
        self.windows = np.asarray(self.windows, dtype=np.float32)
        self.ts = np.asarray(self.ts, dtype=np.float64)
        if self.windows.ndim != 2:
            raise DataError(f"run {self.run_id}: windows must be 2-D [N, L], got shape {self.windows.shape}")
        n = self.windows.shape[0]
        if self.ts.shape != (n,):
            raise DataError(f"run {self.run_id}: ts has shape {self.ts.shape}, expected ({n},)")
        if n > 1 and np.any(np.diff(self.ts) < 0):
            raise DataError(f"run {self.run_id}: ts must be in time order (non-decreasing)")
        if self.labels is not None and len(self.labels) != n:
            raise DataError(f"run {self.run_id}: {len(self.labels)} labels for {n} windows")

    @property
    def n_windows(self) -> int:
        return int(self.windows.shape[0])

    @property
    def window_length(self) -> int:
        return int(self.windows.shape[1])

    def __repr__(self) -> str:
        lab = "unlabelled" if self.labels is None else f"failed_at_end={self.labels.failed_at_end}"
        return (
            f"Run({self.run_id!r}, machine={self.machine!r}, sensor={self.sensor!r}, source={self.source!r}, "
            f"windows={self.windows.shape}, fs={self.fs:g}, rpm={self.rpm:g}, {lab})"
        )


def split_by_machine(
    runs: Sequence[Run],
    *,
    val_fraction: float,
    seed: int,
    key: Callable[[Run], str] | None = None,
    stratify: bool = True,
) -> tuple[list[Run], list[Run]]:
    """Split runs into (train, validation) so that no machine appears on both sides; never by window.

    Machines are shuffled with `seed` (deterministic) and about `val_fraction` of them go to validation,
    at least one when there are two or more machines and val_fraction > 0, and never all of them.
    With `stratify`, machines that reach a failure (any run with failed_at_end) and machines that do not
    are split separately, so both sides see failures when there are enough. `key` groups by something
    other than the machine id (e.g. `lambda r: str(r.meta["load"])` for CWRU's split by motor load).
    Runs keep their input order on each side.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    group_of = key or (lambda r: r.machine)
    groups: dict[str, bool] = {}
    for run in runs:
        g = str(group_of(run))
        fails = run.labels is not None and run.labels.failed_at_end
        groups[g] = groups.get(g, False) or fails
    names = sorted(groups)
    if val_fraction == 0.0 or len(names) < 2:
        return list(runs), []
    rng = np.random.default_rng(seed)
    strata = [[n for n in names if groups[n]], [n for n in names if not groups[n]]] if stratify else [names]
    val: set[str] = set()
    leftovers: list[str] = []
    for stratum in strata:
        order = [stratum[i] for i in rng.permutation(len(stratum))]
        k = int(np.floor(val_fraction * len(order) + 0.5))
        val.update(order[:k])
        leftovers.extend(order[k:])
    if not val:  # rounding gave nothing: take one machine, so validation is never silently empty
        val.add(leftovers[int(rng.integers(len(leftovers)))])
    if len(val) == len(names):  # and never leave training empty
        val.discard(sorted(val)[int(rng.integers(len(val)))])
    train_runs = [r for r in runs if str(group_of(r)) not in val]
    val_runs = [r for r in runs if str(group_of(r)) in val]
    return train_runs, val_runs


def _hash_array(h: Any, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())


def fingerprint(runs: Sequence[Run]) -> str:
    """SHA-256 hex of the data's identity: ids, rates, samples, times and labels of every run.

    Independent of the order of `runs` (they are hashed sorted by run_id) and of `meta`; any change to
    a sample, a timestamp or a label changes it. This is the bundle card's training_data.fingerprint.
    """
    h = hashlib.sha256(b"gruwatch-runs-v1\n")
    for run in sorted(runs, key=lambda r: (r.run_id, r.machine, r.sensor)):
        head = {
            "run_id": run.run_id,
            "machine": run.machine,
            "sensor": run.sensor,
            "source": run.source,
            "fs": run.fs,
            "rpm": run.rpm,
            "geometry": None if run.geometry is None else run.geometry.to_dict(),
        }
        h.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
        _hash_array(h, run.windows.astype(np.float32, copy=False))
        _hash_array(h, run.ts)
        if run.labels is None:
            h.update(b"unlabelled")
        else:
            lab = run.labels
            _hash_array(h, lab.rul_s)
            _hash_array(h, lab.degraded)
            h.update("\x1f".join(str(f) for f in lab.fault).encode())
            if lab.severity is not None:
                _hash_array(h, lab.severity)
            h.update(b"failed" if lab.failed_at_end else b"survived")
    return h.hexdigest()


def resample(x: np.ndarray, fs: float, target_fs: float, *, axis: int = -1) -> np.ndarray:
    """`x` sampled at `fs` resampled to `target_fs` along `axis` (polyphase FIR, anti-aliased).

    An integer ratio such as CWRU's 48 kHz → 12 kHz is a plain decimation by 4
    (scipy.signal.resample_poly with up=1, down=4); other ratios use the smallest fraction within
    1e-6 of target_fs/fs. Returns float32; the same object when the rates already match.
    """
    from fractions import Fraction

    from scipy.signal import resample_poly

    if fs == target_fs:
        return np.asarray(x, dtype=np.float32)
    if not (fs > 0 and target_fs > 0):
        raise DataError(f"cannot resample from {fs} Hz to {target_fs} Hz; rates must be > 0")
    ratio = Fraction(target_fs / fs).limit_denominator(10_000)
    if abs(float(ratio) - target_fs / fs) > 1e-6 * target_fs / fs:
        raise DataError(
            f"no small rational ratio from {fs:g} Hz to {target_fs:g} Hz; choose another target_fs"
        )
    y = resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=axis)
    return np.asarray(y, dtype=np.float32)


def resample_run(run: Run, target_fs: float) -> Run:
    """The run with every window resampled to `target_fs` (window length scales with the rate).

    Each window is resampled on its own (snapshots are not contiguous in time). Labels, times and meta
    are kept; meta["fs_original"] records the rate the data was recorded at.
    """
    if run.fs == target_fs:
        return run
    from dataclasses import replace

    windows = resample(run.windows, run.fs, target_fs, axis=1)
    meta = {**run.meta, "fs_original": run.meta.get("fs_original", run.fs)}
    return replace(run, fs=float(target_fs), windows=windows, meta=meta)


def trained_on(runs: Sequence[Run]) -> dict[str, Any] | None:
    """The bundle card's `trained_on` for a model fitted and calibrated on `runs` (None: no windows).

    Distinct sample rates, shortest and longest window (samples), lowest and highest known shaft
    speed (runs with rpm 0 = unknown left out; None when no run knows it), lowest and highest
    per-window RMS (g), and the number of windows. The agent refuses windows outside it
    (edge_agent.trained_on, docs/model-bundle.md).
    """
    used = [r for r in runs if r.n_windows > 0]
    if not used:
        return None
    speeds = [r.rpm for r in used if r.rpm > 0]
    rms = np.concatenate([np.sqrt(np.mean(np.square(r.windows, dtype=np.float64), axis=1)) for r in used])
    rms = rms[np.isfinite(rms)]
    return {
        "sample_rates_hz": sorted({float(r.fs) for r in used}),
        "window_samples": [min(r.window_length for r in used), max(r.window_length for r in used)],
        "rpm": [min(speeds), max(speeds)] if speeds else None,
        "rms_g": [float(rms.min()), float(rms.max())] if rms.size else None,
        "windows": int(sum(r.n_windows for r in used)),
    }
