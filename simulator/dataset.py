"""Writing a simulated fleet to disk as a labelled dataset: one Parquet file per run plus manifest.json.

Layout of a dataset folder (documented for users in docs/simulator.md):

- ``<machine>_<sensor>.parquet``: one row per window, in time order, with the columns of `SCHEMA`;
  the run's manifest entry is also stored in the file's key-value metadata under ``gruwatch.run``.
- ``manifest.json``: the generation settings and one entry per run (fault, speed, bearing geometry and
  defect frequencies, onset and failure times, file name).

Files are byte-identical for the same seed and arguments (same pyarrow version): no wall-clock times
are written anywhere, compression and encodings are fixed, rows are written in a fixed order.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.fleet_model import SensorRun

MANIFEST = "manifest.json"
FORMAT = "gruwatch-sim-dataset"
FORMAT_VERSION = 1
ROW_GROUP_WINDOWS = 256

SCHEMA = pa.schema(
    [
        pa.field("machine", pa.string(), nullable=False),
        pa.field("sensor", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # 0, 1, 2, ... per run
        pa.field("ts", pa.int64(), nullable=False),  # ns since the Unix epoch (start + t_s)
        pa.field("t_s", pa.float64(), nullable=False),  # s since install
        pa.field("fs", pa.float64(), nullable=False),  # Hz
        pa.field("rpm", pa.float64(), nullable=False),  # shaft speed during the window
        pa.field("samples", pa.list_(pa.field("element", pa.float32(), nullable=False)), nullable=False),  # g
        pa.field("fault", pa.string(), nullable=False),  # "healthy" before onset, else the run's fault
        pa.field("severity", pa.float64(), nullable=False),  # 0 before onset, 1.0 at failure
        pa.field("rul_s", pa.float64(), nullable=False),  # remaining life in s, inf if no failure in horizon
        pa.field("failed", pa.bool_(), nullable=False),  # True on the failure window (the run's last)
    ]
)

_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["machine", "sensor", "fault"],
    # Samples are int16 counts × 2⁻¹⁰ g: split into byte streams, their float32 bytes compress to ~40 %.
    "use_byte_stream_split": ["samples.list.element"],
    "write_statistics": True,
    "row_group_size": ROW_GROUP_WINDOWS,
}


def run_file_name(run: SensorRun) -> str:
    return f"{run.machine}_{run.sensor}.parquet"


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def manifest_entry(run: SensorRun) -> dict[str, Any]:
    """The manifest's description of one run (defect frequencies at the run's nominal speed, Hz)."""
    g = run.geometry
    return {
        "machine": run.machine,
        "sensor": run.sensor,
        "fault": run.fault,
        "fs": run.fs,
        "rpm": run.rpm,
        "geometry": g.to_dict(),
        "bpfo": g.bpfo(run.rpm),
        "bpfi": g.bpfi(run.rpm),
        "bsf": g.bsf(run.rpm),
        "ftf": g.ftf(run.rpm),
        "onset_s": _finite_or_none(run.onset_s),
        "failure_s": _finite_or_none(run.failure_s),
        "file": run_file_name(run),
        "n_windows": run.n_windows,
        "window": run.window_length,
        "interval_s": run.interval_s,
        "adc_scale": run.adc_scale,
        "resonances_hz": list(run.physics.resonances_hz),
        "eol_rms_ratio": run.degradation.eol_rms_ratio,
    }


def run_table(run: SensorRun, *, start_ns: int, on_window: Callable[[], None] | None = None) -> pa.Table:
    """All windows of `run` as one Arrow table with `SCHEMA` (about 10 kB per 2,560-sample window)."""
    n, length = run.n_windows, run.window_length
    samples = np.empty((n, length), dtype=np.float32)
    seq = np.arange(n, dtype=np.int64)
    t_s = seq * run.interval_s
    rpm = np.empty(n)
    fault: list[str] = []
    severity = np.empty(n)
    rul = np.empty(n)
    failed = np.zeros(n, dtype=bool)
    for k in range(n):
        x, labels = run.window(k)
        samples[k] = x
        rpm[k] = run.rpm_at(k)
        fault.append(labels.fault)
        severity[k] = labels.severity
        rul[k] = labels.rul_s
        failed[k] = labels.failed
        if on_window is not None:
            on_window()
    offsets = pa.array(np.arange(0, n * length + 1, length, dtype=np.int32))
    sample_list = pa.ListArray.from_arrays(
        offsets, pa.array(samples.ravel()), type=SCHEMA.field("samples").type
    )
    columns = [
        pa.array([run.machine] * n, pa.string()),
        pa.array([run.sensor] * n, pa.string()),
        pa.array(seq),
        pa.array(start_ns + np.rint(t_s * 1e9).astype(np.int64)),
        pa.array(t_s),
        pa.array(np.full(n, run.fs)),
        pa.array(rpm),
        sample_list,
        pa.array(fault, pa.string()),
        pa.array(severity),
        pa.array(rul),
        pa.array(failed),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def write_run(
    run: SensorRun, path: Path, *, start_ns: int, on_window: Callable[[], None] | None = None
) -> None:
    """Write one run's Parquet file atomically (temporary file, then rename)."""
    table = run_table(run, start_ns=start_ns, on_window=on_window)
    meta = {b"gruwatch.run": json.dumps(manifest_entry(run), separators=(",", ":")).encode()}
    table = table.replace_schema_metadata(meta)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **_WRITE_OPTIONS)
    os.replace(tmp, path)


def _old_files(out: Path) -> list[Path]:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        return [out / str(entry["file"]) for entry in manifest.get("runs", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_dataset(
    out: Path,
    runs: Sequence[SensorRun],
    *,
    start_ns: int,
    settings: dict[str, Any],
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write every run and then manifest.json (last, so a folder with a manifest is complete).

    `settings` (the generation arguments) is stored in the manifest as is. Refuses to write into a
    folder that already holds a dataset unless `overwrite`, in which case the old runs are removed.
    """
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a dataset ({MANIFEST} exists); choose another --out or pass --overwrite"
            )
        for old in _old_files(out):
            old.unlink(missing_ok=True)
        manifest_path.unlink()
    total = sum(r.n_windows for r in runs)
    with tqdm(total=total, unit="win", desc="simulating", disable=not progress, smoothing=0.1) as bar:

        def tick() -> None:
            bar.update(1)

        for run in runs:
            bar.set_postfix_str(f"{run.machine}/{run.sensor} {run.fault}", refresh=False)
            write_run(run, out / run_file_name(run), start_ns=start_ns, on_window=tick)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        **settings,
        "start_ns": start_ns,
        "columns": SCHEMA.names,
        "runs": [manifest_entry(r) for r in runs],
    }
    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, manifest_path)
    return manifest_path
