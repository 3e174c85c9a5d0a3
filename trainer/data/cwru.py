"""Loader for Case Western Reserve University bearing data: folders of drive-end `.mat` recordings.

Descriptive file names carry the labels: `12k_Drive_End_<fault>_<load>_<no>.mat` (12 kHz),
`48k_Drive_End_<fault>_<load>_<no>.mat` (48 kHz) and `normal_<load>_<no>.mat` (the healthy baseline,
recorded at 48 kHz), with <fault> like IR007, B014 or OR021@6 (the "@6" position is dropped from the
class name). Any other name — the Data Center's own `105.mat`, short copies like `IR007_0.mat` — is
identified by the recording number of its `X<no>_DE_time` variable (`cwru_numbers.RECORDINGS`).
Each file holds `X<no>_DE_time` (g) and `X<no>RPM`; the variable number does not always match the
file's (`48k_Drive_End_IR014_0_174.mat` holds `X173_*`, `normal_0_97.mat` holds `X097_*`), so the
`*_DE_time` variable is found whatever its number.

Each file becomes one Run: the whole recording resampled to `target_fs` (48 kHz → 12 kHz is a
decimation by 4), cut into windows of `window` samples every `hop` samples. machine =
`cwru-<class>-load<load>-<no>`, so every file is its own group; CWRU's usual split by motor load uses
`split_by_machine(..., key=lambda r: str(r.meta["load"]))`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bearing import PRESETS
from edge_agent.errors import GruwatchWarning
from trainer.data.cwru_numbers import FAN_END, RECORDINGS, fault_size_in
from trainer.data.runs import DataError, Run, RunLabels, resample

# Motor speed by load (hp) from the CWRU data description, used when a file has no X<no>RPM.
RPM_BY_LOAD: dict[int, float] = {0: 1797.0, 1: 1772.0, 2: 1750.0, 3: 1730.0}
NORMAL_FS = 48_000.0  # every CWRU normal baseline is a 48 kHz recording (data README)

_FAULT_FILE = re.compile(
    r"^(?P<rate>12|48)k_Drive_End_(?P<kind>IR|B|OR)(?P<size>\d{3})(?:@\d+)?_(?P<load>\d)_(?P<no>\d+)\.mat$"
)
_VAR = re.compile(r"^X(\d+)_DE_time$")
_NORMAL_FILE = re.compile(r"^normal_(?P<load>\d)_(?P<no>\d+)\.mat$", re.IGNORECASE)


@dataclass(frozen=True)
class CwruName:
    """What a CWRU file name says: class ("normal", "IR007", ...), fault size (in), load (hp), rate."""

    cls: str
    fault_size_in: float
    load: int
    number: int
    fs: float
    labelled_by: str = "file name"  # or "recording number" (cwru_numbers)


def parse_name(name: str) -> CwruName:
    """Labels from a CWRU file name; DataError naming the expected patterns otherwise.

    >>> parse_name("12k_Drive_End_OR007@6_1_131.mat")
    CwruName(cls='OR007', fault_size_in=0.007, load=1, number=131, fs=12000.0, labelled_by='file name')
    >>> parse_name("normal_0_97.mat").fs
    48000.0
    """
    m = _FAULT_FILE.match(name)
    if m:
        size = m.group("size")
        return CwruName(
            cls=f"{m.group('kind')}{size}",
            fault_size_in=int(size) / 1000.0,
            load=int(m.group("load")),
            number=int(m.group("no")),
            fs=float(m.group("rate")) * 1000.0,
        )
    m = _NORMAL_FILE.match(name)
    if m:
        return CwruName("normal", 0.0, int(m.group("load")), int(m.group("no")), NORMAL_FS)
    raise DataError(
        f"{name}: not a CWRU drive-end file name; expected 12k_Drive_End_<IR|B|OR><size>[@6]_<load>_<no>.mat, "
        "48k_Drive_End_..._<load>_<no>.mat or normal_<load>_<no>.mat"
    )


class FanEndRecordingError(DataError):
    """A CWRU fan-end fault recording: its drive-end channel watches a healthy bearing."""


def identify(path: Path) -> CwruName:
    """Labels of one CWRU file: from its descriptive name, else from the recording number of its
    `X<no>_DE_time` variable (only the variable names are read). DataError names the file otherwise
    (FanEndRecordingError for a fan-end fault recording, which a folder leaves out with a warning)."""
    try:
        return parse_name(path.name)
    except DataError:
        pass
    from scipy.io import whosmat
    from scipy.io.matlab import MatReadError

    try:
        names = [entry[0] for entry in whosmat(str(path))]
    except (OSError, ValueError, NotImplementedError, MatReadError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from exc
    numbers = [int(m.group(1)) for n in names if (m := _VAR.match(n))]
    known = [n for n in numbers if n in RECORDINGS]
    stem = int(path.stem) if path.stem.isdigit() else None
    number = stem if stem in known else (known[0] if known else None)
    if number is None and any(n in FAN_END for n in numbers):
        raise FanEndRecordingError(
            f"{path}: a CWRU fan-end fault recording (X{numbers[0]}): its drive-end channel watches a "
            "healthy bearing and the fan-end one is not read, so gruwatch cannot label it"
        )
    if number is None:
        found = ", ".join(n for n in names if n.endswith("_DE_time")) or "no *_DE_time variable"
        raise DataError(
            f"{path}: not a CWRU recording gruwatch can label: the name is not descriptive "
            "(12k_Drive_End_<IR|B|OR><size>[@6]_<load>_<no>.mat, 48k_Drive_End_..._<load>_<no>.mat, "
            f"normal_<load>_<no>.mat) and its drive-end variable ({found}) is not one of the Data "
            "Center's 12k/48k drive-end fault or normal recordings. Rename it descriptively."
        )
    rec = RECORDINGS[number]
    return CwruName(rec.cls, fault_size_in(rec.cls), rec.load, number, rec.fs, "recording number")


def read_mat(path: Path, number: int | None = None) -> tuple[np.ndarray, float | None, str]:
    """(drive-end signal float64 [n] in g, RPM or None, variable name) from one CWRU .mat file.

    With several *_DE_time variables the one numbered `number` wins; otherwise the first by name.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(str(path))
    except (OSError, ValueError, NotImplementedError, MatReadError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from exc
    de_keys = sorted(k for k in content if k.endswith("_DE_time"))
    if not de_keys:
        found = ", ".join(k for k in content if not k.startswith("__")) or "nothing"
        raise DataError(f"{path}: no *_DE_time variable (found {found}); is this a CWRU drive-end file?")
    # Prefer the variable whose number matches the file's; any single *_DE_time otherwise (quirks).
    numbered = [k for k in de_keys if (m := _VAR.match(k)) and int(m.group(1)) == number]
    key = (numbered or de_keys)[0]
    signal = np.asarray(content[key], dtype=np.float64).ravel()
    rpm_key = key.removesuffix("_DE_time") + "RPM"
    rpm_val = content.get(rpm_key)
    if rpm_val is None:
        rpm_keys = [k for k in content if k.endswith("RPM")]
        rpm_val = content[rpm_keys[0]] if len(rpm_keys) == 1 else None
    rpm = float(np.asarray(rpm_val).ravel()[0]) if rpm_val is not None and np.size(rpm_val) else None
    return signal, rpm, key


def frame(signal: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows float32 [N, window] starting every `hop` samples, and their start indices."""
    if window < 1 or hop < 1:
        raise DataError(f"window and hop must be ≥ 1 sample, got window={window}, hop={hop}")
    n = 0 if signal.size < window else 1 + (signal.size - window) // hop
    starts = np.arange(n, dtype=np.int64) * hop
    if n == 0:
        return np.zeros((0, window), dtype=np.float32), starts
    view = np.lib.stride_tricks.sliding_window_view(signal, window)[::hop][:n]
    return np.ascontiguousarray(view, dtype=np.float32), starts


def load_cwru_file(
    path: str | Path,
    *,
    window: int = 2048,
    target_fs: float = 12_000.0,
    hop: int | None = None,
    info: CwruName | None = None,
) -> Run:
    """One CWRU recording as a Run of non-overlapping (or `hop`-spaced) windows at `target_fs`."""
    path = Path(path)
    info = info or identify(path)
    signal, rpm, var = read_mat(path, info.number)
    if not np.isfinite(signal).all():
        raise DataError(f"{path}: {var} holds non-finite samples")
    resampled = resample(signal, info.fs, target_fs)
    windows, starts = frame(resampled, window, hop or window)
    if windows.shape[0] == 0:
        raise DataError(
            f"{path}: {resampled.size} samples at {target_fs:g} Hz, fewer than one window of {window}"
        )
    n = windows.shape[0]
    meta: dict[str, Any] = {
        "file": str(path),
        "class": info.cls,
        "load": info.load,
        "fault_size_in": info.fault_size_in,
        "number": info.number,
        "variable": var,
        "fs_original": info.fs,
        "n_samples_original": int(signal.size),
        "rpm_source": "file" if rpm is not None else "load table",
        "labelled_by": info.labelled_by,
    }
    return Run(
        run_id=f"cwru-{path.stem}",
        machine=f"cwru-{info.cls}-load{info.load}-{info.number}",
        sensor="DE",
        source="cwru",
        fs=target_fs,
        rpm=rpm if rpm is not None else RPM_BY_LOAD.get(info.load, 0.0),
        windows=windows,
        ts=starts / target_fs,
        geometry=PRESETS["cwru_6205"],
        labels=RunLabels(
            rul_s=np.full(n, np.inf),
            degraded=np.full(n, info.cls != "normal"),
            fault=np.full(n, info.cls, dtype=object),
            severity=None,
            failed_at_end=False,
        ),
        meta=meta,
    )


def cwru_files(path: Path) -> list[Path]:
    """The .mat files of a CWRU folder (or the file itself), sorted by name."""
    if path.is_file():
        return [path] if path.suffix.lower() == ".mat" else []
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".mat")


def is_cwru_folder(path: Path) -> bool:
    return bool(cwru_files(path)) if path.exists() else False


def load_cwru(
    path: str | Path,
    *,
    window: int = 2048,
    target_fs: float = 12_000.0,
    hop: int | None = None,
    progress: bool = False,
) -> list[Run]:
    """Every CWRU recording of a folder of .mat files (or one .mat file), one Run each."""
    from tqdm import tqdm

    root = Path(path)
    files = cwru_files(root) if root.exists() else []
    if not files:
        raise DataError(
            f"{root}: no .mat files; a CWRU folder holds files like 12k_Drive_End_IR007_0_105.mat"
        )
    labelled, fan_end = [], []
    for f in files:  # every file labelled before any signal is read
        try:
            labelled.append((f, identify(f)))
        except FanEndRecordingError:
            if root.is_file():  # asked for by name: an error, not a silent nothing
                raise
            fan_end.append(f.name)
    if fan_end and not labelled:
        raise DataError(
            f"{root}: only CWRU fan-end fault recordings ({', '.join(fan_end[:5])}), which gruwatch "
            "cannot label (their drive-end channel watches a healthy bearing); use the drive-end files"
        )
    if fan_end:
        warnings.warn(
            f"{root}: left out {len(fan_end)} CWRU fan-end fault recording(s) "
            f"({', '.join(fan_end[:5])}{' ...' if len(fan_end) > 5 else ''}): their drive-end channel "
            "watches a healthy bearing, so they cannot be labelled",
            GruwatchWarning,
            stacklevel=2,
        )
    return [
        load_cwru_file(f, window=window, target_fs=target_fs, hop=hop, info=info)
        for f, info in tqdm(
            labelled,
            desc=f"cwru {root.name}",
            unit="file",
            disable=not progress,
            leave=False,
        )
    ]
