"""Loaders on the real FEMTO and CWRU files in ../shared/data (skipped with the reason when absent).

One FEMTO bearing (871 gzip CSVs) is read once per module; CWRU is read a few files at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.bearing import PRESETS
from trainer.data import (
    Run,
    fingerprint,
    load_cwru,
    load_cwru_file,
    load_femto,
    load_runs,
    split_by_machine,
)

pytestmark = pytest.mark.realdata

CWRU_PICK = (
    "12k_Drive_End_IR007_0_105.mat",
    "12k_Drive_End_OR014@6_1_198.mat",
    "12k_Drive_End_B021_2_224.mat",
    "48k_Drive_End_IR014_0_174.mat",
    "normal_0_97.mat",
)


@pytest.fixture(scope="module")
def bearing_1_2(real_data: Path) -> list[Run]:
    folder = real_data / "femto" / "Learning_set" / "Bearing1_2"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent from the real data folder")
    return load_femto(folder)


@pytest.fixture(scope="module")
def cwru_dir(real_data: Path) -> Path:
    folder = real_data / "cwru"
    if not all((folder / name).is_file() for name in CWRU_PICK):
        pytest.skip(f"CWRU files {CWRU_PICK} not all in {folder}")
    return folder


def test_femto_bearing_1_2_is_two_channels_of_871_snapshots(bearing_1_2: list[Run]) -> None:
    assert [(r.machine, r.sensor) for r in bearing_1_2] == [
        ("Bearing1_2", "horizontal"),
        ("Bearing1_2", "vertical"),
    ]
    for run in bearing_1_2:
        assert run.source == "femto"
        assert run.windows.shape == (871, 2560)
        assert run.windows.dtype == np.float32
        assert np.isfinite(run.windows).all()
        assert run.fs == 25600.0
        assert run.rpm == 1800.0
        assert run.geometry == PRESETS["femto_6804"]
        np.testing.assert_allclose(run.ts, np.arange(871) * 10.0)
        assert run.meta["clock_interval_s"] == pytest.approx(10.0, abs=0.01)  # clock columns agree
        lab = run.labels
        assert lab is not None
        assert lab.failed_at_end
        assert lab.rul_s[-1] == 0.0
        assert lab.rul_s[0] == 870 * 10.0
        assert np.all(np.diff(lab.rul_s) == -10.0)
        assert not lab.degraded.any()
        assert set(lab.fault) == {"unknown"}
    hor, ver = bearing_1_2
    assert not np.array_equal(hor.windows, ver.windows)
    # Run to failure: the last snapshots are far louder than mid-life (the rig stops past 20 g).
    rms = np.sqrt(np.mean(hor.windows.astype(np.float64) ** 2, axis=1))
    assert rms[-5:].mean() > 3 * np.median(rms)
    assert np.abs(hor.windows[-1]).max() > 5.0
    # The first row of acc_00001.csv.gz is 8,47,5,1.9691e+05,0.05,-0.253
    assert hor.windows[0, 0] == pytest.approx(0.05)
    assert ver.windows[0, 0] == pytest.approx(-0.253)


def test_femto_split_keeps_both_channels_of_a_bearing_together(bearing_1_2: list[Run]) -> None:
    train, val = split_by_machine(bearing_1_2, val_fraction=0.5, seed=0)
    assert {len(train), len(val)} == {2, 0}
    assert len(fingerprint(bearing_1_2)) == 64


def test_cwru_files_parse_resample_and_window(cwru_dir: Path) -> None:
    runs = {p: load_cwru_file(cwru_dir / p) for p in CWRU_PICK}
    for name, run in runs.items():
        assert run.source == "cwru"
        assert run.fs == 12000.0
        assert run.windows.dtype == np.float32
        assert run.windows.shape[1] == 2048
        assert np.isfinite(run.windows).all()
        assert run.geometry == PRESETS["cwru_6205"]
        assert 1700 < run.rpm < 1800
        lab = run.labels
        assert lab is not None
        assert not lab.failed_at_end
        assert np.isinf(lab.rul_s).all()
        assert run.meta["file"].endswith(name)
    ir = runs["12k_Drive_End_IR007_0_105.mat"]
    assert (ir.meta["class"], ir.meta["load"], ir.meta["fault_size_in"]) == ("IR007", 0, 0.007)
    assert ir.meta["fs_original"] == 12000.0
    assert ir.windows.shape[0] == ir.meta["n_samples_original"] // 2048  # 12 kHz: no resampling
    assert ir.machine == "cwru-IR007-load0-105"
    assert ir.labels is not None
    assert ir.labels.degraded.all()
    assert set(ir.labels.fault) == {"IR007"}
    outer = runs["12k_Drive_End_OR014@6_1_198.mat"]
    assert (outer.meta["class"], outer.meta["load"]) == ("OR014", 1)
    assert runs["12k_Drive_End_B021_2_224.mat"].meta["class"] == "B021"
    quirk = runs["48k_Drive_End_IR014_0_174.mat"]
    assert quirk.meta["variable"] == "X173_DE_time"
    assert quirk.meta["n_samples_original"] == 63_788
    assert quirk.meta["fs_original"] == 48000.0
    assert quirk.windows.shape[0] == (63_788 // 4) // 2048
    normal = runs["normal_0_97.mat"]
    assert normal.meta["class"] == "normal"
    assert normal.meta["fs_original"] == 48000.0  # the README's quirk: decimated by 4 to 12 kHz
    assert normal.windows.shape[0] == (normal.meta["n_samples_original"] // 4) // 2048
    assert normal.labels is not None
    assert not normal.labels.degraded.any()
    assert set(normal.labels.fault) == {"normal"}
    # Decimation keeps the signal's power: RMS at 12 kHz is that of the 48 kHz recording to ~1 %.
    from scipy.io import loadmat

    raw = np.asarray(loadmat(str(cwru_dir / "normal_0_97.mat"))["X097_DE_time"], dtype=np.float64).ravel()
    assert np.sqrt(np.mean(normal.windows.astype(np.float64) ** 2)) == pytest.approx(
        np.sqrt(np.mean(raw**2)), rel=0.05
    )


def test_cwru_folder_through_load_runs(cwru_dir: Path) -> None:
    runs = load_runs([cwru_dir], window=4096, progress=False)
    names = {Path(r.meta["file"]).name for r in runs}
    assert set(CWRU_PICK) <= names
    assert all(r.windows.shape[1] == 4096 for r in runs)
    classes = {r.meta["class"] for r in runs}
    assert "normal" in classes
    assert classes <= {"normal"} | {f"{k}{s}" for k in ("IR", "B", "OR") for s in ("007", "014", "021")}
    # CWRU's split by motor load: no load on both sides.
    train, val = split_by_machine(runs, val_fraction=0.34, seed=3, key=lambda r: str(r.meta["load"]))
    assert val
    assert not {r.meta["load"] for r in train} & {r.meta["load"] for r in val}


def test_cwru_hop_overlaps_windows(cwru_dir: Path) -> None:
    (run,) = load_cwru(cwru_dir / "12k_Drive_End_IR007_0_105.mat", window=2048, hop=1024)
    np.testing.assert_array_equal(run.windows[1, :1024], run.windows[0, 1024:])
    np.testing.assert_allclose(np.diff(run.ts), 1024 / 12000.0)


def test_every_shared_cwru_file_under_its_original_number_gets_the_same_labels(
    cwru_dir: Path, tmp_path: Path
) -> None:
    """The Data Center serves these files as `<no>.mat`: each one, linked under that name, is labelled
    from its variable exactly as its descriptive name labels it, with the same windows."""
    files = sorted(cwru_dir.glob("*.mat"))
    for f in files:
        (tmp_path / f"{f.stem.rsplit('_', 1)[1]}.mat").symlink_to(f)
    by_number = {r.meta["number"]: r for r in load_cwru(tmp_path, window=2048)}
    by_name = {r.meta["number"]: r for r in load_cwru(cwru_dir, window=2048)}
    # 48k_Drive_End_IR014_0_174.mat holds X173: named by number it is recording 173, the same file
    assert sorted(by_number) == sorted(173 if n == 174 else n for n in by_name)
    for number, named in by_name.items():
        numbered = by_number[173 if number == 174 else number]
        assert numbered.meta["labelled_by"] == "recording number"
        for key in ("class", "load", "fs_original", "variable"):
            assert numbered.meta[key] == named.meta[key], (named.meta["file"], key)
        np.testing.assert_array_equal(numbered.windows, named.windows)
