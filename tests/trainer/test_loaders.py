"""Loaders on small files the tests write: simulator datasets, FEMTO/CWRU quirks, events, splits, dispatch."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import savemat

from edge_agent.bearing import PRESETS
from trainer.data import (
    DataError,
    DataFormat,
    MaintenanceEvent,
    Run,
    RunLabels,
    apply_events,
    fingerprint,
    load_cwru,
    load_cwru_file,
    load_events_csv,
    load_femto,
    load_runs,
    load_sim_dataset,
    parse_name,
    register_format,
    split_by_machine,
)
from trainer.data import load as load_module

T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


# ---------------------------------------------------------------- simulator dataset (written here)


def write_sim_run(
    folder: Path,
    machine: str,
    sensor: str,
    *,
    n: int = 6,
    length: int = 64,
    failure_s: float | None = 50.0,
    onset_s: float | None = 20.0,
    shuffle: bool = True,
) -> dict[str, Any]:
    """One run in the simulator's dataset format; returns its manifest entry."""
    rng = np.random.default_rng(abs(hash((machine, sensor))) % 2**32)
    seq = np.arange(n)
    t = seq * 10.0
    severity = np.zeros(n) if onset_s is None else np.clip((t - onset_s) / 30.0, 0.0, 1.0)
    rul: list[float | None] = [None] * n if failure_s is None else [failure_s - x for x in t]
    fault = ["healthy" if s == 0 else "outer" for s in severity]
    samples = rng.standard_normal((n, length)).astype(np.float32)
    order = rng.permutation(n) if shuffle else seq
    table = pa.table(
        {
            "machine": [machine] * n,
            "sensor": [sensor] * n,
            "seq": pa.array(seq[order], pa.int64()),
            "ts": pa.array(T0_NS + (t[order] * 1e9).astype(np.int64), pa.int64()),
            "fs": pa.array([25600.0] * n, pa.float64()),
            "rpm": pa.array([1800.0] * n, pa.float64()),
            "samples": pa.array([samples[i] for i in order], pa.list_(pa.float32())),
            "fault": [fault[i] for i in order],
            "severity": pa.array(severity[order], pa.float64()),
            "rul_s": pa.array([rul[i] for i in order], pa.float64()),
            "failed": [bool(rul[i] == 0.0) for i in order],
        }
    )
    file = f"{machine}_{sensor}.parquet"
    pq.write_table(table, folder / file)
    g = PRESETS["femto_6804"]
    return {
        "machine": machine,
        "sensor": sensor,
        "fault": "outer" if failure_s is not None else "healthy",
        "fs": 25600.0,
        "rpm": 1800.0,
        "geometry": g.to_dict(),
        "bpfo": g.bpfo(1800.0),
        "bpfi": g.bpfi(1800.0),
        "bsf": g.bsf(1800.0),
        "ftf": g.ftf(1800.0),
        "onset_s": onset_s,
        "failure_s": failure_s,
        "file": file,
        "_samples": samples,  # removed before writing the manifest
    }


def write_sim_dataset(folder: Path, *, wrap: bool = False) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    entries = [
        write_sim_run(folder, "m000", "s0"),
        write_sim_run(folder, "m001", "s0", failure_s=None, onset_s=None),
    ]
    truth = {e["machine"]: e.pop("_samples") for e in entries}
    doc: Any = {"runs": entries} if wrap else entries
    (folder / "manifest.json").write_text(json.dumps(doc))
    return truth


@pytest.mark.parametrize("wrap", [False, True])
def test_sim_dataset_loads_with_labels(tmp_path: Path, wrap: bool) -> None:
    truth = write_sim_dataset(tmp_path / "ds", wrap=wrap)
    runs = load_sim_dataset(tmp_path / "ds")
    assert [r.machine for r in runs] == ["m000", "m001"]
    failing, healthy = runs
    assert failing.source == "sim"
    assert failing.sensor == "s0"
    assert failing.windows.dtype == np.float32
    assert failing.windows.shape == (6, 64)
    np.testing.assert_array_equal(failing.windows, truth["m000"])  # rows put back in seq order
    np.testing.assert_allclose(failing.ts, np.arange(6) * 10.0)
    assert failing.meta["start_epoch_s"] == T0_NS / 1e9
    assert failing.fs == 25600.0
    assert failing.rpm == 1800.0
    assert failing.geometry == PRESETS["femto_6804"]
    lab = failing.labels
    assert lab is not None
    assert lab.failed_at_end
    np.testing.assert_allclose(lab.rul_s, 50.0 - np.arange(6) * 10.0)
    np.testing.assert_array_equal(lab.degraded, np.arange(6) * 10.0 > 20.0)
    assert list(lab.fault) == ["healthy"] * 3 + ["outer"] * 3
    assert lab.severity is not None
    assert lab.severity[-1] == pytest.approx(1.0)
    hl = healthy.labels
    assert hl is not None
    assert not hl.failed_at_end
    assert np.isinf(hl.rul_s).all()
    assert not hl.degraded.any()
    assert set(hl.fault) == {"healthy"}


def test_sim_dataset_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no manifest\.json"):
        load_sim_dataset(tmp_path)
    write_sim_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "m001_s0.parquet").unlink()
    with pytest.raises(DataError, match=r"m001_s0\.parquet: listed in .* but missing"):
        load_sim_dataset(tmp_path / "ds")
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(
        pa.table({"machine": ["m"], "samples": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))}),
        bad / "r.parquet",
    )
    (bad / "manifest.json").write_text(
        json.dumps([{"machine": "m", "sensor": "s", "fs": 1.0, "rpm": 0.0, "file": "r.parquet"}])
    )
    with pytest.raises(DataError, match="missing columns sensor, seq, ts"):
        load_sim_dataset(bad)
    (bad / "manifest.json").write_text(json.dumps([{"machine": "m"}]))
    with pytest.raises(DataError, match="run #0 lacks sensor, fs, rpm, file"):
        load_sim_dataset(bad)


def test_sim_ragged_windows_are_refused(tmp_path: Path) -> None:
    from trainer.data.sim import samples_matrix

    ragged = pa.chunked_array([pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))])
    with pytest.raises(DataError, match="different lengths"):
        samples_matrix(ragged, "x")
    sliced = pa.array([[9.0, 9.0], [1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32())).slice(1)
    np.testing.assert_array_equal(samples_matrix(sliced, "x"), [[1.0, 2.0], [3.0, 4.0]])


# ---------------------------------------------------------------- FEMTO format quirks (written here)


def femto_rows(k: int) -> np.ndarray:
    rows = np.zeros((2560, 6))
    rows[:, 0], rows[:, 1], rows[:, 2] = 9, 30, 10 * k  # snapshots 10 s apart on the clock
    rows[:, 3] = np.arange(2560) * 39.0
    rows[:, 4] = np.sin(np.arange(2560) / 7.0) * (k + 1)
    rows[:, 5] = -rows[:, 4]
    return rows


def write_femto(folder: Path, numbers: list[int], *, semicolon: set[int] = frozenset()) -> None:
    folder.mkdir(parents=True)
    for k, n in enumerate(numbers):
        rows = femto_rows(k)
        if n in semicolon:  # European export: ';' between fields, ',' as decimal mark
            text = "\n".join(";".join(f"{v:g}".replace(".", ",") for v in row) for row in rows) + "\n"
            (folder / f"acc_{n:05d}.csv").write_text(text)
        else:
            text = "\n".join(",".join(f"{v:g}" for v in row) for row in rows) + "\n"
            (folder / f"acc_{n:05d}.csv.gz").write_bytes(gzip.compress(text.encode()))


def test_femto_reads_both_separators_and_orders_by_number(tmp_path: Path) -> None:
    write_femto(tmp_path / "Bearing2_7", [1, 2, 3, 10], semicolon={2})
    runs = load_femto(tmp_path)  # found below the given folder
    assert [(r.machine, r.sensor) for r in runs] == [("Bearing2_7", "horizontal"), ("Bearing2_7", "vertical")]
    hor, ver = runs
    assert hor.windows.shape == (4, 2560)
    assert hor.windows.dtype == np.float32
    for k in range(4):
        np.testing.assert_allclose(hor.windows[k], femto_rows(k)[:, 4], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ver.windows[k], femto_rows(k)[:, 5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hor.ts, [0.0, 10.0, 20.0, 90.0])  # a missing snapshot leaves a gap
    assert hor.labels is not None
    np.testing.assert_allclose(hor.labels.rul_s, [90.0, 80.0, 70.0, 0.0])
    assert hor.labels.failed_at_end
    assert not hor.labels.degraded.any()
    assert hor.rpm == 1650.0
    assert hor.fs == 25600.0
    assert hor.geometry == PRESETS["femto_6804"]
    assert hor.meta["radial_load_n"] == 4200.0


def test_femto_bad_files_are_named(tmp_path: Path) -> None:
    write_femto(tmp_path / "B", [1, 2])
    (tmp_path / "B" / "acc_00002.csv").write_text("1,2,3,4,5,6\n")
    with pytest.raises(DataError, match="snapshot 2 is there twice"):
        load_femto(tmp_path / "B")
    (tmp_path / "B" / "acc_00002.csv.gz").unlink()
    with pytest.raises(DataError, match=r"acc_00002\.csv: 1 rows × 6 columns"):
        load_femto(tmp_path / "B")
    (tmp_path / "nothing-here").mkdir()
    with pytest.raises(DataError, match="no FEMTO bearing folder"):
        load_femto(tmp_path / "nothing-here")


# ---------------------------------------------------------------- CWRU format quirks (written here)


def test_cwru_names_parse() -> None:
    assert parse_name("12k_Drive_End_IR021_2_211.mat").cls == "IR021"
    ball = parse_name("12k_Drive_End_B014_1_186.mat")
    assert (ball.cls, ball.fault_size_in, ball.load, ball.number, ball.fs) == ("B014", 0.014, 1, 186, 12000.0)
    outer = parse_name("48k_Drive_End_OR021@6_0_238.mat")
    assert (outer.cls, outer.fs) == ("OR021", 48000.0)
    normal = parse_name("normal_0_97.mat")
    assert (normal.cls, normal.fs, normal.number) == ("normal", 48000.0, 97)
    with pytest.raises(DataError, match="not a CWRU drive-end file name"):
        parse_name("12k_Fan_End_IR007_0_278.mat")


def test_cwru_file_variable_quirk_decimation_and_hop(tmp_path: Path) -> None:
    fs = 48000.0
    t = np.arange(48000) / fs
    tone = np.sin(2 * np.pi * 100.0 * t)  # 100 Hz survives decimation to 12 kHz
    savemat(tmp_path / "48k_Drive_End_IR014_0_174.mat", {"X173_DE_time": tone[:, None], "X173RPM": 1796})
    run = load_cwru_file(tmp_path / "48k_Drive_End_IR014_0_174.mat", window=1000, target_fs=12000.0)
    assert run.meta["variable"] == "X173_DE_time"
    assert run.meta["n_samples_original"] == 48000
    assert run.fs == 12000.0
    assert run.windows.shape == (12, 1000)
    expect = np.sin(2 * np.pi * 100.0 * np.arange(12000) / 12000.0).reshape(12, 1000)
    np.testing.assert_allclose(run.windows[1:-1], expect[1:-1], atol=2e-3)  # edges carry filter transients
    np.testing.assert_allclose(run.ts, np.arange(12) * 1000 / 12000.0)
    assert run.rpm == 1796.0
    assert run.meta["load"] == 0
    assert run.meta["class"] == "IR014"
    assert run.labels is not None
    assert run.labels.degraded.all()
    assert set(run.labels.fault) == {"IR014"}
    assert np.isinf(run.labels.rul_s).all()
    assert not run.labels.failed_at_end
    hopped = load_cwru_file(tmp_path / "48k_Drive_End_IR014_0_174.mat", window=1000, hop=500)
    assert hopped.windows.shape == (23, 1000)
    np.testing.assert_array_equal(hopped.windows[2], run.windows[1])


def test_cwru_rpm_fallback_and_errors(tmp_path: Path) -> None:
    savemat(tmp_path / "12k_Drive_End_B007_2_120.mat", {"X120_DE_time": np.ones((5000, 1))})
    (run,) = load_cwru(tmp_path, window=2048)
    assert run.rpm == 1750.0
    assert run.meta["rpm_source"] == "load table"
    assert run.windows.shape == (2, 2048)
    assert run.machine == "cwru-B007-load2-120"
    savemat(tmp_path / "12k_Drive_End_B007_1_119.mat", {"X119_FE_time": np.ones((5000, 1))})
    with pytest.raises(DataError, match=r"no \*_DE_time variable \(found X119_FE_time\)"):
        load_cwru(tmp_path)
    (tmp_path / "12k_Drive_End_B007_1_119.mat").unlink()
    savemat(tmp_path / "12k_Drive_End_B007_0_118.mat", {"X118_DE_time": np.ones((100, 1))})
    with pytest.raises(DataError, match="fewer than one window of 2048"):
        load_cwru(tmp_path)


# ---------------------------------------------------------------- load_runs dispatcher


def test_load_runs_dispatches_on_content_and_searches_below(tmp_path: Path) -> None:
    write_sim_dataset(tmp_path / "all" / "ds")
    write_femto(tmp_path / "all" / "femto" / "Bearing1_9", [1, 2])
    (tmp_path / "all" / "cwru").mkdir()
    savemat(tmp_path / "all" / "cwru" / "normal_0_97.mat", {"X097_DE_time": np.ones((48000, 1))})
    runs = load_runs([tmp_path / "all"], progress=False)
    assert [r.source for r in runs] == ["cwru", "sim", "sim", "femto", "femto"]  # sorted folder order
    one = load_runs([tmp_path / "all" / "ds"], progress=False)
    assert [r.run_id for r in one] == [r.run_id for r in runs if r.source == "sim"]
    assert load_runs([tmp_path / "all" / "cwru" / "normal_0_97.mat"], window=1000, progress=False)[
        0
    ].windows.shape == (12, 1000)


def test_load_runs_resamples_snapshot_formats(tmp_path: Path) -> None:
    write_sim_dataset(tmp_path / "ds")
    runs = load_runs([tmp_path / "ds"], target_fs=12800.0, progress=False)
    assert all(r.fs == 12800.0 and r.windows.shape[1] == 32 for r in runs)
    assert runs[0].meta["fs_original"] == 25600.0


def test_load_runs_errors_name_the_known_formats(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "windows.sqlite").write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_runs([tmp_path / "export"], progress=False)
    text = str(info.value)
    for word in ("manifest.json", "acc_*.csv", ".mat", "agent exports"):
        assert word in text
    with pytest.raises(DataError, match="no such file or folder"):
        load_runs([tmp_path / "missing"], progress=False)
    with pytest.raises(DataError, match="no data paths given"):
        load_runs([], progress=False)
    write_sim_dataset(tmp_path / "ds")
    with pytest.raises(DataError, match="loaded twice"):
        load_runs([tmp_path / "ds", tmp_path / "ds"], progress=False)


def test_register_format_is_the_hook_for_new_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "FORMATS", list(load_module.FORMATS))
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "export.json").write_text("{}")

    def load(path: Path, opts: Any) -> list[Run]:
        return [make_run("agent-1", "m9", labels=None, source="agent")]

    register_format(DataFormat("agent", "agent export folder", lambda p: (p / "export.json").is_file(), load))
    (run,) = load_runs([tmp_path / "export"], progress=False)
    assert run.source == "agent"
    assert run.machine == "m9"


# ---------------------------------------------------------------- Run, fingerprint


def make_run(
    run_id: str,
    machine: str,
    *,
    n: int = 5,
    labels: RunLabels | str | None = "default",
    source: str = "sim",
    sensor: str = "s0",
    failed: bool = False,
) -> Run:
    rng = np.random.default_rng(len(run_id))
    if labels == "default":
        labels = RunLabels(
            rul_s=np.full(n, np.inf) if not failed else np.arange(n)[::-1] * 10.0,
            degraded=np.zeros(n, bool),
            fault=np.full(n, "healthy", dtype=object),
            severity=None,
            failed_at_end=failed,
        )
    return Run(
        run_id=run_id,
        machine=machine,
        sensor=sensor,
        source=source,
        fs=1000.0,
        rpm=0.0,
        windows=rng.standard_normal((n, 8)).astype(np.float32),
        ts=np.arange(n) * 10.0,
        geometry=None,
        labels=labels if not isinstance(labels, str) else None,
        meta={"start_epoch_s": 1000.0},
    )


def test_run_checks_its_shapes() -> None:
    good = make_run("a", "m")
    assert good.n_windows == 5
    assert good.window_length == 8
    with pytest.raises(DataError, match="ts has shape"):
        Run("x", "m", "s", "sim", 1.0, 0.0, np.zeros((3, 4), np.float32), np.zeros(2), None, None, {})
    with pytest.raises(DataError, match="source"):
        Run("x", "m", "s", "csv", 1.0, 0.0, np.zeros((3, 4), np.float32), np.zeros(3), None, None, {})
    with pytest.raises(DataError, match="time order"):
        Run("x", "m", "s", "sim", 1.0, 0.0, np.zeros((3, 4), np.float32), np.array([0, 2, 1.0]), None, None)
    with pytest.raises(DataError, match="2 labels for 3 windows"):
        Run(
            "x",
            "m",
            "s",
            "sim",
            1.0,
            0.0,
            np.zeros((3, 4)),
            np.zeros(3),
            None,
            make_run("a", "m", n=2).labels,
        )
    with pytest.raises(DataError, match="NaN"):
        RunLabels(np.array([np.nan]), np.zeros(1, bool), np.array(["x"]), None, False)


def test_fingerprint_is_order_free_and_sees_every_change() -> None:
    runs = [make_run("a", "m1"), make_run("bb", "m2", failed=True)]
    fp = fingerprint(runs)
    assert len(fp) == 64
    assert int(fp, 16) >= 0
    assert fingerprint(list(reversed(runs))) == fp
    assert fingerprint([make_run("a", "m1"), make_run("bb", "m2", failed=True)]) == fp
    changed = make_run("a", "m1")
    changed.windows[2, 3] += 1e-3
    assert fingerprint([changed, runs[1]]) != fp
    relabelled = make_run("bb", "m2", failed=True)
    assert relabelled.labels is not None
    relabelled.labels.rul_s[0] += 1.0
    assert fingerprint([runs[0], relabelled]) != fp
    assert fingerprint([runs[0], make_run("bb", "m2", labels=None)]) != fp


# ---------------------------------------------------------------- split_by_machine


def fleet(n_machines: int, sensors: int = 2, failing_every: int = 3) -> list[Run]:
    return [
        make_run(f"r{m}-{s}", f"m{m}", sensor=f"s{s}", failed=m % failing_every == 0)
        for m in range(n_machines)
        for s in range(sensors)
    ]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    sensors=st.integers(1, 3),
    frac=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31),
    stratify=st.booleans(),
)
def test_split_never_puts_a_machine_on_both_sides(
    n: int, sensors: int, frac: float, seed: int, stratify: bool
) -> None:
    runs = fleet(n, sensors)
    train, val = split_by_machine(runs, val_fraction=frac, seed=seed, stratify=stratify)
    assert not {r.machine for r in train} & {r.machine for r in val}
    assert sorted(r.run_id for r in train + val) == sorted(r.run_id for r in runs)
    assert train, "training is never left empty"
    if frac > 0 and n >= 2:
        assert val, "validation gets at least one machine"
    assert (train, val) == split_by_machine(runs, val_fraction=frac, seed=seed, stratify=stratify)


def test_split_is_seeded_stratified_and_keyed() -> None:
    runs = fleet(12)
    splits = {
        tuple(sorted({r.machine for r in split_by_machine(runs, val_fraction=0.25, seed=s)[1]}))
        for s in range(20)
    }
    assert len(splits) > 1, "different seeds give different splits"
    for seed in range(20):
        train, val = split_by_machine(runs, val_fraction=0.25, seed=seed)
        assert len({r.machine for r in val}) == 3
        assert any(r.labels is not None and r.labels.failed_at_end for r in val)
        assert any(r.labels is not None and r.labels.failed_at_end for r in train)
    assert split_by_machine(runs, val_fraction=0.0, seed=0) == (runs, [])
    with pytest.raises(DataError, match="val_fraction"):
        split_by_machine(runs, val_fraction=1.0, seed=0)
    by_load = [make_run(f"c{i}", f"cwru-x-{i}") for i in range(6)]
    for i, r in enumerate(by_load):
        r.meta["load"] = i % 3
    train, val = split_by_machine(by_load, val_fraction=0.34, seed=1, key=lambda r: str(r.meta["load"]))
    assert len({r.meta["load"] for r in val}) == 1
    assert not {r.meta["load"] for r in train} & {r.meta["load"] for r in val}


# ---------------------------------------------------------------- maintenance events


EVENTS_CSV = """# plant maintenance log
machine,sensor,ts,event
m1,,2026-01-01T00:01:00Z,inspection
m1,s0,1767225660,failure
m1,,2026-01-01T00:03:00,replacement
m2,s1,2026-01-01T00:00:40+00:00,FAILURE

m3,,1767225620.5,repair
"""


def test_events_csv_parses_times_sensors_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_CSV)
    events = load_events_csv(path)
    assert [(e.machine, e.sensor, e.event) for e in events] == [
        ("m3", None, "repair"),
        ("m2", "s1", "failure"),
        ("m1", None, "inspection"),
        ("m1", "s0", "failure"),
        ("m1", None, "replacement"),
    ]
    assert [e.ts_s for e in events] == [1767225620.5, 1767225640.0, 1767225660.0, 1767225660.0, 1767225780.0]
    assert events[0].line == 8
    assert events[3].line == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("machine,ts,event\nm1,2026-01-01,broke\n", r":2: event 'broke' is not one of failure"),
        (
            "machine,ts,event\nm1,yesterday,failure\n",
            r":2: time 'yesterday' is neither epoch seconds nor ISO",
        ),
        ("machine,ts,event\nm1,5,failure\nm2,6\n", r":3: 2 fields, the header has 3"),
        ("# c\nmachine,when,event\n", r":2: header .* lacks ts"),
        ("machine,ts,event\n,5,failure\n", r":2: empty machine"),
        ("machine,ts,event\nm,nan,failure\n", r":2: time 'nan' is not finite"),
        ("", "empty"),
    ],
)
def test_events_csv_bad_rows_name_their_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "events.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=message):
        load_events_csv(path)


def test_apply_events_labels_unlabelled_runs(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_CSV)
    events = load_events_csv(path)
    start = 1767225600.0  # window k at start + 10 k s, k = 0..9
    runs = [
        make_run("m1-s0", "m1", n=10, labels=None, sensor="s0", source="agent"),
        make_run("m1-s1", "m1", n=10, labels=None, sensor="s1", source="agent"),
        make_run("m2-s1", "m2", n=10, labels=None, sensor="s1", source="agent"),
        make_run("m3-s0", "m3", n=10, labels=None, sensor="s0", source="agent"),
        make_run("labelled", "m1", n=10),
    ]
    for r in runs:
        r.meta["start_epoch_s"] = start
    out = apply_events(runs, events, horizon_s=3600.0)
    assert all(r.labels is None for r in runs[:4]), "inputs are not modified"
    assert out[4] is runs[4]
    m1s0, m1s1, m2s1, m3s0 = (r.labels for r in out[:4])
    assert m1s0 is not None
    assert m1s1 is not None
    assert m2s1 is not None
    assert m3s0 is not None
    # m1/s0 fails at +60 s; the windows after it belong to the replacement bearing (no failure ahead)
    np.testing.assert_allclose(m1s0.rul_s, [60, 50, 40, 30, 20, 10, 0, *[np.inf] * 3])
    assert not m1s0.failed_at_end
    assert not m1s0.degraded.any()
    assert set(m1s0.fault) == {"unknown"}
    assert np.isinf(m1s1.rul_s).all(), "the failure was logged for sensor s0 only"
    np.testing.assert_allclose(m2s1.rul_s[:5], [40, 30, 20, 10, 0])
    assert np.isinf(m3s0.rul_s).all(), "a repair ends a life without a failure"
    short = apply_events(runs[2:3], events, horizon_s=15.0)[0].labels
    assert short is not None
    np.testing.assert_allclose(short.rul_s[:5], [np.inf, np.inf, np.inf, 10, 0])
    ends = apply_events(
        [make_run("e", "m5", n=3, labels=None)],
        [MaintenanceEvent("m5", None, 1000.0 + 25.0, "failure")],
        horizon_s=100.0,
    )[0].labels
    assert ends is not None
    assert ends.failed_at_end
    np.testing.assert_allclose(ends.rul_s, [25.0, 15.0, 5.0])
    bare = make_run("b", "m1", labels=None)
    bare.meta.clear()
    with pytest.raises(DataError, match="start_epoch_s"):
        apply_events([bare], events, horizon_s=10.0)


# ---------------------------------------------------------------- round trip through the simulator's writer


def test_round_trip_through_the_simulator_dataset_writer(tmp_path: Path) -> None:
    from simulator.cli import main as simulate
    from simulator.fleet_model import build_fleet

    args = [
        "--machines",
        "4",
        "--seed",
        "3",
        "--horizon",
        "10m",
        "--window",
        "256",
        "--speed-variation",
        "0.05",
    ]
    assert simulate(["dataset", "--out", str(tmp_path / "ds"), "--no-progress", *args]) == 0
    runs = load_runs([tmp_path / "ds"], progress=False)
    fleet_truth = build_fleet(4, 3, window=256, horizon_s=600.0, speed_variation=0.05)
    assert [(r.machine, r.sensor) for r in runs] == [(s.machine, s.sensor) for s in fleet_truth]
    assert any(r.labels is not None and r.labels.failed_at_end for r in runs)
    for run, truth in zip(runs, fleet_truth, strict=True):
        assert run.source == "sim"
        assert run.windows.shape == (truth.n_windows, 256)
        assert run.fs == truth.fs
        assert run.rpm == truth.rpm
        assert run.geometry == truth.geometry
        for k in (0, truth.n_windows // 2, truth.n_windows - 1):
            x, lab = truth.window(k)
            np.testing.assert_array_equal(run.windows[k], x)
            assert run.ts[k] == pytest.approx(truth.t(k))
            assert run.labels is not None
            assert run.labels.fault[k] == lab.fault
            assert run.labels.severity is not None
            assert run.labels.severity[k] == pytest.approx(lab.severity)
            assert run.labels.rul_s[k] == pytest.approx(lab.rul_s)
            assert run.labels.degraded[k] == (lab.severity > 0)
        assert run.labels is not None
        assert run.labels.failed_at_end == (truth.failure_s is not None)
        assert run.meta["start_epoch_s"] == pytest.approx(1_767_225_600.0)
        assert run.meta["rpm_windows"].shape == (truth.n_windows,)
    assert len(fingerprint(runs)) == 64
