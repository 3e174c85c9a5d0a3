"""Loader for agent exports (`gruwatch agent export`): manifest.json plus one .npz per sensor.

The format is written by `edge_agent.store.Store.export_runs` and documented in docs/agent.md
("Export format"). The agent stores features for every scored window but raw samples only for a
sampled fraction (and around alarm transitions), and the trainer computes its own features from raw
samples. So a `Run` here holds the windows **with raw samples**, sorted by sensor time; windows
without raw samples leave gaps that show in `ts`. The stored per-window features of **all** windows
(time order) ride along in `meta`; `load_agent_features` reads only those, one `CollectedStream`
per sensor, for `gruwatch retrain` (trainer/retrain.py), which trains at the agent's own cadence.

One .npz file gives one run per (sample rate, window length) it holds raw windows of: usually one;
a sensor reconfigured mid-collection gives several (resample them together with `target_fs`). Files
without any raw window give no run and ONE `UserWarning` for the export. See docs/data.md.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import GruwatchWarning
from edge_agent.store import EXPORT_FORMAT, EXPORT_VERSION
from trainer.data.runs import DataError, Run

MANIFEST = "manifest.json"
ARRAYS: tuple[str, ...] = (
    "seq",
    "ts_ns",
    "features",
    "score",
    "state",
    "model",
    "fs",
    "rpm",
    "raw_rows",
    "raw_offsets",
    "raw_samples",
)
_PER_WINDOW: tuple[str, ...] = ("seq", "ts_ns", "score", "state", "model", "fs", "rpm")
_ENTRY_KEYS: tuple[str, ...] = ("file", "machine", "sensor")
_AGAIN = "export the store again with `gruwatch agent export --store PATH --out DIR`"


def is_agent_export(path: Path) -> bool:
    """A folder whose manifest.json says gruwatch-agent-export, or that holds .npz files.

    A folder of .npz files counts even without (or with a broken) manifest.json, so that loading it
    raises a DataError that says what is missing instead of "no known format".
    """
    if not path.is_dir():
        return False
    mpath = path / MANIFEST
    if mpath.is_file():
        try:
            doc = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if isinstance(doc, dict) and doc.get("format") == EXPORT_FORMAT:
            return True
    return any(p.suffix == ".npz" and not p.name.startswith(".") for p in path.iterdir())


def read_export_manifest(path: Path) -> dict[str, Any]:
    """The export's manifest.json, checked for format, version and the file entries loading needs."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise DataError(
            f"{path}: holds .npz files but no {MANIFEST}; an agent export is only complete with its "
            f"manifest (it is written last, so the export was interrupted or copied partly); {_AGAIN}"
        )
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{mpath}: not readable JSON ({exc}); {_AGAIN}") from exc
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(
            f"{mpath}: format is {found!r}, not {EXPORT_FORMAT!r}; this folder is not an agent export "
            "(a simulator dataset has Parquet files, not .npz)"
        )
    version = doc.get("version")
    if not isinstance(version, int) or version > EXPORT_VERSION or version < 1:
        raise DataError(
            f"{mpath}: export version {version!r}; this trainer reads versions 1..{EXPORT_VERSION}. "
            "Update gruwatch on the training machine, or export with the matching agent"
        )
    files = doc.get("files")
    if not isinstance(files, list):
        raise DataError(f"{mpath}: 'files' must be a list of file entries; {_AGAIN}")
    for i, entry in enumerate(files):
        missing = [k for k in _ENTRY_KEYS if not isinstance(entry, dict) or not isinstance(entry.get(k), str)]
        if missing:
            raise DataError(f"{mpath}: files[{i}] lacks {', '.join(missing)}; {_AGAIN}")
        if Path(entry["file"]).name != entry["file"]:
            raise DataError(
                f"{mpath}: files[{i}] names {entry['file']!r}; expected a file in the export folder"
            )
    return doc


def read_export_file(fpath: Path, entry: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of one export .npz, checked against each other and against its manifest entry."""
    if not fpath.is_file():
        raise DataError(
            f"{fpath}: listed in {MANIFEST} but missing; copy the whole export folder or {_AGAIN}"
        )
    try:
        # Our own handle: np.load leaks the one it opens when the file is not a valid zip.
        with fpath.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            missing = [k for k in ARRAYS if k not in z.files]
            if missing:
                raise DataError(
                    f"{fpath}: lacks arrays {', '.join(missing)} (has {', '.join(sorted(z.files))}); "
                    f"not an agent export file of version {EXPORT_VERSION}; {_AGAIN}"
                )
            arrays = {k: z[k] for k in ARRAYS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"{fpath}: cannot read the .npz ({exc}); the file is damaged or truncated; {_AGAIN}"
        ) from exc

    def bad(what: str) -> DataError:
        return DataError(f"{fpath}: {what}; the file is inconsistent (damaged or edited); {_AGAIN}")

    feats = arrays["features"]
    if feats.ndim != 2:
        raise bad(f"features has shape {feats.shape}, expected [windows, features]")
    n = feats.shape[0]
    for k in _PER_WINDOW:
        if arrays[k].shape != (n,):
            raise bad(f"{k} has shape {arrays[k].shape} but features has {n} windows")
    if arrays["state"].dtype.kind != "U" or arrays["model"].dtype.kind != "U":
        raise bad("state and model must be string arrays")
    rows, offsets, samples = arrays["raw_rows"], arrays["raw_offsets"], arrays["raw_samples"]
    m = rows.shape[0] if rows.ndim == 1 else -1
    if rows.ndim != 1 or offsets.shape != (m + 1,) or samples.ndim != 1:
        raise bad(
            f"raw_rows {rows.shape}, raw_offsets {offsets.shape}, raw_samples {samples.shape}: "
            "expected [M], [M+1] and [total samples]"
        )
    if rows.dtype.kind not in "iu" or offsets.dtype.kind not in "iu":
        raise bad("raw_rows and raw_offsets must be integer arrays")
    if m and (rows.min() < 0 or rows.max() >= n or np.unique(rows).size != m):
        raise bad(f"raw_rows must be distinct indices into the {n} windows")
    if offsets[0] != 0 or offsets[-1] != samples.size or np.any(np.diff(offsets) <= 0):
        raise bad(
            f"raw_offsets must rise strictly from 0 to {samples.size} (the raw_samples length), "
            "one empty-free slice per raw window"
        )
    if samples.size and not np.all(np.isfinite(samples)):
        raise bad("raw_samples holds NaN or infinite values")
    if not np.all(arrays["fs"][rows] > 0):
        raise bad("a window with raw samples has a sample rate <= 0")
    for key, have in (("windows", n), ("raw_windows", m)):
        want = entry.get(key)
        if want is not None and want != have:
            raise DataError(
                f"{fpath}: {MANIFEST} says {want} {key.replace('_', ' ')} but the file holds {have}; "
                f"the manifest and the file come from different exports; {_AGAIN}"
            )
    return arrays


def _transitions_of(doc: dict[str, Any], machine: str, sensor: str) -> list[dict[str, Any]]:
    return [
        t
        for t in doc.get("transitions") or []
        if isinstance(t, dict) and t.get("machine") == machine and t.get("sensor") == sensor
    ]


def runs_from_export_file(
    root: Path, entry: dict[str, Any], arrays: dict[str, np.ndarray], doc: dict[str, Any]
) -> list[Run]:
    """The runs of one export file: raw windows in time order, one run per (fs, window length)."""
    machine, sensor = entry["machine"], entry["sensor"]
    ts_ns = arrays["ts_ns"].astype(np.int64)
    order = np.argsort(ts_ns, kind="stable")  # arrival order -> sensor time order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rows = arrays["raw_rows"].astype(np.int64)
    offsets = arrays["raw_offsets"].astype(np.int64)
    lengths = np.diff(offsets)
    fs_all, rpm_all = arrays["fs"].astype(np.float64), arrays["rpm"].astype(np.float64)
    # A sensor whose feature width changed has one file per width (<machine>__<sensor>__f<F>.npz).
    per_width = Path(entry["file"]).stem != f"{machine}__{sensor}"
    base = f"agent-{root.name}-{machine}-{sensor}" + (f"-f{arrays['features'].shape[1]}" if per_width else "")

    shared: dict[str, Any] = {
        "agent_id": doc.get("agent_id"),
        "file": entry["file"],
        "export_version": doc.get("version"),
        "features": np.ascontiguousarray(arrays["features"][order], dtype=np.float32),
        "feature_ts_ns": ts_ns[order],
        "feature_seq": arrays["seq"].astype(np.int64)[order],
        "feature_score": arrays["score"].astype(np.float32)[order],
        "feature_state": arrays["state"][order],
        "feature_model": arrays["model"][order],
        "feature_spec": entry.get("feature_spec"),
        "transitions": _transitions_of(doc, machine, sensor),
    }
    if rows.size == 0:  # load_agent_export says so once for the whole export
        return []
    # Raw windows in time order, grouped by (sample rate, window length) in order of first appearance.
    by_time = np.argsort(rank[rows], kind="stable")
    groups: dict[tuple[float, int], list[int]] = {}
    for j in by_time:
        groups.setdefault((float(fs_all[rows[j]]), int(lengths[j])), []).append(int(j))
    runs: list[Run] = []
    samples = arrays["raw_samples"]
    for (fs, length), members in groups.items():
        idx = np.asarray(members, dtype=np.int64)
        win_rows = rows[idx]
        starts = offsets[idx]
        windows = samples[starts[:, None] + np.arange(length)[None, :]].astype(np.float32, copy=False)
        t_ns = ts_ns[win_rows]
        start_ns = int(t_ns[0])
        rpm_w = rpm_all[win_rows]
        known = rpm_w[rpm_w > 0]
        suffix = f"-fs{fs:g}-L{length}" if len(groups) > 1 else ""
        meta = {
            **shared,
            "start_epoch_s": start_ns / 1e9,
            "start_ts_ns": start_ns,
            "seq": arrays["seq"].astype(np.int64)[win_rows],
            "rpm_windows": rpm_w,
            "raw_index": rank[win_rows],
        }
        runs.append(
            Run(
                run_id=base + suffix,
                machine=machine,
                sensor=sensor,
                source="agent",
                fs=fs,
                rpm=float(np.median(known)) if known.size else 0.0,
                windows=windows,
                ts=(t_ns - start_ns).astype(np.float64) / 1e9,
                geometry=None,
                labels=None,
                meta=meta,
            )
        )
    return runs


def load_agent_export(path: str | Path, *, progress: bool = False) -> list[Run]:
    """Every run of an agent export folder, in manifest order; DataError naming the file for bad exports."""
    from tqdm import tqdm

    root = Path(path)
    doc = read_export_manifest(root)
    if not doc["files"]:
        raise DataError(
            f"{root / MANIFEST}: lists no files; the store held no windows when it was exported. "
            "Let the agent collect data, then export again"
        )
    runs: list[Run] = []
    without_raw: list[str] = []
    for entry in tqdm(
        doc["files"], desc=f"agent {root.name}", unit="file", disable=not progress, leave=False
    ):
        arrays = read_export_file(root / entry["file"], entry)
        found = runs_from_export_file(root, entry, arrays, doc)
        if not found:
            without_raw.append(f"{entry['machine']}/{entry['sensor']}")
        runs.extend(found)
    if without_raw and runs:
        # One warning for the export, not one per sensor: a month at the default 1 % sampling is normal.
        shown = ", ".join(without_raw[:5]) + (
            f" and {len(without_raw) - 5} more" if len(without_raw) > 5 else ""
        )
        warnings.warn(
            f"{root}: {len(without_raw)} of {len(doc['files'])} sensors have no window with raw samples "
            f"({shown}), so they give no run here; `gruwatch retrain` trains on the features the agent "
            "stored for every window instead (or raise the agent's raw_sample_fraction)",
            GruwatchWarning,
            stacklevel=2,
        )
    if not runs:
        total = sum(int(e.get("windows") or 0) for e in doc["files"])
        raise DataError(
            f"{root}: {total} windows but none with raw samples, so nothing to train on from raw windows; "
            "retrain on the features the agent stored for every window with `gruwatch retrain --collected "
            f"{root}`, or raise the agent's raw_sample_fraction and export again"
        )
    return runs


@dataclass
class CollectedStream:
    """One sensor's windows as the agent scored them: its stored features of EVERY window, time order.

    This is what `gruwatch retrain` trains on: the agent's own cadence (one GRU step per window) and its
    own features, whether or not the window's raw samples were kept.
    """

    export: str  # the export folder
    agent_id: str | None
    machine: str
    sensor: str
    file: str
    features: np.ndarray  # float32 [N, F]
    ts_ns: np.ndarray  # int64 [N]
    seq: np.ndarray  # int64 [N]
    score: np.ndarray  # float32 [N]
    state: np.ndarray  # str [N]
    model: np.ndarray  # str [N]: the model version that scored each window
    raw_windows: int

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])


def load_agent_features(path: str | Path) -> list[CollectedStream]:
    """Every sensor's stored features from an agent export folder (no raw samples needed), manifest order."""
    root = Path(path)
    doc = read_export_manifest(root)
    out: list[CollectedStream] = []
    for entry in doc["files"]:
        arrays = read_export_file(root / entry["file"], entry)
        ts_ns = arrays["ts_ns"].astype(np.int64)
        order = np.argsort(ts_ns, kind="stable")  # arrival order -> sensor time order
        out.append(
            CollectedStream(
                export=str(root),
                agent_id=doc.get("agent_id"),
                machine=entry["machine"],
                sensor=entry["sensor"],
                file=entry["file"],
                features=np.ascontiguousarray(arrays["features"][order], dtype=np.float32),
                ts_ns=ts_ns[order],
                seq=arrays["seq"].astype(np.int64)[order],
                score=arrays["score"].astype(np.float32)[order],
                state=arrays["state"][order],
                model=arrays["model"][order],
                raw_windows=int(arrays["raw_rows"].size),
            )
        )
    return out
