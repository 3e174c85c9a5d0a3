"""`gruwatch simulate fleet`: publish a simulated bearing fleet over MQTT, paced, with fault injection.

`add_fleet_arguments(parser)` declares the options (this module imports only the standard library at
the top, so building the CLI stays cheap); `run_fleet(args)` runs the command; `publish_fleet(options)`
is the same run as a function that returns a `FleetReport` (counters included) for tests and scripts.

Timing: every sensor publishes window k at its simulated time `SensorRun.t(k)`; the fleet's simulated
clock advances `speedup` times faster than the wall clock (`--speedup max`: as fast as the broker
takes them). Sensor timestamps are `start + t(k)` (+ the sensor's clock skew, when injected), so they
run at the simulated pace. `--duration` counts WALL-clock seconds; `--windows` caps windows per sensor.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TextIO

from gruwatch.options import DURATION_HELP, add_progress_option, parse_duration, progress_enabled
from simulator.arguments import (
    add_fleet_model_arguments,
    parse_start,
    positive_int,
    rate,
    speedup,
)
from simulator.fleet_report import PROGRESS_INTERVAL_S, FleetReport, ProgressLine, SensorReport

if TYPE_CHECKING:
    from simulator.faults import FaultConfig, SensorFaultPlan

EXIT_OK = 0
EXIT_FAILED = 1

_EPILOG = """\
timing:
  Each sensor publishes one window every --interval simulated seconds. The simulated clock runs
  --speedup times faster than the wall clock (--speedup max: as fast as possible). Sensor timestamps
  are the start time (--start-time, default now) plus simulated time, so they advance at that pace.
  --duration is WALL-clock seconds; the run also ends when every sensor has published --windows
  windows (default: its whole run to failure or the horizon).

stopping:
  Ctrl-C or SIGTERM stops cleanly: in-flight messages are flushed, the summary is printed and the exit
  status is 0; a second Ctrl-C aborts at once (status 130). Status 1: the broker could not be reached
  or refused us; 2: bad options.

broker:
  mqtt://host[:port] (1883) or mqtts://host[:port] (TLS, 8883; --ca-file to trust a private CA).
  Credentials come only from GRUWATCH_MQTT_USERNAME and GRUWATCH_MQTT_PASSWORD. If the broker goes
  away the publisher reconnects with exponential backoff (0.5 s up to 30 s) and carries on; QoS 1
  messages in flight are sent again (at-least-once: the agent drops duplicates by seq), and windows
  that fell due during the outage follow at once, as a buffering gateway would send them.

fault injection (for testing the agent; rates are probabilities, deterministic given --fault-seed):
  --drop/--duplicate/--reorder act on each window's message (at most one of them per window);
  --corrupt mutates payload bytes so the decoder rejects them (bad magic, truncated, trailing junk);
  --nan-burst starts a burst of --nan-burst-length windows holding NaN samples (sent as float32 / the
  JSON NaN literal, which the agent rejects); --clock-skew is the fraction of sensors whose clock is
  off by up to ±--clock-skew-max seconds; --silent is the fraction of sensors that stop publishing for
  good part-way through. The summary lists exactly what was injected.

examples:
  gruwatch simulate fleet --broker mqtt://127.0.0.1:1883 --machines 8 --speedup 60 --seed 1
  gruwatch simulate fleet --machines 2 --speedup max --windows 500 --drop 0.05 --nan-burst 0.01
"""


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare `simulate fleet`'s options on `parser` (cheap: no paho, numpy or physics imported)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if not parser.description:
        parser.description = (
            "Publish a simulated fleet of bearings over MQTT, one vibration window per message on "
            "{prefix}/{machine}/{sensor}/vibration, paced by simulated time, with optional fault injection."
        )
    parser.epilog = _EPILOG
    # The same fleet options as `simulate dataset` (--machines, --sensors, --seed, --preset, --horizon,
    # --fs, --window, --interval, ...): the same options and seed publish the same samples.
    add_fleet_model_arguments(parser)
    parser.add_argument(
        "--broker", default="mqtt://127.0.0.1:1883", metavar="URL", help="broker URL (default: %(default)s)"
    )
    parser.add_argument(
        "--speedup",
        type=speedup,
        default=60.0,
        metavar="X",
        help="simulated seconds per wall second, or 'max' for as fast as possible (default: %(default)s)",
    )
    parser.add_argument(
        "--prefix", default="gruwatch", metavar="P", help="topic prefix (default: %(default)s)"
    )
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help=f"stop after this much WALL-clock time ({DURATION_HELP})",
    )
    parser.add_argument(
        "--windows",
        type=positive_int,
        default=None,
        metavar="N",
        help="publish at most N windows per sensor, then stop",
    )
    parser.add_argument(
        "--qos",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="MQTT QoS for vibration messages (default: %(default)s)",
    )
    parser.add_argument(
        "--encoding",
        choices=("binary", "json"),
        default="binary",
        help="wire encoding (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "int16"),
        default="float32",
        help="sample type of binary windows (default: %(default)s)",
    )
    parser.add_argument(
        "--start-time",
        type=parse_start,
        default=None,
        metavar="ISO",
        help="sensor clock at simulated time 0 (default: now)",
    )
    parser.add_argument(
        "--max-inflight",
        type=positive_int,
        default=256,
        metavar="N",
        help="QoS 1/2 messages awaiting the broker's ack at once: throughput is at most N / round-trip "
        "time, and a broker that leaves Nagle on (Mosquitto's default; set_tcp_nodelay true turns it "
        "off) holds acks back, which a small window turns into stalls (default: %(default)s; "
        "benchmarks/bench_publish.py)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=parse_duration,
        default=10.0,
        metavar="DURATION",
        help="give up if the broker does not accept the first connection in time (default: %(default)s)",
    )
    parser.add_argument(
        "--ca-file", default=None, metavar="PEM", help="CA certificate(s) to trust for mqtts://"
    )
    parser.add_argument(
        "--client-id", default=None, metavar="ID", help="MQTT client id (default: a unique one)"
    )
    add_progress_option(parser)
    parser.add_argument(
        "--summary-json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the final summary as JSON here",
    )
    parser.add_argument(
        "--events-out",
        type=Path,
        default=None,
        metavar="CSV",
        help="after the run, write the fleet's maintenance events (failures; inspection_ok for the "
        "others) as a plant would record them, for `gruwatch retrain --events`",
    )
    faults = parser.add_argument_group("fault injection (rates are probabilities; see below)")
    faults.add_argument("--drop", type=rate, default=0.0, metavar="RATE", help="drop a window's message")
    faults.add_argument("--duplicate", type=rate, default=0.0, metavar="RATE", help="publish a window twice")
    faults.add_argument(
        "--reorder", type=rate, default=0.0, metavar="RATE", help="publish a window after the next one"
    )
    faults.add_argument(
        "--corrupt", type=rate, default=0.0, metavar="RATE", help="mutate payload bytes so decoding fails"
    )
    faults.add_argument(
        "--nan-burst", type=rate, default=0.0, metavar="RATE", help="start a burst of NaN windows"
    )
    faults.add_argument(
        "--nan-burst-length",
        type=positive_int,
        default=3,
        metavar="N",
        help="windows per NaN burst (default: %(default)s)",
    )
    faults.add_argument(
        "--clock-skew",
        type=rate,
        default=0.0,
        metavar="RATE",
        help="fraction of sensors with a skewed clock",
    )
    faults.add_argument(
        "--clock-skew-max",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help="largest clock skew (default: %(default)s)",
    )
    faults.add_argument(
        "--silent",
        type=rate,
        default=0.0,
        metavar="RATE",
        help="fraction of sensors that go silent part-way",
    )
    faults.add_argument(
        "--fault-seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of the fault streams (default: --seed)",
    )


@dataclass
class FleetOptions:
    """Everything a fleet run needs (what the command line holds, as plain values)."""

    broker: str = "mqtt://127.0.0.1:1883"
    machines: int = 4
    sensors: int = 1
    seed: int = 0
    speedup: float = 60.0  # math.inf = as fast as possible
    prefix: str = "gruwatch"
    duration_s: float | None = None  # wall-clock seconds
    windows: int | None = None  # per sensor
    # Passed to simulator.fleet_model.build_fleet as keyword arguments (fs, window, interval_s, horizon_s,
    # healthy_fraction, preset, faults, speed_variation); missing keys take build_fleet's defaults.
    model: dict[str, Any] = field(default_factory=dict)
    qos: int = 1
    encoding: Literal["binary", "json"] = "binary"
    dtype: Literal["float32", "int16"] = "float32"
    start_ns: int | None = None
    max_inflight: int = 256
    ca_file: str | None = None
    client_id: str | None = None
    faults: FaultConfig | None = None
    fault_seed: int | None = None
    connect_timeout_s: float = 10.0
    flush_timeout_s: float = 10.0


def publish_fleet(
    options: FleetOptions,
    *,
    stop: threading.Event | None = None,
    progress: TextIO | None = None,
    fleet: Sequence[Any] | None = None,
) -> FleetReport:
    """Run the fleet until every sensor is done, `duration_s` passes, or `stop` is set.

    `fleet` replaces `build_fleet(options.machines, options.seed, ...)` with prebuilt runs (anything with
    SensorRun's machine, sensor, fs, n_windows, adc_scale, t(k), rpm_at(k) and window(k)); the publish
    benchmark passes runs whose windows are cached. Raises PublishError when the broker cannot be
    reached at the start; later losses are retried.
    """
    import numpy as np

    from edge_agent.protocol import Window, encode_binary, encode_json, vibration_topic
    from simulator.faults import FaultConfig, FaultInjector, encode_with_nan
    from simulator.fleet_model import build_fleet
    from simulator.publisher import Publisher, parse_broker_url

    stop = stop if stop is not None else threading.Event()
    fault_config = options.faults or FaultConfig()
    address = parse_broker_url(options.broker)  # fail on a bad URL before building the fleet

    if fleet is None:
        fleet = build_fleet(options.machines, options.seed, sensors=options.sensors, **options.model)
    planned = [
        run.n_windows if options.windows is None else min(run.n_windows, options.windows) for run in fleet
    ]
    topics = [vibration_topic(options.prefix, run.machine, run.sensor) for run in fleet]
    fault_seed = options.seed if options.fault_seed is None else options.fault_seed
    injector = FaultInjector(fault_config, fault_seed, planned)
    offered = [0] * len(fleet)

    username, password = Publisher.credentials_from_env()
    publisher = Publisher.connect(
        address,
        timeout_s=options.connect_timeout_s,
        qos=options.qos,
        max_inflight=options.max_inflight,
        client_id=options.client_id,
        username=username,
        password=password,
        ca_file=options.ca_file,
    )

    start_ns = options.start_ns if options.start_ns is not None else time.time_ns()
    encoding, dtype = options.encoding, options.dtype
    heap: list[tuple[float, int, int]] = [(run.t(0), i, 0) for i, run in enumerate(fleet) if planned[i] > 0]
    heapq.heapify(heap)
    t0 = heap[0][0] if heap else 0.0
    sim_time = t0
    unsent = 0
    stopped_by = "complete"
    line = ProgressLine(progress)
    wall0 = time.monotonic()
    deadline = wall0 + options.duration_s if options.duration_s is not None else math.inf

    def refresh() -> None:  # while the publisher waits for the broker
        line.update(
            injector.counters.windows,
            time.monotonic() - wall0,
            sim_time,
            publisher.stats.reconnects,
            publisher.connected,
        )

    def send(i: int, payloads: list[bytes]) -> None:
        nonlocal unsent
        for n, payload in enumerate(payloads):
            if not publisher.publish(topics[i], payload, stop=stop, on_wait=refresh):
                unsent += len(payloads) - n
                return

    try:
        while heap:
            now = time.monotonic()
            if stop.is_set():
                stopped_by = "signal"
                break
            if now >= deadline:
                stopped_by = "duration"
                break
            t, i, k = heap[0]
            if math.isfinite(options.speedup):
                due = wall0 + (t - t0) / options.speedup
                if due > now:
                    line.update(
                        injector.counters.windows,
                        now - wall0,
                        sim_time,
                        publisher.stats.reconnects,
                        publisher.connected,
                    )
                    stop.wait(min(due - now, deadline - now, PROGRESS_INTERVAL_S))
                    continue
            heapq.heappop(heap)
            run = fleet[i]
            sim_time = t
            if injector.is_silent(i, k):
                send(i, injector.finish(i, silent=True))
                continue
            samples, _labels = run.window(k)
            ts_ns = start_ns + round(run.t(k) * 1e9) + injector.skew_ns(i)

            def encode(
                x: np.ndarray, has_nan: bool, *, _k: int = k, _ts: int = ts_ns, _run: Any = run
            ) -> bytes:
                w = Window(seq=_k, ts_ns=_ts, fs=_run.fs, rpm=_run.rpm_at(_k), samples=x)
                if has_nan:
                    return encode_with_nan(w, encoding)
                if encoding == "json":
                    return encode_json(w)
                # int16 at the sensor's ADC step is lossless: the physics quantises to it.
                return encode_binary(w, dtype=dtype, scale=_run.adc_scale if dtype == "int16" else None)

            offered[i] += 1
            send(i, injector.messages(i, k, samples, encode))
            if k + 1 < planned[i]:
                heapq.heappush(heap, (run.t(k + 1), i, k + 1))
            else:
                send(i, injector.finish(i))
            line.update(
                injector.counters.windows,
                time.monotonic() - wall0,
                sim_time,
                publisher.stats.reconnects,
                publisher.connected,
            )
        for _, i, _ in heap:  # stopped early: release windows still held back for reordering
            send(i, injector.finish(i))
    finally:
        flushed = publisher.close(flush_timeout_s=options.flush_timeout_s)
        elapsed = time.monotonic() - wall0
        line.update(
            injector.counters.windows,
            elapsed,
            sim_time,
            publisher.stats.reconnects,
            True,
            force=progress is not None,
        )
        line.close()

    plans: list[SensorFaultPlan] = [injector.plan(i) for i in range(len(fleet))]
    sensors = [
        SensorReport(run.machine, run.sensor, topics[i], offered[i], plans[i].skew_ns, plans[i].silent_after)
        for i, run in enumerate(fleet)
    ]
    return FleetReport(
        stopped_by=stopped_by,
        elapsed_s=elapsed,
        sim_time_s=sim_time,
        start_ns=start_ns,
        faults=injector.counters,
        publish=publisher.stats,
        unsent=unsent,
        flushed=flushed,
        sensors=sensors,
    )


def options_from_args(args: argparse.Namespace) -> FleetOptions:
    """Turn parsed `simulate fleet` arguments into FleetOptions (raises ValueError on bad fault rates)."""
    from simulator.faults import FaultConfig

    faults = FaultConfig(
        drop=args.drop,
        duplicate=args.duplicate,
        reorder=args.reorder,
        corrupt=args.corrupt,
        nan_burst=args.nan_burst,
        nan_burst_length=args.nan_burst_length,
        clock_skew=args.clock_skew,
        clock_skew_max_s=args.clock_skew_max,
        silent=args.silent,
    )
    return FleetOptions(
        broker=args.broker,
        machines=args.machines,
        sensors=args.sensors,
        seed=args.seed,
        speedup=args.speedup,
        prefix=args.prefix,
        duration_s=args.duration,
        windows=args.windows,
        model={
            "fs": args.fs,
            "window": args.window,
            "interval_s": args.interval,
            "horizon_s": args.horizon,
            "healthy_fraction": args.healthy_fraction,
            "preset": args.preset,
            "speed_variation": args.speed_variation,
            **({"faults": args.faults} if args.faults else {}),
        },
        qos=args.qos,
        encoding=args.encoding,
        dtype=args.dtype,
        start_ns=args.start_time,
        max_inflight=args.max_inflight,
        ca_file=args.ca_file,
        client_id=args.client_id,
        faults=faults,
        fault_seed=args.fault_seed,
        connect_timeout_s=args.connect_timeout,
    )


def run_fleet(args: argparse.Namespace) -> int:
    """The `simulate fleet` command: run, print the summary, return the exit status (see --help)."""
    from edge_agent.errors import ProtocolError
    from simulator.publisher import PublishError, parse_broker_url

    try:
        options = options_from_args(args)
        parse_broker_url(options.broker)
    except (ValueError, PublishError) as exc:
        sys.stderr.write(f"gruwatch simulate fleet: {exc}\n")
        return 2
    stop = threading.Event()
    progress = sys.stderr if progress_enabled(args) else None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # second Ctrl-C: give up on the clean stop
            raise KeyboardInterrupt
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        report = publish_fleet(options, stop=stop, progress=progress)
    except KeyboardInterrupt:  # the second Ctrl-C
        sys.stderr.write("\ngruwatch simulate fleet: aborted; messages still in flight may be lost\n")
        return 130
    except PublishError as exc:
        sys.stderr.write(f"gruwatch simulate fleet: {exc}\n")
        return EXIT_FAILED
    except ProtocolError as exc:
        sys.stderr.write(f"gruwatch simulate fleet: {exc.detail or exc}; check --prefix\n")
        return 2
    except ValueError as exc:  # fleet options build_fleet refuses, e.g. a window longer than --interval
        sys.stderr.write(f"gruwatch simulate fleet: {exc}\n")
        return 2
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
    sys.stdout.write(report.summary() + "\n")
    sys.stdout.flush()
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if args.events_out is not None:
        from simulator.events_out import write_fleet_events
        from simulator.fleet_model import build_fleet

        fleet = build_fleet(options.machines, options.seed, sensors=options.sensors, **options.model)
        failures = write_fleet_events(
            args.events_out, fleet, [s.windows for s in report.sensors], report.start_ns
        )
        sys.stdout.write(f"  maintenance events ({failures} failures) written to {args.events_out}\n")
    return EXIT_OK
