"""The `gruwatch` command: a thin dispatcher that imports a subcommand's package only when it runs.

Each subcommand lives in its package as a function `f(argv: list[str]) -> int`; this file only
knows their names, so `gruwatch agent run` on a gateway never imports the trainer and starts fast.
A subcommand whose optional dependencies are missing says which extra to install; a mistyped one
gets the closest name. No traceback reaches the user: a `GruwatchError` is printed as
`error: <what happened and what to do>` (exit 1), anything unexpected as one line with the way to
see the traceback (`gruwatch --debug ...` or GRUWATCH_DEBUG=1), Ctrl-C as `interrupted` (exit 130);
gruwatch's own warnings as one line, `PROG: warning: ...`.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple, TextIO


class Command(NamedTuple):
    target: str  # "package.module:function", function(argv: list[str]) -> int
    extra: str
    summary: str


# Only commands that exist are listed (no placeholders). Order is the order shown in --help.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        "gruwatch.demo:main", "demo", "the whole loop on one machine: broker, model, agent, failing fleet"
    ),
    "simulate": Command(
        "simulator.cli", "sim", "simulate a bearing fleet: a labelled dataset or a live MQTT feed"
    ),
    "train": Command(
        "trainer.cli:main", "train", "fit a GRU on labelled or healthy-only data and write a model bundle"
    ),
    "evaluate": Command(
        "trainer.evaluate_cli:main",
        "train",
        "score a bundle step-wise over whole runs: metrics.json and report.html",
    ),
    "retrain": Command(
        "trainer.retrain_cli:main",
        "train",
        "retrain from agent exports and maintenance events; promote only if better; --deploy ships it",
    ),
    "agent": Command(
        "edge_agent.agent_cli:main", "agent", "run the edge daemon, export its data, deploy a model to it"
    ),
    "keys": Command(
        "edge_agent.bundle_cli:keys_main", "agent", "create an Ed25519 key pair for signing model bundles"
    ),
    "bundle": Command("edge_agent.bundle_cli:bundle_main", "agent", "sign or verify a model bundle"),
    "dashboard": Command(
        "dashboards.cli:main", "dashboard", "serve the live fleet view of a broker in the browser"
    ),
    "bench": Command("gruwatch.bench:main", "all", "run the benchmarks and print their tables of ratios"),
}

USAGE = """usage: gruwatch <command> [options]

gruwatch watches rotating machines: it simulates bearing vibration, trains a GRU on it, and scores
live sensor streams on an edge gateway.

commands:
{commands}

Run `gruwatch <command> --help` for a command's options. `gruwatch --debug <command> ...` (or
GRUWATCH_DEBUG=1) shows the full traceback of an unexpected error.
"""


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def _load(cmd: Command) -> Callable[[list[str]], int]:
    module_name, _, func = cmd.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in {"gruwatch", "edge_agent", "simulator", "trainer", "dashboards"}:
            raise
        sys.stderr.write(
            f"gruwatch: this command needs the '{cmd.extra}' extra ({exc.name} is not installed).\n"
            f"Install it with: pip install 'gruwatch[{cmd.extra}]'\n"
        )
        raise SystemExit(2) from exc
    entry: Callable[[list[str]], int] = getattr(module, func or "main")
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("GRUWATCH_DEBUG", "") not in ("", "0")
    if args[:1] == ["--debug"]:
        debug, args = True, args[1:]
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        from gruwatch import __version__

        sys.stdout.write(f"gruwatch {__version__}\n")
        return 0
    name, rest = args[0], args[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        from gruwatch.options import suggestion

        sys.stderr.write(f"gruwatch: unknown command '{name}'{suggestion(name, COMMANDS)}.\n\n{_usage()}")
        return 2
    return run_guarded(lambda: _load(cmd)(rest), f"gruwatch {name}", debug=debug)


def _concise_warnings(prog: str) -> None:
    """gruwatch's own warnings (`GruwatchWarning`) print as `PROG: warning: ...` (no file, line or
    source line); others (libraries) as Python prints them."""
    from edge_agent.errors import GruwatchWarning

    default = getattr(warnings.showwarning, "python_default", warnings.showwarning)  # never wrap twice

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
        if issubclass(category, GruwatchWarning):
            (file or sys.stderr).write(f"{prog}: warning: {message}\n")
        else:
            default(message, category, filename, lineno, file, line)

    show.python_default = default  # type: ignore[attr-defined]
    warnings.showwarning = show


def run_guarded(run: Callable[[], int], prog: str, *, debug: bool = False) -> int:
    """`run()`'s exit status; errors become one message on stderr instead of a traceback."""
    from edge_agent.errors import GruwatchError

    _concise_warnings(prog)
    try:
        return int(run())
    except GruwatchError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except Exception as exc:  # the last line of defence: no traceback unless asked for
        if debug:
            raise
        sys.stderr.write(
            f"{prog}: unexpected error: {type(exc).__name__}: {exc}\n"
            f"This is a bug in gruwatch; rerun with `gruwatch --debug ...` (or GRUWATCH_DEBUG=1) to see "
            "the traceback, and report it with that output.\n"
        )
        return 1
