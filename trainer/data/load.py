"""`load_runs`: the one entry point that turns data paths of any known format into `list[Run]`.

The format is told by the folder's content, checked in the order of `FORMATS`:
agent export (`manifest.json` of format gruwatch-agent-export, `*.npz`; checked before the
simulator, whose datasets also have a `manifest.json`), simulator dataset (`manifest.json`),
FEMTO/PRONOSTIA bearing folder (`acc_*.csv[.gz]`), CWRU (`*.mat`). A folder that is none of these is
searched a few levels down (so `shared/data` or `femto/Learning_set` load everything below them).
New formats plug in with `register_format` and are then found the same way.

`window` applies to continuous recordings (CWRU), which are cut into windows; snapshot formats
(simulator, FEMTO) keep their recorded windows. `target_fs`, when given, resamples every run to that
rate (per window for snapshot formats).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import GruwatchWarning
from trainer.data.agent import is_agent_export, load_agent_export
from trainer.data.cwru import is_cwru_folder, load_cwru
from trainer.data.femto import is_femto_bearing, load_femto_bearing
from trainer.data.runs import DataError, Run, resample_run
from trainer.data.sim import is_sim_dataset, load_sim_dataset

SEARCH_DEPTH = 3


@dataclass(frozen=True)
class LoadOptions:
    window: int | None
    target_fs: float | None
    progress: bool


@dataclass(frozen=True)
class DataFormat:
    """A data format load_runs knows: `detect(path)` says whether `path` is one; `load` reads it."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, LoadOptions], list[Run]]


def _load_agent(path: Path, opts: LoadOptions) -> list[Run]:
    return load_agent_export(path, progress=opts.progress)


def _load_sim(path: Path, opts: LoadOptions) -> list[Run]:
    return load_sim_dataset(path, progress=opts.progress)


def _load_femto(path: Path, opts: LoadOptions) -> list[Run]:
    return load_femto_bearing(path, progress=opts.progress)


def _load_cwru(path: Path, opts: LoadOptions) -> list[Run]:
    return load_cwru(
        path,
        window=opts.window if opts.window is not None else 2048,
        target_fs=opts.target_fs if opts.target_fs is not None else 12_000.0,
        progress=opts.progress,
    )


FORMATS: list[DataFormat] = [
    DataFormat(
        "agent",
        "agent exports (gruwatch agent export --store PATH --out DIR): a folder with manifest.json "
        "of format gruwatch-agent-export and one .npz per sensor",
        is_agent_export,
        _load_agent,
    ),
    DataFormat(
        "sim",
        "simulator dataset: a folder with manifest.json and one Parquet per run (gruwatch simulate dataset)",
        is_sim_dataset,
        _load_sim,
    ),
    DataFormat(
        "femto",
        "FEMTO/PRONOSTIA bearing folder of acc_*.csv or acc_*.csv.gz snapshots (or a folder of them)",
        is_femto_bearing,
        _load_femto,
    ),
    DataFormat(
        "cwru",
        "CWRU folder of .mat files named like 12k_Drive_End_IR007_0_105.mat or normal_0_97.mat (or one such file)",
        is_cwru_folder,
        _load_cwru,
    ),
]
NOT_YET = "an agent's SQLite store is read after `gruwatch agent export --store PATH --out DIR`"


def register_format(fmt: DataFormat, *, first: bool = True) -> None:
    """Teach load_runs a new format (e.g. agent exports); `first` checks it before the built-in ones."""
    FORMATS[:] = [f for f in FORMATS if f.name != fmt.name]
    FORMATS.insert(0 if first else len(FORMATS), fmt)


def known_formats() -> str:
    """The formats load_runs reads, one per line, for error messages and --help."""
    return "\n".join(f"  - {f.description}" for f in FORMATS)


def _find(path: Path, depth: int) -> list[tuple[DataFormat, Path]]:
    for fmt in FORMATS:
        if fmt.detect(path):
            return [(fmt, path)]
    if depth == 0 or not path.is_dir():
        return []
    found: list[tuple[DataFormat, Path]] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(_find(child, depth - 1))
    return found


def _unknown(path: Path) -> DataError:
    return DataError(
        f"{path}: no data format recognised here or up to {SEARCH_DEPTH} folders below. "
        f"load_runs reads:\n{known_formats()}\n({NOT_YET}.) Pass one of these folders."
    )


def load_runs(
    paths: Sequence[str | Path],
    *,
    window: int | None = None,
    target_fs: float | None = None,
    progress: bool = True,
) -> list[Run]:
    """Every run under `paths` (in the order given, then sorted folder order), as `Run` objects.

    Raises DataError for a path that does not exist or holds no known format (the message lists the
    formats), and for duplicate run ids (the same data given twice). A FEMTO Test_set recording whose
    complete recording (Full_Test_Set) is loaded too is left out, with a warning naming it.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise DataError(f"no data paths given; load_runs reads:\n{known_formats()}")
    opts = LoadOptions(window=window, target_fs=target_fs, progress=progress)
    runs: list[Run] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        found = _find(path, SEARCH_DEPTH)
        if not found:
            raise _unknown(path)
        for fmt, where in found:
            loaded = fmt.load(where, opts)
            if target_fs is not None:
                loaded = [resample_run(r, target_fs) for r in loaded]
            runs.extend(loaded)
    runs = _prefer_complete(runs)
    seen: set[str] = set()
    for run in runs:
        if run.run_id in seen:
            raise DataError(f"run {run.run_id} loaded twice; is the same data among the paths twice?")
        seen.add(run.run_id)
    return runs


def _prefer_complete(runs: list[Run]) -> list[Run]:
    """Leave out truncated FEMTO Test_set copies of bearings whose complete recording is loaded too
    (a folder holding the challenge's Learning_set, Test_set and Full_Test_Set loads as it should)."""
    complete = {r.run_id for r in runs if r.source == "femto" and not r.meta.get("truncated")}
    skipped = [r for r in runs if r.source == "femto" and r.meta.get("truncated") and r.run_id in complete]
    if not skipped:
        return runs
    folders = sorted({str(r.meta.get("folder")) for r in skipped})
    warnings.warn(
        f"left out {len(folders)} truncated Test_set recording(s) whose complete recording is loaded "
        f"too (Full_Test_Set): {', '.join(folders)}",
        GruwatchWarning,
        stacklevel=3,
    )
    drop = {id(r) for r in skipped}
    return [r for r in runs if id(r) not in drop]
