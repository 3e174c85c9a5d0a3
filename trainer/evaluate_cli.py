"""`gruwatch evaluate`: score runs step-wise through a bundle as the agent would; metrics.json and report.html.

The entry point is `main(argv) -> int` (0 = written, 1 = bundle or data refused with a message saying
what to do, 2 = bad options). See docs/evaluation.md for the metrics and the metrics.json schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.errors import GruwatchError
from gruwatch.options import (
    DURATION_HELP,
    Parser,
    add_progress_option,
    check_output_dir,
    hidden_alias,
    parse_duration,
    progress_enabled,
)

DESCRIPTION = """\
Evaluate a model bundle in maintenance terms, scoring every run window by window through the
agent's own scorer (edge_agent.scorer.Scorer: the bundle's ONNX step, its feature spec and its
alarm state machine), from a fresh state at each run's first window.

Writes OUT/metrics.json (schema in docs/evaluation.md) and OUT/report.html (self-contained: plots
are inline SVG). Metrics:

  window AUROC          health score vs degraded label, over every labelled window
  lead time             end of life minus the raise of the alarm still on at the end, per failing
                        run, in seconds and as a share of its life (alarm off at the end = missed)
  false alarms          alarm raises at windows labelled healthy, per healthy machine-day
  fault-type accuracy   argmax of the p_<class> outputs vs the labelled class (if the bundle has them)

Degraded := the data's own label (simulator onset, CWRU fault files) OR remaining life <=
--horizon (default: the horizon the bundle was trained with, if any).

With --trusted-keys the bundle's Ed25519 signature is verified first and a bad or untrusted one is
refused; without, the signature is NOT verified: this is said on stderr and recorded in metrics.json.

--baselines adds, on the same runs and metrics: RMS and kurtosis thresholds, scikit-learn
IsolationForest and logistic regression on the same features, and an LSTM of the bundle's hidden
size trained with the same loop (quality, parameters, training time, step latency). They are fitted
on --train-data, or with --held-out on the bundle's own training runs.
"""

EPILOG = """\
examples:
  gruwatch evaluate --model bundles/v1 --data sim-test/ --out eval/v1 --trusted-keys keys/signing.pub
  gruwatch evaluate --model bundles/v1 --data sim/ --held-out --baselines --out eval/v1-vs-baselines
  gruwatch evaluate --model bundles/femto --data femto/Learning_set/Bearing2_1 --horizon 1h \\
      --baselines --train-data femto/Learning_set/Bearing1_2 --out eval/femto
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="gruwatch evaluate",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="BUNDLE", help="model bundle folder")
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="runs to evaluate: simulator dataset, FEMTO bearing or CWRU .mat folders (several allowed)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.json and report.html")
    p.add_argument(
        "--trusted-keys",
        nargs="+",
        default=[],
        metavar="KEY",
        help="Ed25519 public keys (files or folders of *.pub); verify the bundle's signature first",
    )
    p.add_argument(
        "--held-out",
        action="store_true",
        help="evaluate only the runs the bundle's card lists as validation runs (the trainer chose the "
        "epoch and alarm thresholds on them: a quick check, not a clean test set)",
    )
    p.add_argument(
        "--horizon",
        type=parse_duration,
        metavar="DURATION",
        help=f"degraded := remaining life <= this ({DURATION_HELP}; default: the bundle's training horizon)",
    )
    hidden_alias(p, "--horizon-s", dest="horizon", type=parse_duration)
    p.add_argument("--window", type=int, help="window length when framing continuous recordings (CWRU)")
    p.add_argument("--target-fs", type=float, help="resample every run to this rate (Hz)")
    b = p.add_argument_group("baselines")
    b.add_argument("--baselines", action="store_true", help="also fit and evaluate the baselines")
    b.add_argument(
        "--train-data",
        nargs="+",
        default=[],
        metavar="PATH",
        help="runs to fit the baselines on (default with --held-out: the bundle's training runs)",
    )
    b.add_argument(
        "--lstm-epochs", type=int, help="epochs for the LSTM baseline (default: the bundle's training epochs)"
    )
    b.add_argument("--seed", type=int, default=0, help="seed for the baselines (default 0)")
    add_progress_option(p)
    return p


def load_checked_bundle(path: str, trusted_keys: Sequence[str]) -> tuple[Any, str]:
    """(Bundle, "verified" | "not verified"); with no keys, says on stderr that it did not verify."""
    from edge_agent.bundle import load_bundle

    if trusted_keys:
        bundle = load_bundle(path, trusted_keys=[Path(k) for k in trusted_keys])
        return bundle, "verified" if bundle.verified else "not verified"
    sys.stderr.write(
        "gruwatch evaluate: the bundle's signature was NOT verified (no --trusted-keys given); "
        "pass --trusted-keys KEY to check who signed it\n"
    )
    return load_bundle(path, allow_unsigned=True), "not verified"


def _select(runs: list[Any], ids: Sequence[str], what: str) -> list[Any]:
    wanted = set(ids)
    picked = [r for r in runs if r.run_id in wanted]
    if not picked:
        raise GruwatchError(
            f"--held-out: none of the bundle's {what} runs ({len(wanted)}) is in --data; pass the data "
            "the bundle was trained on, or drop --held-out"
        )
    return picked


def _accepted(bundle: Any, runs: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The runs the agent would score with this bundle; the others are named on stderr (or refused)."""
    from trainer.data.runs import DataError
    from trainer.evaluate import runs_the_model_accepts

    kept, left_out = runs_the_model_accepts(bundle.trained_on, runs)
    if not left_out:
        return kept, left_out
    hint = (
        f"the model was trained on {bundle.trained_on.describe()}; --target-fs resamples runs, "
        "--window frames continuous recordings"
    )
    if not kept:
        first = left_out[0]
        raise DataError(
            f"none of the {len(left_out)} runs is one the agent would score with this model "
            f"(run {first['run_id']}: {first['reason']}); {hint}"
        )
    sys.stderr.write(
        f"gruwatch evaluate: {len(left_out)} of {len(runs)} runs left out, the agent would refuse their "
        f"windows as model_mismatch ({hint}):\n"
    )
    for row in left_out[:10]:
        sys.stderr.write(f"  {row['run_id']} ({row['windows']} windows): {row['reason']}\n")
    if len(left_out) > 10:
        sys.stderr.write(f"  ... and {len(left_out) - 10} more (metrics.json data.left_out lists them all)\n")
    return kept, left_out


def run_evaluation(args: argparse.Namespace) -> dict[str, Any]:
    """Everything `gruwatch evaluate` does; returns metrics.json's content (also written to OUT)."""
    from trainer.data import load_runs
    from trainer.data.runs import DataError
    from trainer.evaluate import evaluate_bundle

    progress = progress_enabled(args)
    check_output_dir(args.out)
    bundle, signature = load_checked_bundle(args.model, args.trusted_keys)
    card = bundle.card
    training = card.get("training") or {}
    horizon = args.horizon if args.horizon is not None else training.get("horizon_s")

    runs = load_runs(args.data, window=args.window, target_fs=args.target_fs, progress=progress)
    if not runs:
        raise DataError(f"no runs found under {', '.join(args.data)}")
    runs, left_out = _accepted(bundle, runs)
    train_runs: list[Any] = []
    if args.held_out:
        td = card.get("training_data") or {}
        all_runs = runs
        runs = _select(all_runs, td.get("validation_runs") or [], "validation")
        if args.baselines and not args.train_data:
            train_runs = _select(all_runs, td.get("train_runs") or [], "training")
    if args.baselines and args.train_data:
        train_runs = load_runs(
            args.train_data, window=args.window, target_fs=args.target_fs, progress=progress
        )
    if args.baselines and not train_runs:
        raise GruwatchError(
            "--baselines needs runs to fit them on: pass --train-data PATH..., or --held-out to use "
            "the bundle's own training runs"
        )

    metrics, results = evaluate_bundle(
        bundle,
        runs,
        signature=signature,
        horizon_s=horizon,
        train_runs=train_runs,
        baselines=args.baselines,
        lstm_epochs=args.lstm_epochs,
        seed=args.seed,
        progress=progress,
        data_paths=args.data,
        held_out=args.held_out,
    )
    metrics["model"]["path"] = str(args.model)
    metrics["data"]["left_out"] = left_out
    write_outputs(Path(args.out), metrics, results)
    return metrics


def write_outputs(out: Path, metrics: dict[str, Any], results: Sequence[Any]) -> None:
    """OUT/metrics.json and OUT/report.html (the folder is created)."""
    from dashboards.evaluation_report import RunTrace, write_report

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    traces = [
        RunTrace(
            run_id=r.run_id,
            t_s=r.ts,
            health=r.health,
            states=r.states,
            degraded_from_s=row["degraded_from_s"],
            failed_at_end=r.failed_at_end,
        )
        for r, row in zip(results, metrics["runs"], strict=True)
    ]
    write_report(out / "report.html", metrics, traces)


def _g(v: Any) -> str:
    """A number for the summary: 3 significant digits, "n/a" for None."""
    if v is None:
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _sec(v: Any) -> str:
    """Seconds for the summary, "n/a" without a unit for None."""
    return "n/a" if v is None else f"{_g(v)} s"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.3g} %"


def _summary(metrics: dict[str, Any], out: str) -> str:
    w, a = metrics["windows"], metrics["alarms"]
    lines = [
        f"model {metrics['model']['model_version']} (signature {metrics['signature']}) on "
        f"{metrics['data']['runs']} runs, {w['count']} windows",
        f"  window AUROC            {_g(w['auroc'])}",
        f"  failing runs detected   {a['detected']} of {a['failing_runs']}; median lead time "
        f"{_sec(a['lead_time_s']['median'])} ({_pct(a['lead_fraction']['median'])} of life)",
        f"  false alarms            {a['false_alarms']} in {a['healthy_machine_days']:.3g} healthy "
        f"machine-days ({_g(a['false_alarms_per_machine_day'])} per machine-day)",
    ]
    cut = a.get("cut_short") or {}
    if cut.get("runs"):
        lines.append(
            f"  runs cut short          {cut['runs']} (stopped before their known failure); alarm on at "
            f"the end of {cut['alarm_at_end']}, raised {_sec(cut['alarm_before_failure_s']['median'])} "
            "before the failure (median)"
        )
    if metrics["data"].get("left_out"):
        lines.append(
            f"  runs left out           {len(metrics['data']['left_out'])} (not what the model was trained on)"
        )
    ft = metrics.get("fault_types")
    if ft:
        lines.append(f"  fault-type accuracy     {_g(ft['accuracy'])}")
    for b in metrics.get("baselines") or []:
        lines.append(
            f"  {b['name']:<24} AUROC {_g(b['auroc'])}, detected {b['detected']}/{b['failing_runs']}, "
            f"median lead {_sec(b['lead_time_s_median'])}, false alarms/day "
            f"{_g(b['false_alarms_per_machine_day'])}, step {_g(b['step_latency_us'])} µs"
            + (
                f", alarm at the end of {b['cut_short_alarm_at_end']}/{b['cut_short_runs']} cut short"
                if cut.get("runs")
                else ""
            )
        )
    lines.append(f"wrote {Path(out) / 'metrics.json'} and {Path(out) / 'report.html'}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        metrics = run_evaluation(args)
    except GruwatchError as exc:
        sys.stderr.write(f"gruwatch evaluate: error: {exc}\n")
        return 1
    sys.stdout.write(_summary(metrics, args.out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
