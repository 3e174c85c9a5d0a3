"""Loader for simulator datasets (`gruwatch simulate dataset`): manifest.json plus one Parquet per run.

Format (written by simulator/dataset.py): `manifest.json` lists the runs — each with machine, sensor,
fault, fs, rpm, geometry (BearingGeometry.to_dict()), bpfo, bpfi, bsf, ftf, onset_s, failure_s (null
if the run does not fail) and file — either as a top-level list or under a "runs" key. Each Parquet
holds one run, one row per window: machine, sensor, seq, ts (int64 ns), fs, rpm,
samples (list<float32>), fault, severity, rul_s, failed, and optionally t_s (seconds since install,
used as `Run.ts` when present). meta["rpm_windows"] keeps the per-window shaft speed (Run.rpm is the
manifest's nominal speed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.bearing import BearingGeometry
from trainer.data.runs import DataError, Run, RunLabels

if TYPE_CHECKING:
    from simulator.fleet_model import SensorRun

MANIFEST = "manifest.json"
COLUMNS: tuple[str, ...] = (
    "machine",
    "sensor",
    "seq",
    "ts",
    "fs",
    "rpm",
    "samples",
    "fault",
    "severity",
    "rul_s",
    "failed",
)
_RUN_KEYS: tuple[str, ...] = ("machine", "sensor", "fs", "rpm", "file")


def is_sim_dataset(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The list of run entries of a dataset's manifest.json (validated for the keys loading needs)."""
    mpath = path / MANIFEST
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{mpath}: not a readable JSON manifest ({exc})") from exc
    entries = doc.get("runs") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise DataError(f"{mpath}: expected a list of runs (or an object with a 'runs' list)")
    for i, entry in enumerate(entries):
        missing = [k for k in _RUN_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise DataError(f"{mpath}: run #{i} lacks {', '.join(missing)}")
    return entries


def samples_matrix(column: Any, where: str) -> np.ndarray:
    """A pyarrow list<float> column (chunked or not) as float32 [N, L], without a Python loop."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if arr.null_count:
        raise DataError(f"{where}: {arr.null_count} windows have no samples (null)")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max():
        raise DataError(f"{where}: windows of different lengths ({lengths.min()}..{lengths.max()} samples)")
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(n, int(lengths[0]))


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def load_sim_run(path: Path, entry: dict[str, Any]) -> Run:
    """One run of a simulator dataset from its manifest entry."""
    import pyarrow.parquet as pq

    file = path / str(entry["file"])
    if not file.is_file():
        raise DataError(f"{file}: listed in {path / MANIFEST} but missing; the dataset is incomplete")
    table = pq.read_table(file)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{file}: missing columns {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    seq = table.column("seq").to_numpy()
    order = np.argsort(seq, kind="stable")
    windows = samples_matrix(table.column("samples"), str(file))[order]
    ts_ns = table.column("ts").to_numpy().astype(np.int64)[order]
    severity = np.asarray(table.column("severity").to_numpy(zero_copy_only=False), dtype=np.float64)[order]
    rul = table.column("rul_s").to_numpy(zero_copy_only=False)
    rul = np.asarray(rul, dtype=np.float64)[order]
    rul[np.isnan(rul)] = np.inf  # a null RUL means "no failure within the horizon"
    fault = np.asarray(table.column("fault").to_pylist(), dtype=object)[order]
    failure_s = _float_or_none(entry.get("failure_s"))
    onset_s = _float_or_none(entry.get("onset_s"))
    fs = float(entry["fs"])
    col_fs = np.unique(table.column("fs").to_numpy())
    if col_fs.size and not np.allclose(col_fs, fs):
        raise DataError(f"{file}: column fs {col_fs.tolist()} disagrees with the manifest's {fs}")
    machine, sensor = str(entry["machine"]), str(entry["sensor"])
    if "t_s" in table.column_names:  # seconds since install, written by simulator/dataset.py
        t_s = np.asarray(table.column("t_s").to_numpy(), dtype=np.float64)[order]
    else:
        t_s = (ts_ns - ts_ns[0]) / 1e9 if ts_ns.size else np.zeros(0)
    rpm_windows = np.asarray(table.column("rpm").to_numpy(), dtype=np.float64)[order]
    meta: dict[str, Any] = {
        "file": str(file),
        "fault": entry.get("fault"),
        "onset_s": onset_s,
        "failure_s": failure_s,
        # absolute time of ts == 0 (the install), so that start_epoch_s + ts is each window's epoch time
        "start_epoch_s": float(ts_ns[0]) / 1e9 - float(t_s[0]) if ts_ns.size else None,
        "rpm_windows": rpm_windows,  # shaft speed per window (varies with --speed-variation)
    }
    for k in ("bpfo", "bpfi", "bsf", "ftf"):
        if entry.get(k) is not None:
            meta[k] = float(entry[k])
    geometry = BearingGeometry.from_dict(entry["geometry"]) if entry.get("geometry") else None
    return Run(
        run_id=f"sim-{path.name}-{machine}-{sensor}",
        machine=machine,
        sensor=sensor,
        source="sim",
        fs=fs,
        rpm=float(entry["rpm"]),
        windows=windows,
        ts=t_s,
        geometry=geometry,
        labels=RunLabels(
            rul_s=rul,
            degraded=severity > 0,
            fault=fault,
            severity=severity,
            failed_at_end=failure_s is not None and math.isfinite(failure_s),
        ),
        meta=meta,
    )


def run_from_sensor(r: SensorRun, run_id: str) -> Run:
    """A simulated sensor's whole life as a Run, straight from the simulator (no dataset folder)."""
    labels = [r.labels(k) for k in range(r.n_windows)]
    severity = np.array([lb.severity for lb in labels])
    return Run(
        run_id=run_id,
        machine=r.machine,
        sensor=r.sensor,
        source="sim",
        fs=r.fs,
        rpm=r.rpm,
        windows=np.stack([r.window(k)[0] for k in range(r.n_windows)]),
        ts=np.array([r.t(k) for k in range(r.n_windows)]),
        geometry=r.geometry,
        labels=RunLabels(
            rul_s=np.array([lb.rul_s for lb in labels]),
            degraded=severity > 0,
            fault=np.array([lb.fault for lb in labels], dtype=object),
            severity=severity,
            failed_at_end=r.failure_s is not None,
        ),
        meta={"rpm_windows": np.array([r.rpm_at(k) for k in range(r.n_windows)])},
    )


def load_sim_dataset(path: str | Path, *, progress: bool = False) -> list[Run]:
    """Every run of a simulator dataset folder, in manifest order."""
    from tqdm import tqdm

    root = Path(path)
    if not is_sim_dataset(root):
        raise DataError(f"{root}: no {MANIFEST}; a simulator dataset is made by `gruwatch simulate dataset`")
    entries: Sequence[dict[str, Any]] = read_manifest(root)
    return [
        load_sim_run(root, e)
        for e in tqdm(entries, desc=f"sim {root.name}", unit="run", disable=not progress, leave=False)
    ]
