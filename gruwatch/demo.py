"""`gruwatch demo`: the whole loop on one machine — broker, signed model, edge agent, live fleet, alarms.

Without `--broker` the demo starts an embedded MQTT broker (amqtt, pure Python, in this process) on
a free port, so a machine without Mosquitto and without root runs it; with `--broker URL` it uses
that broker. Then it signs a first model (the small bundle shipped in the package, or one trained
now on a simulated fleet's history with `--train`), starts the edge agent on it, publishes a live
fleet of simulated machines (a few of whose bearings fail) at a high speed-up, prints each alarm as
the agent raises it and ends with a summary judged against the simulator's ground truth
(gruwatch/demo_watch.py). Ctrl-C stops everything cleanly at any moment and still prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from edge_agent.errors import GruwatchError
from gruwatch.demo_watch import Summary, Truth, Watcher, summarize
from gruwatch.options import DURATION_HELP, Parser, parse_duration

DEFAULT_MACHINES = 20
DEFAULT_SEED = 4  # 20 machines, 4 of whose bearings fail within the 3 simulated hours
DEFAULT_DURATION_S = 90.0
HEALTHY_FRACTION = 0.8
DRAIN_S = 20.0  # after the fleet ends: how long to wait for the agent to score what was published

EPILOG = """\
what you see:
  the broker URL (and the dashboard's, once the dashboard exists), one line per alarm as the agent
  raises it (with how far into the bearing's life it came and how long before the failure), a
  progress line, and at the end:
    failing bearings N · alarmed before failure M · median lead X % of life · false alarms K ·
    windows published P · scored S
  P counts windows the broker acknowledged, S distinct windows the agent published a score for.

examples:
  gruwatch demo                                 # embedded broker, shipped model, ~90 s
  gruwatch demo --duration 30s --json out.json  # shorter; the summary also as JSON
  gruwatch demo --broker mqtt://127.0.0.1:1883  # a running Mosquitto instead
  gruwatch demo --train                         # train the first model now (needs the train extra)
  gruwatch demo --workdir demo/ && gruwatch agent export --store demo/agent.sqlite --out collected/
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="gruwatch demo",
        description=(
            "The whole loop on one machine: an MQTT broker (embedded unless --broker), a signed model, "
            "the edge agent, a live simulated fleet whose failing bearings the agent should alarm on "
            "before they fail, and a summary of how it did."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--broker", default=None, metavar="URL", help="use this broker (default: embedded)")
    p.add_argument(
        "--duration",
        type=parse_duration,
        default=DEFAULT_DURATION_S,
        metavar="DURATION",
        help=f"wall-clock time of the live fleet (default: %(default)s s; {DURATION_HELP})",
    )
    p.add_argument(
        "--speedup",
        default="auto",
        metavar="X",
        help="simulated seconds per wall second (default auto: the fleet's 3 hours fit in --duration)",
    )
    p.add_argument("--machines", type=int, default=DEFAULT_MACHINES, help="machines (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="fleet seed (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the summary as JSON")
    p.add_argument(
        "--train", action="store_true", help="train the first model now instead of the shipped one"
    )
    p.add_argument(
        "--workdir", type=Path, default=None, metavar="DIR", help="keep keys, bundle and store here"
    )
    p.add_argument(
        "--dashboard-port", type=int, default=0, metavar="P", help="dashboard port (0: a free one)"
    )
    p.add_argument(
        "--build-bundle",
        type=Path,
        default=None,
        metavar="DIR",
        help="(maintainers) rebuild the shipped demo bundle into DIR and exit; needs the train extra",
    )
    return p


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Agent and broker log errors only while the demo runs; restored afterwards."""
    import structlog

    saved = structlog.get_config()
    root = logging.getLogger()
    level = root.level
    try:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        root.setLevel(logging.ERROR)
        yield
    finally:
        structlog.configure(**saved)
        root.setLevel(level)


class _Interrupts:
    """First Ctrl-C: stop the live fleet and finish cleanly (during startup: abort it); second: abort."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.live = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.live and not self.stop.is_set():
            self.stop.set()
            return
        self.stop.set()
        raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)


class Demo:
    """One demo run; `run()` fills `summary` (also when interrupted)."""

    def __init__(self, args: argparse.Namespace, interrupts: _Interrupts) -> None:
        self.args = args
        self.irq = interrupts
        self.prefix = f"demo-{uuid.uuid4().hex[:8]}"
        self.truth: list[Truth] = []
        self.watcher: Watcher | None = None
        self.report: Any = None
        self.agent: Any = None
        self.started = time.monotonic()
        self.stopped_by = "complete"
        self.fleet: list[Any] = []
        self.dashboard: Any = None  # dashboards.app.DashboardHandle once started

    def say(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def run(self, stack: contextlib.ExitStack) -> None:
        from edge_agent.broker_url import parse_broker_url
        from gruwatch.demo_model import FLEET, prepare_model
        from simulator.fleet_model import build_fleet

        args = self.args
        if args.broker:
            url, protocol = args.broker, "5"
        else:
            from gruwatch.embedded_broker import embedded_broker

            url, protocol = stack.enter_context(embedded_broker()), "3.1.1"
        address = parse_broker_url(url)
        self.say(
            f"gruwatch demo: broker {url}" + (" (embedded amqtt, MQTT 3.1.1)" if not args.broker else "")
        )

        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gruwatch-demo-")))
        work.mkdir(parents=True, exist_ok=True)
        if args.train:
            self.say("  training the first model on a simulated fleet's history (about a minute) ...")
        model = prepare_model(work, train_now=args.train)
        self.fleet = build_fleet(args.machines, args.seed, healthy_fraction=HEALTHY_FRACTION, **FLEET)
        self.truth = [Truth.of(r) for r in self.fleet]
        failing = sum(r.failure_s is not None for r in self.fleet)

        self.watcher = Watcher(address.host, address.port, self.prefix, self.truth, protocol="3.1.1")
        stack.callback(self.watcher.close)
        if not self.watcher.wait_ready(10):
            raise GruwatchError(f"could not subscribe on {url}")
        self.agent = self._start_agent(stack, url, protocol, work, model)
        self.say(
            f"  agent {self.agent.settings.agent_id} serving model {self.agent.model_version} "
            f"({model.source}, signed), topic prefix {self.prefix}"
        )
        self._start_dashboard(stack, url)

        speedup = self._speedup()
        self.say(
            f"  fleet: {args.machines} machines, {failing} of them with a bearing that fails; one window "
            f"every {FLEET['interval_s']:g} s simulated, {speedup:g}× real time; Ctrl-C stops"
        )
        self._run_fleet(url, speedup)

    def _start_agent(
        self, stack: contextlib.ExitStack, url: str, protocol: str, work: Path, model: Any
    ) -> Any:
        from edge_agent.daemon import Agent
        from edge_agent.settings import load_settings

        settings = load_settings(
            None,
            broker=url,
            prefix=self.prefix,
            agent_id=f"demo-agent-{self.prefix[-8:]}",
            model=model.bundle,
            trusted_keys=[model.public_key],
            store=work / "agent.sqlite",
            metrics_port=0,
            mqtt_protocol=protocol,
            batch_max_wait_ms=20,
        )
        agent = Agent.from_settings(settings)
        thread = threading.Thread(target=agent.run, name="demo-agent", daemon=True)
        thread.start()

        def stop_agent() -> None:
            agent.stop()
            thread.join(15)

        stack.callback(stop_agent)
        if not agent.link.wait_connected(15):
            raise GruwatchError(f"the agent could not connect to {url}")
        return agent

    def _start_dashboard(self, stack: contextlib.ExitStack, url: str) -> None:
        """The live fleet view on the same broker and prefix. It learns the warning and alarm lines
        from the agent's retained status (the served model's thresholds), so none are passed here."""
        try:
            from dashboards.app import serve
        except ImportError as exc:  # an install without the dashboard extra: the demo runs on without it
            self.say(
                f"  dashboard: not started ({exc}; pip install 'gruwatch[demo]'); watch the alarms below"
            )
            return
        try:
            handle = serve(broker=url, prefix=self.prefix, port=self.args.dashboard_port, host="127.0.0.1")
        except OSError as exc:  # e.g. --dashboard-port already taken: the demo runs on without it
            self.say(f"  dashboard: not started ({exc}); watch the alarms below")
            return
        stack.callback(handle.stop)
        self.dashboard = handle
        self.say(f"  dashboard: {handle.url}")
        if not handle.feed.wait_subscribed(10):  # the fleet starts only once the page can see it all
            self.say("  dashboard: not subscribed to the broker yet; it may miss the first windows")

    def _speedup(self) -> float:
        from gruwatch.demo_model import FLEET

        if self.args.speedup != "auto":
            return float("inf") if self.args.speedup == "max" else float(self.args.speedup)
        horizon = float(FLEET["horizon_s"])
        return max(1.0, float(round(horizon / max(self.args.duration * 0.8, 1.0))))

    def _run_fleet(self, url: str, speedup: float) -> None:
        from simulator.fleet_cli import FleetOptions, publish_fleet

        options = FleetOptions(
            broker=url,
            machines=self.args.machines,
            seed=self.args.seed,
            speedup=speedup,
            prefix=self.prefix,
            duration_s=self.args.duration,
            dtype="int16",  # lossless at the simulated ADC step, half the bytes of float32
            max_inflight=64,
        )
        done: list[Any] = []
        errors: list[BaseException] = []

        def publish() -> None:
            try:
                done.append(publish_fleet(options, stop=self.irq.stop, fleet=self.fleet))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=publish, name="demo-fleet", daemon=True)
        self.irq.live = True
        thread.start()
        tty = sys.stdout.isatty()
        next_line = 0.0
        while thread.is_alive():
            thread.join(0.2)
            if time.monotonic() >= next_line:
                next_line = time.monotonic() + (0.5 if tty else 10.0)
                self._progress(tty)
        if errors:
            raise errors[0]
        self.report = done[0] if done else None
        if self.report is not None and self.report.stopped_by == "signal":
            self.stopped_by = "interrupted"
        elif self.report is not None:
            self.stopped_by = self.report.stopped_by
        self._drain(tty)

    def _published(self) -> dict[tuple[str, str], int]:
        if self.report is None:
            return {}
        return {(s.machine, s.sensor): s.windows for s in self.report.sensors}

    def _drain(self, tty: bool) -> None:
        """Wait until the agent has scored every window the broker acknowledged (or stops making progress)."""
        if self.report is None or self.watcher is None:
            return
        target = self.report.publish.acked
        limit = 3.0 if self.irq.stop.is_set() else DRAIN_S
        last, still = -1, time.monotonic()
        while self.watcher.scored < target:
            now = time.monotonic()
            scored = self.watcher.scored
            if scored != last:
                last, still = scored, now
            if now - still > limit:
                break
            time.sleep(0.1)
        self._progress(tty, final=True)

    def _progress(self, tty: bool, *, final: bool = False) -> None:
        if self.watcher is None:
            return
        scored = self.watcher.scored
        line = f"  {time.monotonic() - self.started:5.0f} s · scored {scored} windows · alarms {sum(1 for a in self.watcher.alarms if a['state'] == 'alarm')}"
        if tty:
            sys.stdout.write(f"\r\x1b[K{line}" + ("\n" if final else ""))
            sys.stdout.flush()
        elif final or scored:
            self.say(line)

    def summary(self) -> Summary:
        published = self._published()
        out = summarize(self.watcher, self.truth, published)
        if self.report is not None:
            out.windows_published = int(self.report.publish.acked)
        out.extra = {
            "stopped_by": self.stopped_by,
            "wall_s": round(time.monotonic() - self.started, 1),
            "machines": self.args.machines,
            "seed": self.args.seed,
            "prefix": self.prefix,
            "agent_windows_scored": None if self.agent is None else int(self.agent.windows_scored),
            "models": sorted(self.watcher.models) if self.watcher else [],
            "alarms": list(self.watcher.alarms) if self.watcher else [],
        }
        return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.build_bundle is not None:
        from gruwatch.demo_model import build_bundle

        path = build_bundle(args.build_bundle, progress=sys.stderr.isatty())
        sys.stdout.write(f"gruwatch demo: wrote the demo bundle to {path}\n")
        return 0
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        sys.stderr.write(f"gruwatch demo: --workdir {args.workdir} is not empty; give a fresh folder\n")
        return 2
    rc = 0
    with _Interrupts() as irq, _quiet_logs():
        demo = Demo(args, irq)
        try:
            with contextlib.ExitStack() as stack:
                demo.run(stack)
        except KeyboardInterrupt:
            demo.stopped_by = "interrupted"
            rc = 130
        except GruwatchError as exc:
            sys.stderr.write(f"gruwatch demo: {exc}\n")
            demo.stopped_by = "error"
            rc = 1
        summary = demo.summary()
    sys.stdout.write(
        f"gruwatch demo ({summary.extra['stopped_by']}, {summary.extra['wall_s']:g} s): {summary.line()}\n"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
