"""The `gruwatch simulate` command: `dataset` writes a labelled run-to-failure dataset, `fleet` publishes live.

`main(argv) -> int` is what the umbrella `gruwatch` command (and `python -m simulator`) calls. The
`fleet` subcommand's options and code live in simulator/fleet_cli.py and are imported only when `fleet`
(or the help) is asked for, so `dataset` works without MQTT.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from simulator.arguments import DEFAULT_START, parse_duration, parse_start, positive_float, positive_int

PROG = "gruwatch simulate"

DESCRIPTION = """\
Simulate a fleet of machines whose rolling-element bearings degrade to failure.

Each machine has one bearing (a preset rig: its geometry sets BPFO/BPFI/BSF/FTF), a random life with
run-in, fault onset and exponential growth to failure (outer race, inner race, ball or cage), or stays
healthy. Each sensor records one window of vibration (in g) every --interval seconds. Everything is
deterministic in --seed. Physics and references: docs/simulator.md.
"""

DATASET_EPILOG = """\
examples:
  gruwatch simulate dataset --out data/sim --machines 20 --seed 1
  gruwatch simulate dataset --out data/cwru-like --preset cwru_6205 --fs 12000 --window 2048
  gruwatch simulate dataset --out data/small --machines 4 --horizon 30m --interval 5

writes one Parquet file per run (<machine>_<sensor>.parquet; columns machine, sensor, seq, ts, t_s, fs,
rpm, samples, fault, severity, rul_s, failed) and manifest.json. A default 2,560-sample window is about
4 kB on disk; 50 machines with the defaults take about 150 MB. Train on it with
`gruwatch train --data DIR`.
"""


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
        "(e.g. 3600, 90m, 3h; default: 3h, FEMTO-like accelerated lives)",
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
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds between windows (default: 10)",
    )


def _dataset(args: argparse.Namespace) -> int:
    from simulator.dataset import write_dataset
    from simulator.degradation import FAULTS
    from simulator.fleet_model import build_fleet

    faults = args.faults or FAULTS
    try:
        runs = build_fleet(
            args.machines,
            args.seed,
            fs=args.fs,
            window=args.window,
            interval_s=args.interval,
            horizon_s=args.horizon,
            sensors=args.sensors,
            healthy_fraction=args.healthy_fraction,
            preset=args.preset,
            faults=faults,
            speed_variation=args.speed_variation,
        )
    except ValueError as exc:
        sys.stderr.write(f"{PROG} dataset: error: {exc}\n")
        return 2
    settings = {
        "seed": args.seed,
        "machines": args.machines,
        "sensors": args.sensors,
        "preset": args.preset,
        "fs": args.fs,
        "window": args.window,
        "interval_s": args.interval,
        "horizon_s": args.horizon,
        "healthy_fraction": args.healthy_fraction,
        "faults": list(faults),
        "speed_variation": args.speed_variation,
        "start": args.start_text,
    }
    windows = sum(r.n_windows for r in runs)
    if not args.quiet:
        sys.stderr.write(
            f"{len(runs)} runs, {windows} windows of {args.window} samples "
            f"(~{windows * args.window * 4 * 0.4 / 1e6:.0f} MB) -> {args.out}\n"
        )
    began = time.perf_counter()
    try:
        manifest = write_dataset(
            Path(args.out),
            runs,
            start_ns=args.start,
            settings=settings,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except FileExistsError as exc:
        sys.stderr.write(f"{PROG} dataset: error: {exc}\n")
        return 1
    if not args.quiet:
        failing = sum(1 for r in runs if r.failure_s is not None)
        size = sum(p.stat().st_size for p in manifest.parent.glob("*.parquet"))
        sys.stderr.write(
            f"wrote {len(runs)} runs ({failing} fail within the horizon), {size / 1e6:.1f} MB, "
            f"in {time.perf_counter() - began:.1f} s; manifest: {manifest}\n"
        )
    return 0


def _fleet_missing(args: argparse.Namespace) -> int:
    sys.stderr.write(f"{PROG} fleet: the live fleet publisher is not part of this installation.\n")
    return 2


def _run_fleet(args: argparse.Namespace) -> int:
    from simulator.fleet_cli import run_fleet

    return int(run_fleet(args))


def build_parser(*, with_fleet: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="{dataset,fleet}")
    ds = sub.add_parser(
        "dataset",
        help="write a labelled run-to-failure dataset (Parquet + manifest.json)",
        description="Write a labelled run-to-failure dataset: one Parquet file per run and manifest.json.",
        epilog=DATASET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ds.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_fleet_model_arguments(ds)
    ds.add_argument(
        "--start",
        default=DEFAULT_START,
        metavar="TIME",
        help=f"install time of every run, ISO-8601 (UTC unless given) or ns since epoch (default: {DEFAULT_START})",
    )
    ds.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    ds.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    ds.set_defaults(func=_dataset)
    fl = sub.add_parser(
        "fleet",
        help="publish a live fleet over MQTT (gruwatch simulate fleet --help)",
        description="Publish the simulated fleet's windows live over MQTT, paced by --speedup.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fl.set_defaults(func=_fleet_missing)
    if with_fleet:
        try:
            from simulator.fleet_cli import add_fleet_arguments
        except ModuleNotFoundError as exc:
            if exc.name != "simulator.fleet_cli":
                raise
        else:
            add_fleet_arguments(fl)
            fl.set_defaults(func=_run_fleet)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `dataset` never imports the fleet publisher (nor paho).
    parser = build_parser(with_fleet=not args_list or args_list[0] != "dataset")
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "dataset":
        args.start_text = args.start
        try:
            args.start = parse_start(args.start)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    return int(args.func(args))
