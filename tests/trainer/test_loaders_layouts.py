"""The datasets as their publishers lay them out: FEMTO's Test_set (truncated) beside Full_Test_Set, and
CWRU files named by recording number (`105.mat`) or by short names (`IR007_0.mat`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from edge_agent.errors import GruwatchWarning
from gruwatch.cli import run_guarded
from tests.trainer.test_loaders import write_femto
from trainer.data import DataError, load_cwru, load_femto, load_runs
from trainer.data.cwru_numbers import RECORDINGS
from trainer.data.femto import TEST_SET_RUL_S
from trainer.data.plan import RUN_TO_FAILURE, data_kind, plan_training

# ---------------------------------------------------------------- FEMTO: Test_set and Full_Test_Set


def test_a_test_set_recording_is_labelled_with_the_published_remaining_life(tmp_path: Path) -> None:
    write_femto(tmp_path / "Test_set" / "Bearing1_4", [1, 2, 3])
    hor, ver = load_femto(tmp_path / "Test_set" / "Bearing1_4")
    for run in (hor, ver):
        assert run.labels is not None
        # the recording stops 339 s before the failure (the challenge's published figure)
        np.testing.assert_allclose(run.labels.rul_s, [359.0, 349.0, 339.0])
        assert not run.labels.failed_at_end  # no lead time is measured on it
        assert run.meta["truncated"] is True
        assert run.meta["rul_after_last_s"] == 339.0
    write_femto(tmp_path / "Full_Test_Set" / "Bearing1_4", [1, 2, 3, 4])
    full, _ = load_femto(tmp_path / "Full_Test_Set" / "Bearing1_4")
    assert full.labels is not None
    np.testing.assert_allclose(full.labels.rul_s, [30.0, 20.0, 10.0, 0.0])
    assert full.labels.failed_at_end
    assert full.meta["truncated"] is False


def test_truncated_recordings_are_run_to_failure_histories_whose_horizon_must_be_given(
    tmp_path: Path,
) -> None:
    write_femto(tmp_path / "Test_set" / "Bearing1_3", [1, 2, 3])
    runs = load_femto(tmp_path / "Test_set")
    kind, why = data_kind(runs)
    assert kind == RUN_TO_FAILURE
    assert "0 run(s) end in a failure (2 more stop before a known failure)" in why
    # their failure is known but not seen: no degradation to choose a horizon from
    with pytest.raises(DataError, match=r"pass --horizon \(how long before a failure"):
        plan_training(runs, val_fraction=0.5, seed=0)


def test_an_unknown_bearing_in_a_test_set_folder_is_refused_before_reading(tmp_path: Path) -> None:
    write_femto(tmp_path / "test_set" / "Bearing4_1", [1, 2])
    with pytest.raises(DataError, match=r"no remaining life is known for Bearing4_1 .*Full_Test_Set"):
        load_femto(tmp_path / "test_set" / "Bearing4_1")
    assert len(TEST_SET_RUL_S) == 11  # the challenge's eleven test bearings


def test_the_challenge_folder_loads_each_bearing_once_preferring_the_complete_recording(
    tmp_path: Path,
) -> None:
    root = tmp_path / "femto"
    write_femto(root / "Learning_set" / "Bearing1_1", [1, 2, 3])
    write_femto(root / "Test_set" / "Bearing1_3", [1, 2])
    write_femto(root / "Full_Test_Set" / "Bearing1_3", [1, 2, 3, 4])
    write_femto(root / "Test_set" / "Bearing2_7", [1, 2])  # only its truncated recording is here
    with pytest.warns(GruwatchWarning, match=r"left out 1 truncated Test_set recording.*Test_set/Bearing1_3"):
        runs = load_runs([root], progress=False)
    by_id = {r.run_id: r for r in runs}
    assert sorted(by_id) == [
        "femto-Bearing1_1-horizontal",
        "femto-Bearing1_1-vertical",
        "femto-Bearing1_3-horizontal",
        "femto-Bearing1_3-vertical",
        "femto-Bearing2_7-horizontal",
        "femto-Bearing2_7-vertical",
    ]
    assert by_id["femto-Bearing1_3-horizontal"].n_windows == 4  # the complete one
    assert by_id["femto-Bearing2_7-horizontal"].meta["truncated"] is True
    # The same complete recording given twice is still an error, not a silent merge.
    with pytest.raises(DataError, match="loaded twice"):
        load_runs([root / "Full_Test_Set", root / "Full_Test_Set"], progress=False)


def test_the_command_line_prints_the_warning_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored afterwards
    write_femto(tmp_path / "Test_set" / "Bearing1_3", [1, 2])
    write_femto(tmp_path / "Full_Test_Set" / "Bearing1_3", [1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code = run_guarded(lambda: len(load_runs([tmp_path], progress=False)), "gruwatch train")
    assert code == 2  # the function's return value: the two runs of the complete recording
    err = capsys.readouterr().err
    assert err.startswith("gruwatch train: warning: left out 1 truncated Test_set recording(s)")
    assert "UserWarning" not in err
    assert "warnings.warn" not in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------- CWRU: files named by number


@pytest.mark.parametrize(
    ("name", "variable", "cls", "load", "fs"),
    [
        ("108.mat", "X108_DE_time", "IR007", 3, 12_000.0),  # the Data Center's own file name
        ("OR021@3_2.mat", "X248_DE_time", "OR021", 2, 12_000.0),  # a short copy; @3 joins OR021
        ("IR014_0.mat", "X173_DE_time", "IR014", 0, 48_000.0),  # 174.mat's quirk: it holds X173
        ("normal_3.mat", "X100_DE_time", "normal", 3, 48_000.0),
        ("3001.mat", "X056_DE_time", "IR028", 0, 12_000.0),  # 0.028 in faults hold X056-X059
    ],
)
def test_a_cwru_file_without_a_descriptive_name_is_labelled_by_its_recording_number(
    tmp_path: Path, name: str, variable: str, cls: str, load: int, fs: float
) -> None:
    savemat(tmp_path / name, {variable: np.ones((int(fs), 1))})  # one second
    (run,) = load_cwru(tmp_path, window=1000)
    assert (run.meta["class"], run.meta["load"], run.meta["fs_original"]) == (cls, load, fs)
    assert run.meta["labelled_by"] == "recording number"
    assert run.meta["variable"] == variable
    assert run.fs == 12_000.0
    assert run.windows.shape == (12, 1000)
    assert run.labels is not None
    assert run.labels.degraded.all() == (cls != "normal")
    assert set(run.labels.fault) == {cls}
    assert run.rpm == {0: 1797.0, 1: 1772.0, 2: 1750.0, 3: 1730.0}[load]  # no X<no>RPM: the load table


def test_a_cwru_file_that_cannot_be_labelled_is_refused_with_the_fix(tmp_path: Path) -> None:
    savemat(tmp_path / "105.mat", {"X105_DE_time": np.ones((12_000, 1))})
    savemat(tmp_path / "999.mat", {"X999_DE_time": np.ones((12_000, 1))})
    with pytest.raises(DataError, match=r"999\.mat: .*X999_DE_time.* Rename it descriptively"):
        load_cwru(tmp_path)  # every file is labelled before any signal is read
    (tmp_path / "999.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"999\.mat: not a readable MATLAB file"):
        load_cwru(tmp_path)
    (tmp_path / "999.mat").rename(tmp_path / "12k_Drive_End_B007_0_118.mat")  # named, but broken
    with pytest.raises(DataError, match=r"B007_0_118\.mat: not a readable MATLAB file"):
        load_cwru(tmp_path)


def test_fan_end_recordings_in_a_folder_are_left_out_with_a_warning(tmp_path: Path) -> None:
    """The Data Center's full download mixes drive-end and fan-end files; the fan-end faults cannot
    be labelled from the drive-end channel, so a folder keeps the rest and says what it left out."""
    savemat(tmp_path / "105.mat", {"X105_DE_time": np.ones((12_000, 1))})
    for n in (278, 294):
        savemat(
            tmp_path / f"{n}.mat",
            {f"X{n}_DE_time": np.ones((12_000, 1)), f"X{n}_FE_time": np.ones((12_000, 1))},
        )
    with pytest.warns(
        GruwatchWarning, match=r"left out 2 CWRU fan-end fault recording\(s\) \(278\.mat, 294\.mat\)"
    ):
        runs = load_cwru(tmp_path)
    assert [r.meta["number"] for r in runs] == [105]
    with pytest.raises(DataError, match=r"278\.mat: a CWRU fan-end fault recording"):
        load_cwru(tmp_path / "278.mat")  # asked for by name: an error, not a silent nothing
    (tmp_path / "105.mat").unlink()
    with pytest.raises(DataError, match="only CWRU fan-end fault recordings"):
        load_cwru(tmp_path)


def test_the_recording_table_covers_every_class_at_every_load() -> None:
    by_rate: dict[float, dict[str, set[int]]] = {}
    for rec in RECORDINGS.values():
        by_rate.setdefault(rec.fs, {}).setdefault(rec.cls, set()).add(rec.load)
    classic = {f"{k}{s}" for k in ("IR", "B", "OR") for s in ("007", "014", "021")}
    assert set(by_rate[12_000.0]) == classic | {"B028", "IR028"}
    assert set(by_rate[48_000.0]) == classic | {"normal"}
    assert all(loads == {0, 1, 2, 3} for classes in by_rate.values() for loads in classes.values())
    # the recordings the shared data names in its file names agree with the table
    assert RECORDINGS[105] == ("IR007", 0, 12_000.0)
    assert RECORDINGS[236] == ("OR021", 2, 12_000.0)
    assert RECORDINGS[238] == ("OR021", 0, 48_000.0)
    assert RECORDINGS[97] == ("normal", 0, 48_000.0)
