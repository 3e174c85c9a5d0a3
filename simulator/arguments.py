"""Argument types shared by the simulator's commands: argparse `type=` callables with messages that teach."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime

DEFAULT_START = "2026-01-01T00:00:00Z"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number ≥ 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number > 0")
    return value


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate {text!r}: give a probability between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"rate {text!r}: give a probability between 0 and 1")
    return value


def speedup(text: str) -> float:
    if text.strip().lower() == "max":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speedup {text!r}: give a number > 0 or 'max'") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"speedup {text!r}: give a number > 0 or 'max'")
    return value


def parse_duration(text: str) -> float:
    """Seconds from '3600', '90s', '30m', '3h' or '2d'."""
    text = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    scale = 1.0
    if text and text[-1] in units:
        scale, text = units[text[-1]], text[:-1]
    try:
        value = float(text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 3600, 90s, 30m, 3h)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def parse_start(text: str) -> int:
    """ns since the Unix epoch from an ISO-8601 time (UTC unless it says otherwise) or an integer of ns."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a start time: {text!r} (use ISO-8601 like {DEFAULT_START}, or ns since the epoch)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
