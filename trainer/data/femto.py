"""Loader for FEMTO-ST PRONOSTIA bearing folders (IEEE PHM 2012), run-to-failure vibration snapshots.

A bearing folder (e.g. `Learning_set/Bearing1_2`) holds `acc_NNNNN.csv` or `acc_NNNNN.csv.gz`, one
snapshot each: 2,560 rows of `hour, minute, second, microsecond, horizontal_g, vertical_g` (no header),
0.1 s at 25.6 kHz, one snapshot every 10 s, in file-number order. Some original files use ';' as the
separator (and then possibly ',' as the decimal mark); both are read.

Each bearing becomes two runs (sensor "horizontal" and "vertical") with machine = the folder name.
Window i (numbered from the first file) is at ts = (number_i - number_0) × 10 s; the last snapshot is
the end of life, so rul_s = (number_last - number_i) × 10 s (the README's (N - i) × 10 s with 1-based i:
the last snapshot has rul 0). Faults are natural and not labelled: fault "unknown", degraded all False.

The challenge's `Test_set` folders hold recordings cut short before the failure; their remaining
life after the last snapshot was published with the challenge's results (`TEST_SET_RUL_S`). A bearing
folder inside a `Test_set` folder is labelled with it (rul_s = its own count + that remainder) and is
not a run that ends in a failure (failed_at_end False: no lead time is measured on it). The complete
recordings of the same bearings are in `Full_Test_Set`; `load_runs` keeps those when both are given.
"""

from __future__ import annotations

import gzip
import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bearing import PRESETS
from trainer.data.runs import DataError, Run, RunLabels

FS = 25_600.0
SNAPSHOT_INTERVAL_S = 10.0
SNAPSHOT_ROWS = 2560
CHANNELS: tuple[str, ...] = ("horizontal", "vertical")
# Operating conditions from the PRONOSTIA documentation: condition -> (rpm, radial load in N).
CONDITIONS: dict[int, tuple[float, float]] = {1: (1800.0, 4000.0), 2: (1650.0, 4200.0), 3: (1500.0, 5000.0)}

# Remaining useful life after the last snapshot of each truncated Test_set recording, seconds, as
# published with the IEEE PHM 2012 challenge's results. (Bearing1_4's 339 s is the published figure;
# some later papers use 2,900 s for it.)
TEST_SET_RUL_S: dict[str, float] = {
    "Bearing1_3": 5730.0,
    "Bearing1_4": 339.0,
    "Bearing1_5": 1610.0,
    "Bearing1_6": 1460.0,
    "Bearing1_7": 7570.0,
    "Bearing2_3": 7530.0,
    "Bearing2_4": 1390.0,
    "Bearing2_5": 3090.0,
    "Bearing2_6": 1290.0,
    "Bearing2_7": 580.0,
    "Bearing3_3": 820.0,
}
TRUNCATED_SET = "test_set"  # the challenge's folder of truncated recordings (compared case-free)

_FILE = re.compile(r"^acc_(\d+)\.csv(\.gz)?$")
_BEARING = re.compile(r"^Bearing(\d+)_(\d+)$")


def snapshot_files(folder: Path) -> list[tuple[int, Path]]:
    """(number, path) of the folder's acc_* snapshots in file-number order; [] if there are none."""
    found: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _FILE.match(p.name)
        if not m or not p.is_file():
            continue
        n = int(m.group(1))
        if n in found:
            raise DataError(
                f"{folder}: snapshot {n} is there twice ({found[n].name} and {p.name}); keep one of them"
            )
        found[n] = p
    return sorted(found.items())


def is_femto_bearing(path: Path) -> bool:
    return path.is_dir() and any(_FILE.match(p.name) for p in path.iterdir())


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc}); re-extract the dataset") from exc
    if b";" in raw:  # European export: ';' separates, ',' may be the decimal mark
        raw = raw.replace(b",", b".").replace(b";", b",")
    if raw and not raw.endswith(b"\n"):
        raw += b"\n"
    return raw.replace(b"\r\n", b"\n")


def _parse(blob: bytes) -> np.ndarray:
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(blob), header=None, engine="c", dtype=np.float64, skip_blank_lines=False)
    values: np.ndarray = frame.to_numpy()
    return values


def _parse_each(files: list[tuple[int, Path]], blobs: list[bytes]) -> np.ndarray:
    """Slow path that names the first bad file (wrong row or column count, or not numbers)."""
    parts = []
    for (_, path), blob in zip(files, blobs, strict=True):
        try:
            part = _parse(blob)
        except ValueError as exc:
            raise DataError(f"{path}: not a FEMTO snapshot of numbers ({exc})") from exc
        if part.shape != (SNAPSHOT_ROWS, 6):
            raise DataError(
                f"{path}: {part.shape[0]} rows × {part.shape[1]} columns; a FEMTO acc snapshot has "
                f"{SNAPSHOT_ROWS} rows of hour, minute, second, microsecond, horizontal, vertical"
            )
        parts.append(part)
    return np.concatenate(parts)


def read_snapshots(folder: Path, *, progress: bool = False) -> tuple[list[int], np.ndarray]:
    """File numbers and the stacked snapshots, float64 [n_files, 2560, 6], of one bearing folder."""
    from tqdm import tqdm

    files = snapshot_files(folder)
    if not files:
        raise DataError(f"{folder}: no acc_*.csv or acc_*.csv.gz snapshots; is this a FEMTO bearing folder?")
    # Decompression releases the GIL, so two threads overlap it; parsing is one C-parser call.
    with ThreadPoolExecutor(max_workers=2) as pool:
        blobs = list(
            tqdm(
                pool.map(_read_bytes, [p for _, p in files]),
                total=len(files),
                desc=f"femto {folder.name}",
                unit="file",
                disable=not progress,
                leave=False,
            )
        )
    counts = [b.count(b"\n") for b in blobs]
    data: np.ndarray | None = None
    if all(c == SNAPSHOT_ROWS for c in counts):
        try:
            data = _parse(b"".join(blobs))
        except ValueError:
            data = None
        if data is not None and data.shape != (SNAPSHOT_ROWS * len(files), 6):
            data = None
    if data is None:
        data = _parse_each(files, blobs)
    if not np.isfinite(data[:, 4:]).all():
        bad = int(np.flatnonzero(~np.isfinite(data[:, 4:]).all(axis=1))[0]) // SNAPSHOT_ROWS
        raise DataError(f"{files[bad][1]}: non-finite acceleration values")
    return [n for n, _ in files], data.reshape(len(files), SNAPSHOT_ROWS, 6)


def load_femto_bearing(folder: str | Path, *, progress: bool = False) -> list[Run]:
    """The two runs (horizontal, vertical) of one FEMTO bearing folder."""
    folder = Path(folder)
    bearing = folder.name
    after_last = _rul_after_last(folder)  # checked before the files are read
    numbers, snaps = read_snapshots(folder, progress=progress)
    nums = np.asarray(numbers, dtype=np.float64)
    ts = (nums - nums[0]) * SNAPSHOT_INTERVAL_S
    rul = (nums[-1] - nums) * SNAPSHOT_INTERVAL_S + after_last
    # Sanity check from the clock columns (time of day of each snapshot's first row).
    first = snaps[:, 0, :4]
    clock = first[:, 0] * 3600.0 + first[:, 1] * 60.0 + first[:, 2] + first[:, 3] / 1e6
    gaps = np.mod(np.diff(clock), 86_400.0) / np.maximum(np.diff(nums), 1.0)
    m = _BEARING.match(bearing)
    condition = int(m.group(1)) if m else None
    rpm, load_n = CONDITIONS.get(condition or 0, (0.0, None))
    meta: dict[str, Any] = {
        "bearing": bearing,
        "folder": str(folder),
        "condition": condition,
        "radial_load_n": load_n,
        "first_file_number": numbers[0],
        "n_files": len(numbers),
        "clock_start_s_of_day": float(clock[0]),
        "clock_interval_s": float(np.median(gaps)) if gaps.size else None,
        "truncated": after_last > 0,
        "rul_after_last_s": after_last,
    }
    runs = []
    for channel, sensor in enumerate(CHANNELS):
        runs.append(
            Run(
                run_id=f"femto-{bearing}-{sensor}",
                machine=bearing,
                sensor=sensor,
                source="femto",
                fs=FS,
                rpm=rpm,
                windows=np.ascontiguousarray(snaps[:, :, 4 + channel], dtype=np.float32),
                ts=ts,
                geometry=PRESETS["femto_6804"],
                labels=RunLabels(
                    rul_s=rul.copy(),
                    degraded=np.zeros(len(numbers), dtype=bool),
                    fault=np.full(len(numbers), "unknown", dtype=object),
                    severity=None,
                    failed_at_end=after_last == 0,
                ),
                meta=dict(meta),
            )
        )
    return runs


def is_truncated_recording(folder: Path) -> bool:
    """A bearing folder inside the challenge's Test_set folder: cut short before its failure."""
    return folder.parent.name.lower() == TRUNCATED_SET


def _rul_after_last(folder: Path) -> float:
    """Remaining life after the folder's last snapshot: 0 for a complete recording."""
    if not is_truncated_recording(folder):
        return 0.0
    if folder.name not in TEST_SET_RUL_S:
        raise DataError(
            f"{folder}: a bearing folder in a Test_set folder is read as a recording cut short before "
            f"its failure, but no remaining life is known for {folder.name} (known: "
            f"{', '.join(TEST_SET_RUL_S)}). Use the complete recording (Full_Test_Set), or move the "
            "folder out of Test_set if it runs to the failure"
        )
    return TEST_SET_RUL_S[folder.name]


def femto_bearing_folders(path: Path, *, depth: int = 3) -> list[Path]:
    """`path` itself if it is a bearing folder, else the bearing folders below it (sorted, ≤ depth)."""
    if is_femto_bearing(path):
        return [path]
    if depth == 0 or not path.is_dir():
        return []
    out: list[Path] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        out.extend(femto_bearing_folders(child, depth=depth - 1))
    return out


def load_femto(path: str | Path, *, progress: bool = False) -> list[Run]:
    """Runs of a FEMTO bearing folder, or of every bearing folder below `path` (e.g. Learning_set)."""
    root = Path(path)
    folders = femto_bearing_folders(root)
    if not folders:
        raise DataError(
            f"{root}: no FEMTO bearing folder (a folder of acc_*.csv or acc_*.csv.gz snapshots) found"
        )
    return [run for folder in folders for run in load_femto_bearing(folder, progress=progress)]
