"""`gruwatch retrain`: retrain from what the gateways collected, champion vs challenger, optionally deploy.

The work is in trainer/retrain.py; this module parses options, prints the comparison table and, with
`--deploy`, ships the winning bundle to the named agents over MQTT with the same code as
`gruwatch agent deploy` (`edge_agent.model_swap.deploy_bundle`) and waits for each one's answer.
Exit status: 0 done (whichever model won; all deployments accepted), 1 refused (bad data, a failed
export, an agent that refused or did not answer), 2 bad options.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.errors import GruwatchError
from gruwatch.options import (
    DURATION_HELP,
    Parser,
    add_progress_option,
    hidden_alias,
    parse_duration,
    progress_enabled,
)

DESCRIPTION = """\
Retrain the model your agents run from the data they collected, and promote it only if it is better.

  1. --collected: folders written by `gruwatch agent export` (one or many agents). The agent stores
     the features and score of EVERY window it scored, so the challenger trains at the agent's own
     cadence (one GRU step per window); raw samples are not needed.
  2. --events: the plant's maintenance log, CSV `machine,sensor,ts,event` with event one of
     failure, replacement, repair, inspection, inspection_ok. A window is "degraded" when a failure of
     its bearing follows within --horizon (default: the current model's training horizon).
  3. Machines are split: --holdout-fraction of them are held out; the challenger (the current model
     fine-tuned, or a fresh one with --from-scratch) trains on the others.
  4. Champion and challenger are scored step by step on the same held-out windows, as the agent
     scores, with `gruwatch evaluate`'s metrics. The challenger wins only if --metric improves by
     more than --min-improvement and it raises no more false alarms than the champion.
  5. OUT/comparison.json records both sets of metrics and "winner"; OUT/bundle (signed) exists only
     when the challenger won. --deploy ships the winner to the agents and waits for their answer.
"""

EPILOG = """\
examples:
  gruwatch agent export --store /var/lib/gruwatch-agent/agent.sqlite --out collected/gw1
  gruwatch retrain --collected collected/gw1 collected/gw2 --events maintenance.csv \\
      --current bundles/v1 --out retrain/2026-12 --signing-key keys/signing.key
  gruwatch retrain ... --deploy --broker mqtt://broker:1883 --agent gw1 --agent gw2
"""


def build_parser() -> argparse.ArgumentParser:
    from trainer.retrain import METRICS

    p = Parser(
        prog="gruwatch retrain",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("data and models")
    io.add_argument("--collected", nargs="+", required=True, metavar="DIR", help="agent export folders")
    io.add_argument("--events", metavar="CSV", help="maintenance events: machine,sensor,ts,event")
    io.add_argument("--current", required=True, metavar="BUNDLE", help="the model the agents run (champion)")
    io.add_argument(
        "--out", required=True, metavar="DIR", help="fresh folder for comparison.json and the bundle"
    )
    io.add_argument(
        "--signing-key", required=True, metavar="KEY", help="Ed25519 private key to sign the challenger"
    )
    io.add_argument(
        "--trusted-keys", nargs="*", default=[], metavar="PUB", help="verify the current bundle's signature"
    )
    t = p.add_argument_group("training")
    t.add_argument("--from-scratch", action="store_true", help="train a fresh model instead of fine-tuning")
    t.add_argument(
        "--horizon",
        type=parse_duration,
        metavar="DURATION",
        help=f"degraded := a failure follows within this time ({DURATION_HELP}; default: the current "
        "model's training horizon)",
    )
    hidden_alias(t, "--horizon-s", dest="horizon", type=parse_duration)
    t.add_argument("--epochs", type=int, help="epochs (default: 15 fine-tuning, 30 from scratch)")
    t.add_argument(
        "--lr", type=float, help="learning rate (default: 1e-3 fine-tuning, the card's from scratch)"
    )
    t.add_argument("--seed", type=int, default=0, help="seed for the splits and training (default 0)")
    c = p.add_argument_group("comparison")
    c.add_argument(
        "--metric", choices=sorted(METRICS), default="auroc", help="what must improve (default auroc)"
    )
    c.add_argument(
        "--min-improvement", type=float, default=0.0, help="margin the challenger must beat (default 0)"
    )
    c.add_argument(
        "--allow-more-false-alarms",
        action="store_true",
        help="let a challenger win although it raised more false alarms on the held-out runs",
    )
    c.add_argument(
        "--holdout-fraction", type=float, default=0.3, help="share of machines held out (default 0.3)"
    )
    d = p.add_argument_group("deployment")
    d.add_argument("--deploy", action="store_true", help="ship the winner to --agent over MQTT")
    d.add_argument("--broker", metavar="URL", help="mqtt://host:port or mqtts://host:port")
    d.add_argument("--agent", action="append", default=[], metavar="ID", help="agent id (repeat for several)")
    d.add_argument("--prefix", default="gruwatch", help="topic prefix (default gruwatch)")
    d.add_argument(
        "--timeout",
        type=parse_duration,
        default=60.0,
        help=f"how long to wait for each agent's answer (default 60 s; {DURATION_HELP})",
    )
    d.add_argument("--ca-file", metavar="PEM", help="CA for mqtts://")
    add_progress_option(p)
    return p


def deploy(bundle: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ship `bundle` to every --agent and return their answers (raises GruwatchError on the first refusal)."""
    import os

    from edge_agent.model_swap import deploy_bundle

    answers = []
    for agent in args.agent:
        answer = deploy_bundle(
            bundle,
            broker=args.broker,
            agent=agent,
            prefix=args.prefix,
            timeout_s=args.timeout,
            username=os.environ.get("GRUWATCH_MQTT_USERNAME") or None,
            password=os.environ.get("GRUWATCH_MQTT_PASSWORD") or None,
            ca_file=args.ca_file,
        )
        answers.append({"agent": agent, **answer})
        if not answer.get("accepted"):
            raise GruwatchError(
                f"agent {agent} refused {bundle}: {answer.get('reason')} ({answer.get('detail')}); "
                f"it keeps serving {answer.get('serving')}"
            )
        sys.stdout.write(f"deploy: {agent} accepted {answer.get('model')} (states {answer.get('states')})\n")
    return answers


def main(argv: Sequence[str] | None = None) -> int:
    from trainer.retrain import RetrainOptions, retrain

    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.deploy and (not args.broker or not args.agent):
        parser.error("--deploy needs --broker URL and at least one --agent ID")
    opts = RetrainOptions(
        collected=args.collected,
        current=args.current,
        out=args.out,
        signing_key=args.signing_key,
        events=args.events,
        trusted_keys=args.trusted_keys,
        from_scratch=args.from_scratch,
        horizon_s=args.horizon,
        metric=args.metric,
        min_improvement=args.min_improvement,
        allow_more_false_alarms=args.allow_more_false_alarms,
        holdout_fraction=args.holdout_fraction,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        progress=progress_enabled(args),
    )
    try:
        with warnings.catch_warnings():
            # Library warnings (torch, sklearn) are not the user's to act on; our own errors say what to do.
            warnings.simplefilter("ignore")
            outcome = retrain(opts)
    except GruwatchError as exc:
        sys.stderr.write(f"gruwatch retrain: {exc}\n")
        return 1
    c = outcome.comparison
    sys.stdout.write(
        f"gruwatch retrain: held out {c['held_out']['sensors']} sensors of {len(c['held_out']['machines'])} "
        f"machines ({c['held_out']['windows']} windows); trained on {c['training']['windows']} windows\n"
        f"{outcome.table}\n"
        f"winner: {outcome.winner} ({outcome.reason})\n"
        f"wrote {Path(args.out) / 'comparison.json'}"
        + (f" and the signed challenger {outcome.bundle}" if outcome.bundle else "")
        + "\n"
    )
    if args.deploy:
        if outcome.bundle is None:
            sys.stdout.write("deploy: the champion stays; the agents already serve it, nothing shipped\n")
            return 0
        try:
            deploy(outcome.bundle, args)
        except GruwatchError as exc:
            sys.stderr.write(f"gruwatch retrain: deploy: {exc}\n")
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
