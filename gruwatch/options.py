"""What every gruwatch command shares on its command line: one way to give a duration, one progress
switch, a parser that suggests the option or command you meant, and checks of output paths that
can run before any long work starts.

Standard library only: the gateway's `gruwatch agent` may import it.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from edge_agent.errors import GruwatchError

DURATION_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HELP = "a number of seconds or with a unit: 90s, 30m, 3h, 2d"


def parse_duration(text: str) -> float:
    """Seconds from '3600', '90s', '30m', '1.5h', '2d' or '250ms' (> 0); ArgumentTypeError otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if m is None or m.group(2) not in ("", *DURATION_UNITS):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use {DURATION_HELP})")
    value = float(m.group(1)) * DURATION_UNITS.get(m.group(2), 1.0)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be positive")
    return value


def format_duration(s: float | None) -> str:
    """Seconds in one unit a person reads at a glance: 40 s, 12 min, 3.5 h, 2.0 days."""
    if s is None or not math.isfinite(s):
        return "–"
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number >= `minimum`, ArgumentTypeError (saying so) otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number ≥ {minimum}")
        return value

    return parse


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """`--progress/--no-progress`: progress bars on long work; by default only on a terminal."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: only when stderr is a terminal)",
    )


def progress_enabled(args: argparse.Namespace) -> bool:
    """The `--progress/--no-progress` choice, or whether stderr is a terminal when neither was given."""
    chosen = getattr(args, "progress", None)
    if chosen is not None:
        return bool(chosen)
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def suggestion(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse that suggests the closest option or subcommand for a mistyped one."""

    def error(self, message: str) -> NoReturn:
        m = re.match(r"argument (\S+): invalid choice: '([^']*)'", message)
        if m is not None:
            message += suggestion(m.group(2), self._choices_of(m.group(1)))
        m = re.match(r"unrecognized arguments: (\S+)", message)
        if m is not None and m.group(1).startswith("-"):
            word = m.group(1).split("=")[0]
            message += suggestion(word, self._option_strings())
        super().error(message)

    def _option_strings(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]

    def _choices_of(self, dest: str) -> list[str]:
        for a in self._actions:
            names = {a.dest, a.metavar, *a.option_strings}
            if (dest in names or dest.startswith("{")) and a.choices is not None:
                return [str(c) for c in a.choices]
        return []


def check_output_dir(path: str | Path, option: str = "--out", *, fresh: bool = False) -> Path:
    """Fail fast when `path` cannot become a folder we write into (checked before long work).

    Refused: a file at `path` or at any parent, a parent we may not write into, and with `fresh`
    a folder that already holds files.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise GruwatchError(f"{option} {out} is a file; give a folder (it is created if missing)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise GruwatchError(f"{option} {out}: {parent} is a file, so the folder cannot be created there")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GruwatchError(f"{option} {out}: no permission to write into {parent}")
    if fresh and out.is_dir() and any(out.iterdir()):
        raise GruwatchError(f"{option} {out} is not empty; write into a fresh folder")
    return out


def check_output_file(path: str | Path, option: str) -> Path:
    """Fail fast when a file cannot be written at `path` (its folder is created if missing)."""
    out = Path(path)
    if out.is_dir():
        raise GruwatchError(f"{option} {out} is a folder; give a file name")
    check_output_dir(out.parent, option=f"{option} {out}:")
    return out


def check_signing_key(path: str | Path, option: str = "--signing-key") -> None:
    """Fail fast unless `path` is an Ed25519 private key (a public key given by mistake says so)."""
    from edge_agent.signing import load_private_key

    p = Path(path)
    try:
        load_private_key(p)
    except GruwatchError as exc:
        try:
            public = b"PUBLIC KEY" in p.read_bytes()[:200]
        except OSError:
            public = False
        if public:
            raise GruwatchError(
                f"{option} {p} is a public key; sign with the private key made with it by "
                "`gruwatch keys new` (signing.key) and give the .pub file to the agents"
            ) from exc
        raise GruwatchError(f"{option}: {exc}") from exc


def hidden_alias(parser: argparse.ArgumentParser | Any, *names: str, dest: str, **kwargs: Any) -> None:
    """An older spelling of an option that still parses but is not shown in --help."""
    parser.add_argument(*names, dest=dest, help=argparse.SUPPRESS, **kwargs)
