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


# --------------------------------------------------------------------------- one CLI voice
def test_a_mistyped_command_or_option_suggests_the_right_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "datset", "--out", "x"])
    assert exc.value.code == 2
    assert "did you mean 'dataset'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "x", "--out", "y", "--epohcs", "3"])
    assert "did you mean '--epochs'?" in capsys.readouterr().err


def test_durations_parse_one_way_everywhere() -> None:
    from gruwatch.options import parse_duration
    from simulator.cli import build_parser as simulate_parser
    from trainer.cli import build_parser as train_parser
    from trainer.evaluate_cli import build_parser as evaluate_parser

    assert [parse_duration(t) for t in ("3600", "90s", "30m", "1.5h", "2d", "250ms")] == [
        3600.0, 90.0, 1800.0, 5400.0, 172800.0, 0.25,
    ]  # fmt: skip
    for bad in ("soon", "-3h", "0", "3 weeks"):
        with pytest.raises(Exception, match="duration"):
            parse_duration(bad)
    common = ["--data", "d", "--out", "o"]
    assert train_parser().parse_args([*common, "--horizon", "3h"]).horizon == 10800.0
    assert train_parser().parse_args([*common, "--horizon-s", "60"]).horizon == 60.0  # older spelling
    assert evaluate_parser().parse_args([*common, "--model", "b", "--horizon", "1d"]).horizon == 86400.0
    ds = simulate_parser().parse_args(["dataset", "--out", "o", "--horizon", "3h", "--interval", "1m"])
    assert (ds.horizon, ds.interval) == (10800.0, 60.0)


def _options(parser: object) -> list[tuple[str, object]]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    out: list[tuple[str, object]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{name} {opt}", act) for opt, act in _options(sub)]
        elif not isinstance(action, argparse._HelpAction):
            out.append((action.option_strings[0] if action.option_strings else action.dest, action))
    return out


def test_every_option_has_help_and_one_progress_switch() -> None:
    from simulator.cli import build_parser as simulate_parser
    from trainer.cli import build_parser as train_parser
    from trainer.evaluate_cli import build_parser as evaluate_parser

    for parser in (train_parser(), evaluate_parser(), simulate_parser()):
        options = _options(parser)
        missing = [name for name, action in options if not getattr(action, "help", None)]
        assert missing == [], f"{parser.prog}: options without help: {missing}"
        names = {s for _, a in options for s in getattr(a, "option_strings", [])}
        assert not names & {"-q", "--quiet"}, parser.prog
    for parser in (train_parser(), evaluate_parser()):
        names = {s for _, a in _options(parser) for s in getattr(a, "option_strings", [])}
        assert {"--progress", "--no-progress"} <= names


def test_errors_after_long_work_are_found_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.signing import generate_keypair

    _key, pub = generate_keypair(tmp_path / "keys")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    no_data = str(tmp_path / "no-such-data")  # loading it would fail: the checks come first
    cases = [
        (["--out", str(tmp_path / "b"), "--signing-key", str(pub)], "is a public key"),
        (["--out", str(blocker / "bundle")], "a-file is a file"),
        (["--out", str(tmp_path / "c"), "--checkpoint", str(blocker / "m.pt")], "a-file is a file"),
    ]
    for extra, message in cases:
        assert cli.main(["train", "--data", no_data, *extra, "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert message in err, err
        assert "Traceback" not in err
    assert cli.main(["evaluate", "--model", "m", "--data", no_data, "--out", str(blocker / "e")]) == 1
    assert "a-file is a file" in capsys.readouterr().err


def test_no_traceback_reaches_the_user(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def crash(argv: list[str]) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_load", lambda cmd: crash)
    monkeypatch.delenv("GRUWATCH_DEBUG", raising=False)
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: boom" in err
    assert "--debug" in err
    assert "Traceback" not in err
    with pytest.raises(RuntimeError, match="boom"):  # asked for: the traceback
        cli.main(["--debug", "train"])
