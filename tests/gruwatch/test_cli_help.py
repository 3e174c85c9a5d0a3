"""One CLI voice: every option, positional and subcommand of every `gruwatch` command has help text.

The parsers are taken from the commands themselves: each command's entry point runs with `--help`
while `ArgumentParser.parse_known_args` is replaced by a catcher, so a command added later is
walked too, subcommands included.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from unittest import mock

import pytest

from gruwatch import cli


class _Caught(BaseException):
    """Raised instead of parsing: carries the parser the command built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _parser_of(command: str) -> argparse.ArgumentParser:
    def catch(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Caught(self)

    entry = cli._load(cli.COMMANDS[command])
    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", catch):
        try:
            entry(["--help"])
        except _Caught as caught:
            return caught.parser
    raise AssertionError(f"gruwatch {command} parsed its arguments without argparse")


def _walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """(prog, action) for every action of the parser and of its subcommands' parsers."""
    seen: set[int] = set()
    todo = [parser]
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
                yield from ((p.prog, choice) for choice in action._choices_actions)
                # A subcommand added without help= has no entry in _choices_actions at all.
                listed = {id(action.choices[c.dest]) for c in action._choices_actions}
                for name, sub in action.choices.items():
                    if id(sub) not in listed:
                        listed.add(id(sub))
                        yield p.prog, argparse.Action([], dest=name, help=None)
            elif not isinstance(action, argparse._HelpAction):
                yield p.prog, action


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    return [
        f"{prog}: {'/'.join(a.option_strings) or a.metavar or a.dest}"
        for prog, a in _walk(parser)
        if a.help is None or (a.help != argparse.SUPPRESS and not str(a.help).strip())
    ]


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_option_has_help(command: str) -> None:
    parser = _parser_of(command)
    assert sum(1 for _ in _walk(parser)) >= 1
    assert _undocumented(parser) == []


def test_the_walk_sees_an_option_without_help() -> None:
    # Control: an option and a subcommand's positional without help are both reported.
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--good", help="documented")
    p.add_argument("--bad")
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("go", help="go somewhere")
    s.add_argument("where")
    sub.add_parser("stay")
    assert sorted(_undocumented(p)) == ["x go: where", "x: --bad", "x: stay"]


def test_durations_are_given_one_way() -> None:
    # `--horizon 3h`, `--duration 2m`, `--budget 10m`, `--timeout 90s`, `--stale-after 2m`; older `-s` spellings still parse.
    from edge_agent.agent_cli import _parser as agent_parser
    from gruwatch.demo import build_parser as demo_parser
    from trainer.retrain_cli import build_parser as retrain_parser

    base = ["--collected", "c", "--current", "b", "--out", "o", "--signing-key", "k"]
    assert retrain_parser().parse_args([*base, "--horizon", "3h", "--timeout", "2m"]).horizon == 10800.0
    assert retrain_parser().parse_args([*base, "--horizon-s", "60"]).horizon == 60.0
    assert retrain_parser().parse_args([*base, "--no-progress"]).progress is False
    assert demo_parser().parse_args(["--duration", "2m"]).duration == 120.0
    deploy = ["deploy", "--bundle", "b", "--broker", "mqtt://h", "--agent", "a", "--timeout", "90s"]
    assert agent_parser().parse_args(deploy).timeout == 90.0
    assert _parser_of("dashboard").parse_args(["--stale-after", "2m"]).stale_after == 120.0
    assert _parser_of("bench").parse_args(["--budget", "10m"]).budget == 600.0
    assert _parser_of("bench").parse_args(["--budget-s", "30"]).budget == 30.0
    with pytest.raises(SystemExit):
        demo_parser().parse_args(["--duration", "0"])
