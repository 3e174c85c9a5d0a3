"""`gruwatch dashboard`: serve the live fleet view of one broker and topic prefix until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from dashboards import REFRESH_MS
from edge_agent.broker_url import parse_broker_url
from gruwatch.options import DURATION_HELP, Parser, parse_duration

DESCRIPTION = """\
Serve a live view of a sensor fleet in the browser: one tile per sensor coloured ok / warning /
alarm / stale with its latest health score (higher = worse) and a sparkline; the sensors that need
attention and by when; the alarm feed; one sensor in detail (score history with the thresholds and
state changes, spectrum of its latest window); the agents, online or offline, with their models.

It subscribes to {prefix}/+/+/health, {prefix}/+/+/alert and {prefix}/_agents/+/status on the
broker, and to one sensor's vibration topic only while its detail view is open. Everything the page
loads is served by this process (no internet needed). The MQTT user and password come from
GRUWATCH_MQTT_USERNAME / GRUWATCH_MQTT_PASSWORD, never from the command line.
"""

EPILOG = """\
examples:
  gruwatch dashboard --broker mqtt://127.0.0.1:1883 --port 8050
  gruwatch dashboard --broker mqtts://broker.plant:8883 --prefix plant-3/gruwatch --ca-file ca.pem \\
      --bundle models/current --host 0.0.0.0
"""


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="gruwatch dashboard",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        metavar="URL",
        help="mqtt://host:port or mqtts://host:port (default: %(default)s)",
    )
    p.add_argument("--prefix", default="gruwatch", help="topic prefix of the fleet (default: %(default)s)")
    p.add_argument("--port", type=int, default=8050, help="HTTP port of the page (default: %(default)s)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for the whole network (default: %(default)s)",
    )
    p.add_argument(
        "--stale-after",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help=f"a sensor silent this long is shown stale (default: 30 s; {DURATION_HELP})",
    )
    p.add_argument(
        "--history",
        type=int,
        default=1200,
        metavar="N",
        help="scores kept per sensor for its history plot (default: %(default)s)",
    )
    p.add_argument(
        "--max-sensors",
        type=int,
        default=5000,
        metavar="N",
        help="sensors tracked at most; memory stays bounded (default: %(default)s)",
    )
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        metavar="DIR",
        help="a model bundle whose warning/alarm thresholds to draw when the agents do not announce theirs",
    )
    p.add_argument("--ca-file", default=None, help="CA certificate for mqtts:// (default: the system's)")
    p.add_argument(
        "--refresh-ms",
        type=int,
        default=REFRESH_MS,
        metavar="MS",
        help="how often the page updates (default: %(default)s)",
    )
    return p


def _bundle_thresholds(path: Path) -> tuple[float, float]:
    from edge_agent.alarms import Thresholds

    card = path / "card.json" if path.is_dir() else path
    try:
        t = Thresholds.from_dict(json.loads(card.read_text(encoding="utf-8")).get("thresholds"))
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(f"gruwatch dashboard: cannot read thresholds from {card}: {exc}") from exc
    return t.warning, t.alarm


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(argv) if argv is not None else None)
    try:
        parse_broker_url(args.broker)
    except ValueError as exc:
        print(f"gruwatch dashboard: {exc}", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(
            f"gruwatch dashboard: --port {args.port} must be in 0–65535 (0: any free port)", file=sys.stderr
        )
        return 2
    for name, value, low in (
        ("--history", args.history, 10),
        ("--max-sensors", args.max_sensors, 1),
        ("--refresh-ms", args.refresh_ms, 100),
    ):
        if value < low:
            print(f"gruwatch dashboard: {name} {value} is too small (at least {low})", file=sys.stderr)
            return 2
    if not args.stale_after > 0:
        print("gruwatch dashboard: --stale-after must be > 0 seconds", file=sys.stderr)
        return 2
    thresholds = _bundle_thresholds(args.bundle) if args.bundle is not None else None

    try:
        from dashboards.app import serve, wait_forever
        from dashboards.fleet import FleetConfig
    except ModuleNotFoundError as exc:  # dash / plotly / paho: the optional extra is missing
        print(
            f"gruwatch dashboard: needs the 'dashboard' extra ({exc.name} is not installed).\n"
            "Install it with: pip install 'gruwatch[dashboard]'",
            file=sys.stderr,
        )
        return 2

    config = FleetConfig(stale_after_s=args.stale_after, history=args.history, max_sensors=args.max_sensors)
    try:
        handle = serve(
            args.broker,
            args.prefix,
            args.port,
            args.host,
            config=config,
            thresholds=thresholds,
            username=os.environ.get("GRUWATCH_MQTT_USERNAME"),
            password=os.environ.get("GRUWATCH_MQTT_PASSWORD"),
            ca_file=args.ca_file,
            refresh_ms=args.refresh_ms,
        )
    except ValueError as exc:
        print(f"gruwatch dashboard: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"gruwatch dashboard: cannot listen on {args.host}:{args.port} ({exc.strerror}); "
            "pick another with --port",
            file=sys.stderr,
        )
        return 2

    def _term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    print(
        f"gruwatch dashboard: {handle.url}  (broker {args.broker}, prefix {args.prefix}; Ctrl-C stops)",
        flush=True,
    )
    try:
        wait_forever(handle)
    except KeyboardInterrupt:
        print("gruwatch dashboard: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
