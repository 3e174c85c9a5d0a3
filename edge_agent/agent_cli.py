"""`gruwatch agent ...`: run the edge daemon, export what it collected, deploy a model bundle to it,
reset a sensor's healthy baseline after maintenance.

gruwatch agent run --config agent.toml
gruwatch agent export --store /var/lib/gruwatch/agent.db --out collected/
gruwatch agent deploy --bundle bundle/ --broker mqtt://broker:1883 --agent gw01
gruwatch agent reset-baseline --machine press7 --sensor s0 --broker mqtt://broker:1883 --agent gw01 ...
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.daemon import Agent

MAIN_HELP = """\
The gruwatch edge agent: scores live vibration windows from MQTT with a GRU model bundle.

  gruwatch agent run --config agent.toml        serve (SIGTERM or Ctrl-C stops it within 5 s)
  gruwatch agent export --store agent.db --out DIR
                                                collected windows out of the store, for retraining
  gruwatch agent deploy --bundle DIR --broker mqtt://host:1883 --agent ID
                                                ship a signed bundle to a running agent over MQTT
  gruwatch agent reset-baseline --machine M --sensor S --agent ID --broker URL --signing-key KEY
                                                a bearing was replaced: the sensor relearns its baseline

Settings come from the TOML file (examples/agent.toml documents every key) and GRUWATCH_* environment
variables, which win over the file.
"""

RUN_HELP = """\
Run the edge agent until SIGTERM / SIGINT.

It subscribes to {prefix}/+/+/vibration, scores each window with the model bundle, publishes
{prefix}/{machine}/{sensor}/health per window and a retained .../alert on every alarm-state change,
keeps features, scores and sampled raw windows in its SQLite store, and accepts new bundles on
{prefix}/_agents/{agent_id}/model. Logs are JSON lines when stderr is not a terminal.

Example:
  GRUWATCH_MQTT_PASSWORD=... gruwatch agent run --config /etc/gruwatch/agent.toml
"""

EXPORT_HELP = """\
Write the windows the agent collected (features, scores, states and sampled raw samples) as one
.npz per sensor plus manifest.json, the input of `gruwatch retrain --collected DIR`. Safe while the
agent runs (SQLite WAL); stop the agent first for a consistent snapshot.
"""

DEPLOY_HELP = """\
Publish a signed model bundle to a running agent and print its answer (JSON).

The agent verifies the signature against its trusted keys, the feature spec and the test vectors;
it swaps models between two batches or keeps serving the old one and says why. Exit status: 0
accepted, 1 refused, 2 no answer or broker unreachable. The broker password comes from
GRUWATCH_MQTT_PASSWORD (user: GRUWATCH_MQTT_USERNAME), never from the command line.
"""

RESET_HELP = """\
Tell a running agent that a sensor's bearing was replaced: it forgets the sensor's healthy baseline
and hidden state, and learns the baseline again from the sensor's next windows (docs/features.md,
"Per-sensor baseline"). The command is signed with the private key whose .pub the agent trusts, as
a model bundle is; the agent refuses a command that is unsigned, signed by another key, older than
10 minutes or already executed. Prints the agent's answer (JSON). Exit status: 0 done, 1 refused,
2 no answer or broker unreachable. The broker password comes from GRUWATCH_MQTT_PASSWORD (user:
GRUWATCH_MQTT_USERNAME).
"""


def _mqtt_arguments(p: argparse.ArgumentParser) -> None:
    """How to reach an agent: broker, agent id, prefix, answer timeout, TLS files."""
    from gruwatch.options import DURATION_HELP, parse_duration

    p.add_argument("--broker", required=True, help="mqtt://host[:port] or mqtts://host[:port]")
    p.add_argument("--agent", required=True, help="the agent's agent_id")
    p.add_argument("--prefix", default="gruwatch", help="topic prefix (default gruwatch)")
    p.add_argument(
        "--timeout",
        type=parse_duration,
        default=60.0,
        help=f"how long to wait for the answer (default 60 s; {DURATION_HELP})",
    )
    p.add_argument("--ca-file", help="CA bundle for mqtts://")
    p.add_argument("--cert-file", help="client certificate (PEM) for brokers that require one (mqtts://)")
    p.add_argument("--key-file", help="the client certificate's private key (PEM)")


def _parser() -> argparse.ArgumentParser:
    from gruwatch.options import Parser

    p = Parser(
        prog="gruwatch agent", description=MAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", metavar="{run,export,deploy,reset-baseline}")
    run = sub.add_parser(
        "run",
        help="run the daemon",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", type=Path, help="TOML settings file (see examples/agent.toml)")
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="least severe log events written to stderr (default info)",
    )
    run.add_argument(
        "--log-format", choices=["auto", "json", "console"], default="auto", help="auto: JSON unless a TTY"
    )
    exp = sub.add_parser(
        "export",
        help="export collected data",
        description=EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument("--store", type=Path, required=True, help="the agent's store (settings key `store`)")
    exp.add_argument("--out", type=Path, required=True, help="output folder (created)")
    dep = sub.add_parser(
        "deploy",
        help="send a bundle to an agent",
        description=DEPLOY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dep.add_argument("--bundle", type=Path, required=True, help="signed bundle folder")
    _mqtt_arguments(dep)
    dep.add_argument(
        "--force",
        action="store_true",
        help="accept it even if it is older than the bundle the agent serves (a deliberate rollback)",
    )
    reset = sub.add_parser(
        "reset-baseline",
        help="a bearing was replaced: the sensor relearns its healthy baseline",
        description=RESET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reset.add_argument("--machine", required=True, help="the machine id (as in its MQTT topics)")
    reset.add_argument("--sensor", required=True, help="the sensor id on that machine")
    reset.add_argument(
        "--signing-key", type=Path, required=True, help="private key (signing.key of `gruwatch keys new`)"
    )
    _mqtt_arguments(reset)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edge_agent.errors import GruwatchError

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    commands = {"run": _run, "export": _export, "deploy": _deploy, "reset-baseline": _reset_baseline}
    if args.command not in commands:
        _parser().print_help()
        return 2
    try:
        return commands[args.command](args)
    except GruwatchError as exc:
        sys.stderr.write(f"gruwatch agent {args.command}: {exc}\n{_NEXT_STEP.get(exc.reason, '')}")
        return 2


#: What to do next, by error reason (printed after the error).
_NEXT_STEP = {
    "disk_full": "Free space on the store's disk or lower store_budget_mb.\n",
    "cannot_open": "Check the store path and its permissions (settings key `store`).\n",
}


def _import_structlog_without_rich() -> None:
    """Import structlog with `rich` hidden: structlog imports rich (about 80 modules, 0.2-0.4 s of a
    start on a loaded gateway) for its own console tracebacks whenever rich is installed (the demo extra
    brings it). The agent never uses them: its renderers get exceptions already formatted
    (`configure_logging`), so its log lines are the same. Other code may import rich afterwards."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


def _run(args: argparse.Namespace) -> int:
    # Start-up (imports, settings, the verified bundle) runs with the cyclic garbage collector off: it
    # scanned the ~90,000 objects of ~500 modules being imported over and over, about a fifth of the
    # start's CPU. What start-up made is then frozen (never scanned again; the ~700 unreachable objects
    # it leaves stay, once) and the collector serves the agent's run as before.
    gc.disable()
    try:
        agent = _start(args)
    finally:
        gc.freeze()
        gc.enable()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return agent.run()


def _start(args: argparse.Namespace) -> Agent:
    """Logging, settings and the agent with its verified bundle (`Agent.from_settings`)."""
    _import_structlog_without_rich()
    from edge_agent.daemon import Agent
    from edge_agent.errors import BundleError
    from edge_agent.logs import configure_logging
    from edge_agent.settings import load_settings

    fmt = {"auto": None, "json": True, "console": False}[args.log_format]
    configure_logging(args.log_level, json=fmt)
    settings = load_settings(args.config)
    try:
        return Agent.from_settings(settings)
    except BundleError as exc:
        raise BundleError(
            exc.reason,
            f"model bundle {settings.model} refused: {exc.detail}\n"
            "Check it with `gruwatch bundle verify BUNDLE --trusted-keys KEY.pub`.",
        ) from exc


def _export(args: argparse.Namespace) -> int:
    from edge_agent.store import Store

    if not args.store.is_file():
        sys.stderr.write(f"gruwatch agent export: no store at {args.store}; pass the agent's `store` path\n")
        return 2
    with Store.open(args.store, budget_bytes=1 << 62) as store:
        summary = store.export_runs(args.out)
    sys.stdout.write(
        f"exported {summary.windows} windows ({summary.raw_windows} with raw samples) from "
        f"{len(summary.files)} sensor file(s) to {summary.out_dir}\n"
    )
    return 0


def _reach(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments that reach an agent (`_mqtt_arguments`); the broker login from the environment."""
    import os

    return {
        "broker": args.broker,
        "agent": args.agent,
        "prefix": args.prefix,
        "timeout_s": args.timeout,
        "username": os.environ.get("GRUWATCH_MQTT_USERNAME"),
        "password": os.environ.get("GRUWATCH_MQTT_PASSWORD"),
        "ca_file": args.ca_file,
        "cert_file": args.cert_file,
        "key_file": args.key_file,
    }


def _deploy(args: argparse.Namespace) -> int:
    from edge_agent.errors import BundleError
    from edge_agent.model_swap import deploy_bundle

    try:
        answer = deploy_bundle(args.bundle, force=args.force, **_reach(args))
    except BundleError as exc:
        raise BundleError(exc.reason, f"cannot pack {args.bundle}: {exc.detail}") from exc
    sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    return 0 if answer.get("accepted") else 1


def _reset_baseline(args: argparse.Namespace) -> int:
    from edge_agent.baseline_reset import send_reset
    from gruwatch.options import check_signing_key

    check_signing_key(args.signing_key)
    answer = send_reset(
        machine=args.machine, sensor=args.sensor, signing_key=args.signing_key, **_reach(args)
    )
    sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    return 0 if answer.get("accepted") else 1
