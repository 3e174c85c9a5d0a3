"""The umbrella command: help lists only built commands, unknown commands fail clearly, imports stay lazy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gruwatch import cli


def test_help_lists_every_registered_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name}" in out


def test_every_registered_command_resolves_to_a_callable() -> None:
    for name, command in cli.COMMANDS.items():
        entry = cli._load(command)
        assert callable(entry), name


def test_unknown_command_exits_2_and_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'no-such-command'" in err
    assert "commands:" in err


def test_missing_extra_names_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    command = cli.Command("gruwatch_no_such_module_xyz:main", "agent", "test")
    with pytest.raises(SystemExit) as excinfo:
        cli._load(command)
    assert excinfo.value.code == 2
    assert "pip install 'gruwatch[agent]'" in capsys.readouterr().err


def test_help_imports_no_subcommand_package() -> None:
    code = (
        "import sys; from gruwatch import cli; cli.main(['--help']);"
        "heavy = {'torch', 'pandas', 'sklearn', 'scipy', 'pyarrow', 'paho', 'onnxruntime', "
        "'simulator', 'trainer', 'edge_agent', 'dashboards'} & set(sys.modules);"
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bench_lists_the_benchmark_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    from gruwatch import bench

    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("simulator", "features", "scorer", "train", "publish"):
        assert name in out
    assert bench.main(["no-such-bench"]) == 2


def test_bench_describes_the_machine_it_runs_on() -> None:
    import os

    from gruwatch import bench

    info = bench.machine_info()
    assert info["cores"] == os.cpu_count()
    assert 1 <= info["cores_usable"] <= info["cores"]
    assert info["cpu"]
    assert info["versions"]["numpy"] == __import__("numpy").__version__
    text = bench.describe(info)
    assert info["cpu"] in text
    assert f"numpy {info['versions']['numpy']}" in text


def test_bench_json_needs_one_benchmark_that_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gruwatch import bench

    out = tmp_path / "agent.json"
    assert bench.main(["--json", str(out)]) == 2
    assert bench.main(["features", "--json", str(out)]) == 2
    assert "no --json output" in capsys.readouterr().err
    assert bench.main(["agent", "features", "--json", str(out)]) == 2
    assert not out.exists()


def test_bench_json_writes_the_figures_with_the_machine(tmp_path: Path) -> None:
    from gruwatch import bench

    out = tmp_path / "figures.json"
    bench.write_json(out, {"windows_per_s": 1.5})
    doc = json.loads(out.read_text())
    assert doc["windows_per_s"] == 1.5
    assert doc["machine"]["cores"] >= 1
