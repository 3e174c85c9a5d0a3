"""The retraining export: the windows an agent collected, as one .npz per sensor plus manifest.json.

The format (docs/agent.md, "Export format") needs only numpy to read: no pickle, no Parquet;
`trainer.data.agent` reads it. A new per-window column goes in `_export_arrays` (and the manifest's
version in EXPORT_VERSION when readers must know).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.alarms import Transition


class _Store(Protocol):
    """What the export reads from `edge_agent.store.Store`."""

    def connection(self) -> sqlite3.Connection: ...
    def get_meta(self, key: str) -> str | bytes | None: ...
    def transitions(self, sensor: str | None = None) -> list[Transition]: ...


EXPORT_FORMAT = "gruwatch-agent-export"
EXPORT_VERSION = 1


@dataclass(slots=True)
class ExportSummary:
    """What `export_runs` wrote."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    windows: int = 0
    raw_windows: int = 0


def export_runs(store: _Store, out_dir: Path | str) -> ExportSummary:
    """Write the collected data as one .npz per sensor (and feature width) plus manifest.json.

    The format (docs/agent.md, "Export format") needs only numpy to read: no pickle, no Parquet.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out_dir=out)
    entries: list[dict[str, Any]] = []
    conn = store.connection()
    groups = conn.execute(
        "SELECT sensor, n_features, COUNT(*) FROM windows GROUP BY sensor, n_features ORDER BY sensor, n_features"
    ).fetchall()
    widths: dict[str, int] = {}
    for sensor, _, _ in groups:
        widths[sensor] = widths.get(sensor, 0) + 1
    for sensor, n_features, count in groups:
        machine, _, sensor_id = str(sensor).partition("/")
        stem = f"{machine}__{sensor_id}" if widths[sensor] == 1 else f"{machine}__{sensor_id}__f{n_features}"
        arrays = _export_arrays(conn, sensor, n_features, count)
        path = out / f"{stem}.npz"
        tmp = out / f".{stem}.tmp.npz"
        np.savez_compressed(tmp, allow_pickle=False, **arrays)
        os.replace(tmp, path)
        summary.files.append(path)
        summary.windows += int(count)
        n_raw = int(arrays["raw_rows"].size)
        summary.raw_windows += n_raw
        entries.append(
            {
                "file": path.name,
                "machine": machine,
                "sensor": sensor_id,
                "windows": int(count),
                "raw_windows": n_raw,
                "n_features": int(n_features),
                "models": sorted(set(arrays["model"].tolist())),
                "first_ts_ns": int(arrays["ts_ns"][0]) if count else None,
                "last_ts_ns": int(arrays["ts_ns"][-1]) if count else None,
            }
        )
    manifest = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "created_ns": time.time_ns(),
        "agent_id": _text(store.get_meta("agent_id")),
        "files": entries,
        "transitions": [
            {
                "machine": t.sensor.partition("/")[0],
                "sensor": t.sensor.partition("/")[2],
                "seq": t.seq,
                "ts_ns": t.ts_ns,
                "previous_state": t.previous_state,
                "state": t.state,
                "score": t.score,
                "model": t.model,
                "reason": t.reason,
            }
            for t in store.transitions()
        ],
    }
    tmp_manifest = out / ".manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_manifest, out / "manifest.json")
    return summary


def _export_arrays(
    conn: sqlite3.Connection, sensor: str, n_features: int, count: int
) -> dict[str, npt.NDArray[Any]]:
    seq = np.empty(count, np.int64)
    ts = np.empty(count, np.int64)
    feats = np.empty((count, n_features), np.float32)
    score = np.empty(count, np.float32)
    fs = np.empty(count, np.float64)
    rpm = np.empty(count, np.float64)
    state: list[str] = []
    model: list[str] = []
    raw_rows: list[int] = []
    raw_parts: list[npt.NDArray[np.float32]] = []
    cur = conn.execute(
        "SELECT seq, ts_ns, features, score, state, model, fs, rpm, raw FROM windows"
        " WHERE sensor = ? AND n_features = ? ORDER BY id",
        (sensor, n_features),
    )
    for i, (s, t, f, sc, st, md, fs_i, rpm_i, raw) in enumerate(cur):
        seq[i], ts[i], score[i], fs[i], rpm[i] = s, t, sc, fs_i, rpm_i
        feats[i] = np.frombuffer(f, dtype="<f4")
        state.append(st)
        model.append(md)
        if raw is not None:
            raw_rows.append(i)
            raw_parts.append(np.frombuffer(raw, dtype="<f4").astype(np.float32))
    offsets = np.zeros(len(raw_parts) + 1, np.int64)
    if raw_parts:
        offsets[1:] = np.cumsum([p.size for p in raw_parts])
    return {
        "seq": seq,
        "ts_ns": ts,
        "features": feats,
        "score": score,
        "state": np.array(state, dtype=str),
        "model": np.array(model, dtype=str),
        "fs": fs,
        "rpm": rpm,
        "raw_rows": np.array(raw_rows, dtype=np.int64),
        "raw_offsets": offsets,
        "raw_samples": np.concatenate(raw_parts) if raw_parts else np.zeros(0, np.float32),
    }


def _text(v: str | bytes | None) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
