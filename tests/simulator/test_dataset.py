"""`gruwatch simulate dataset`: schema, manifest, agreement with the streamed windows, byte-identical reruns."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edge_agent.bearing import BearingGeometry
from simulator.cli import main, parse_start
from simulator.fleet_model import build_fleet

ARGS = [
    "--machines",
    "4",
    "--seed",
    "11",
    "--horizon",
    "15m",
    "--window",
    "512",
    "--fs",
    "12800",
    "--no-progress",
]
START_NS = parse_start("2026-01-01T00:00:00Z")


def _make(out: Path, *extra: str) -> int:
    return main(["dataset", "--out", str(out), *ARGS, *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "ds"
    assert _make(out) == 0
    return out


def test_manifest_lists_every_run(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["seed"] == 11
    assert manifest["machines"] == 4
    assert manifest["start_ns"] == START_NS == 1_767_225_600_000_000_000
    runs = manifest["runs"]
    assert len(runs) == 4
    assert sorted(p.name for p in dataset.glob("*.parquet")) == sorted(r["file"] for r in runs)
    for entry in runs:
        for key in ("machine", "sensor", "fault", "fs", "rpm", "geometry", "bpfo", "bpfi", "bsf", "ftf"):
            assert key in entry
        assert {"onset_s", "failure_s", "file"} <= entry.keys()
        g = BearingGeometry.from_dict(entry["geometry"])
        assert entry["bpfo"] == pytest.approx(g.bpfo(entry["rpm"]))
        assert entry["bpfi"] == pytest.approx(g.bpfi(entry["rpm"]))
        assert entry["bsf"] == pytest.approx(g.bsf(entry["rpm"]))
        assert entry["ftf"] == pytest.approx(g.ftf(entry["rpm"]))
        assert entry["fs"] == 12800.0
        if entry["fault"] == "healthy":
            assert entry["onset_s"] is None
            assert entry["failure_s"] is None
        elif entry["failure_s"] is not None:
            assert 0 < entry["onset_s"] < entry["failure_s"] <= 900.0


def test_parquet_schema_and_labels(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    for entry in manifest["runs"]:
        table = pq.read_table(dataset / entry["file"])
        schema = table.schema
        assert schema.field("machine").type == pa.string()
        assert schema.field("seq").type == pa.int64()
        assert schema.field("ts").type == pa.int64()
        assert schema.field("samples").type.value_type == pa.float32()
        assert schema.field("failed").type == pa.bool_()
        for name in ("sensor", "fs", "rpm", "fault", "severity", "rul_s", "t_s"):
            assert name in schema.names
        cols = table.to_pydict()
        n = table.num_rows
        assert n == entry["n_windows"]
        assert set(cols["machine"]) == {entry["machine"]}
        assert set(cols["sensor"]) == {entry["sensor"]}
        assert cols["seq"] == list(range(n))
        assert cols["ts"] == [START_NS + i * 10_000_000_000 for i in range(n)]
        assert all(len(s) == 512 for s in cols["samples"])
        assert set(cols["fs"]) == {12800.0}
        assert set(cols["rpm"]) == {entry["rpm"]}
        failed, rul, sev = cols["failed"], np.array(cols["rul_s"]), np.array(cols["severity"])
        if entry["failure_s"] is None:
            assert not any(failed)
            assert np.all(np.isinf(rul))
            assert n == 91
        else:
            assert failed == [False] * (n - 1) + [True]
            assert rul[-1] == 0.0
            assert rul[0] == entry["failure_s"]
            assert sev[-1] == 1.0
        if entry["onset_s"] is None:
            assert set(cols["fault"]) == {"healthy"}
            assert not sev.any()
        else:
            onset_k = round(entry["onset_s"] / 10.0)
            assert set(cols["fault"][:onset_k]) == {"healthy"}
            assert set(cols["fault"][onset_k:]) == {entry["fault"]}
        stored = json.loads(pq.read_schema(dataset / entry["file"]).metadata[b"gruwatch.run"])
        assert stored == entry


def test_files_hold_the_same_windows_as_the_stream(dataset: Path) -> None:
    runs = build_fleet(4, 11, fs=12800.0, window=512, horizon_s=900.0)
    for run in runs[:2]:
        table = pq.read_table(
            dataset / f"{run.machine}_{run.sensor}.parquet", columns=["samples", "severity"]
        )
        for k in (0, run.n_windows // 2, run.n_windows - 1):
            x, labels = run.window(k)
            stored = np.asarray(table.column("samples")[k].values, dtype=np.float32)
            assert stored.tobytes() == x.tobytes()
            assert table.column("severity")[k].as_py() == labels.severity


def test_same_seed_and_arguments_give_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert _make(again) == 0
    names = sorted(p.name for p in dataset.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (dataset / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    assert main(["dataset", "--out", str(other), *ARGS, "--seed", "12"]) == 0
    assert (other / "m000_s0.parquet").read_bytes() != (dataset / "m000_s0.parquet").read_bytes()


def test_refuses_to_overwrite_unless_asked(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    assert _make(out) == 0
    assert _make(out) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["dataset", "--out", str(out), *ARGS, "--machines", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == ["m000_s0.parquet", "m001_s0.parquet"]


def test_options_shape_the_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    code = main(
        [
            "dataset",
            "--out",
            str(out),
            "--machines",
            "2",
            "--sensors",
            "2",
            "--seed",
            "3",
            "--horizon",
            "300",
            "--interval",
            "5",
            "--window",
            "256",
            "--preset",
            "cwru_6205",
            "--fs",
            "12000",
            "--healthy-fraction",
            "0",
            "--faults",
            "inner",
            "--speed-variation",
            "0.05",
            "--start",
            "2025-06-01T12:00:00+02:00",
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["machine"], r["sensor"]) for r in manifest["runs"]] == [
        ("m000", "s0"),
        ("m000", "s1"),
        ("m001", "s0"),
        ("m001", "s1"),
    ]
    assert {r["fault"] for r in manifest["runs"]} == {"inner"}
    assert {r["geometry"]["name"] for r in manifest["runs"]} == {"cwru_6205"}
    table = pq.read_table(out / "m000_s1.parquet")
    ts = table.column("ts").to_pylist()
    assert ts[0] == parse_start("2025-06-01T10:00:00Z")
    assert ts[1] - ts[0] == 5_000_000_000
    rpm = table.column("rpm").to_pylist()
    assert len(set(rpm)) > 1
    assert all(abs(v / 1797.0 - 1) < 0.09 for v in rpm)


@pytest.mark.parametrize(
    "bad",
    [
        ["--window", "300000"],  # longer than the interval at 25.6 kHz
        ["--preset", "nope"],
        ["--faults", "rust"],
        ["--horizon", "soon"],
        ["--start", "yesterday"],
        ["--machines", "0"],
    ],
)
def test_bad_options_exit_with_usage_errors(tmp_path: Path, bad: list[str]) -> None:
    try:
        code = main(["dataset", "--out", str(tmp_path / "x"), "--no-progress", *bad])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_start_times_parse() -> None:
    assert parse_start("1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_start("1970-01-01T00:00:00.5") == 500_000_000
    assert parse_start("123") == 123


def test_dataset_command_needs_no_mqtt(tmp_path: Path) -> None:
    code = (
        "import sys; from gruwatch.cli import main; "
        f"rc = main(['simulate', 'dataset', '--out', {str(tmp_path / 'd')!r}, '--machines', '1', "
        "'--horizon', '60', '--window', '256', '--no-progress']); "
        "assert rc == 0, rc; "
        "assert 'paho' not in sys.modules and 'simulator.fleet_cli' not in sys.modules, 'imported the publisher'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["runs"][0]["n_windows"] <= 7
    assert math.isclose(manifest["horizon_s"], 60.0)
