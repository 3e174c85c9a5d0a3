"""Arguments shared by the simulator's commands: argparse `type=` callables with messages that teach, and
the fleet-shaping options both `dataset` and `fleet` declare."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime

from gruwatch.options import DURATION_HELP, int_at_least, parse_duration

DEFAULT_START = "2026-01-01T00:00:00Z"


positive_int = int_at_least(1)


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


def _fault_list(text: str) -> tuple[str, ...]:
    from simulator.degradation import FAULTS

    faults = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in faults if f not in FAULTS]
    if bad or not faults:
        raise argparse.ArgumentTypeError(f"fault types are a comma list of {','.join(FAULTS)}; got {text!r}")
    return faults


def add_fleet_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that shape the simulated fleet (shared by `dataset`; `fleet` may reuse them)."""
    from simulator.fleet_model import DEFAULT_HEALTHY_FRACTION, DEFAULT_HORIZON_S, DEFAULT_PRESET
    from simulator.signal import RIG_PRESETS

    presets = "; ".join(f"{p.name}: {p.description}" for p in RIG_PRESETS.values())
    g = parser.add_argument_group("fleet")
    g.add_argument(
        "--machines", type=positive_int, default=20, metavar="N", help="number of machines (default: 20)"
    )
    g.add_argument(
        "--sensors",
        type=positive_int,
        default=1,
        metavar="N",
        help="accelerometers per machine (default: 1)",
    )
    g.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed and options, same bytes (default: 0)"
    )
    g.add_argument(
        "--preset",
        choices=sorted(RIG_PRESETS),
        default=DEFAULT_PRESET,
        help=f"rig (default: {DEFAULT_PRESET}). {presets}",
    )
    g.add_argument(
        "--healthy-fraction",
        type=float,
        default=DEFAULT_HEALTHY_FRACTION,
        help=f"share of machines that never fail (default: {DEFAULT_HEALTHY_FRACTION})",
    )
    g.add_argument(
        "--faults",
        type=_fault_list,
        default=None,
        metavar="LIST",
        help="fault types for failing machines, comma list of outer,inner,ball,cage (default: all)",
    )
    g.add_argument(
        "--horizon",
        type=parse_duration,
        default=DEFAULT_HORIZON_S,
        metavar="DURATION",
        help="simulated time per run; lives fall in 0.3–1× of it, healthy runs last all of it "
        f"({DURATION_HELP}; default: 3h, FEMTO-like accelerated lives)",
    )
    g.add_argument(
        "--speed-variation",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="slow swing of shaft speed within a run, as a fraction of nominal (e.g. 0.05; default: 0)",
    )
    s = parser.add_argument_group("sampling")
    s.add_argument(
        "--fs", type=positive_float, default=25600.0, metavar="HZ", help="sample rate in Hz (default: 25600)"
    )
    s.add_argument(
        "--window", type=positive_int, default=2560, help="samples per window (default: 2560 = 0.1 s)"
    )
    s.add_argument(
        "--interval",
        type=parse_duration,
        default=10.0,
        metavar="DURATION",
        help="time between windows (e.g. 10, 10s, 1m; default: 10 s)",
    )
