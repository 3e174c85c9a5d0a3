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

from gruwatch.options import Parser, add_progress_option, progress_enabled
from simulator.arguments import DEFAULT_START, add_fleet_model_arguments, parse_start

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
    progress = progress_enabled(args)
    if progress:
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
            progress=progress,
        )
    except FileExistsError as exc:
        sys.stderr.write(f"{PROG} dataset: error: {exc}\n")
        return 1
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
    parser = Parser(prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    add_progress_option(ds)
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
