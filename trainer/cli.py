"""`gruwatch train`: load runs, compute features, fit the GRU, calibrate alarms, export a model bundle.

Also `python -m trainer`, and `torchrun ... -m trainer` for data-parallel training over several
processes or machines (trainer/distributed.py; rank 0 writes the bundle, the others exit 0). The entry
point is `main(argv) -> int` (exit status 0 = bundle written, 1 = the data or the export was refused
with a message saying what to do, 2 = bad options).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import GruwatchError
from gruwatch.options import (
    DURATION_HELP,
    Parser,
    add_progress_option,
    check_output_dir,
    check_output_file,
    check_signing_key,
    format_duration,
    hidden_alias,
    int_at_least,
    parse_duration,
    progress_enabled,
)

if TYPE_CHECKING:
    from trainer.distributed import ProcessContext

DESCRIPTION = """\
Fit a GRU on sequences of vibration-window features and write a model bundle for the edge agent.

The model reads one window's features at a time and carries a hidden state per sensor; the bundle's
model.onnx is that single step, checked against torch over 1,000 held-out windows before it is
written. Two modes:

  supervised  labelled data: the simulator's fault onset, run-to-failure data with --horizon
              (degraded := remaining life <= horizon), or failures from --events CSV. The score is
              the probability that the bearing is degraded; with fault labels, fault probabilities
              follow as extra outputs.
  forecast    healthy-only data (no failures yet): the GRU forecasts the next window's features and
              the score is the calibrated forecast error.
  auto        (default) supervised when degraded windows are labelled, else forecast.

Runs are split by machine into training and validation; alarm thresholds and hysteresis are chosen
on validation runs for --target-false-alarms-per-day. See docs/training.md.

Started by torchrun (`torchrun --nproc-per-node N -m trainer ...`, same options), N processes per
machine train one model together (DistributedDataParallel; gloo on CPU, NCCL with --device cuda and
one GPU per process): each computes features for its share of the runs, and rank 0 calibrates and
writes the bundle. --batch-size stays the number of runs per optimizer step over all processes.
"""

EPILOG = """\
examples:
  gruwatch simulate dataset --out sim/ --machines 50 --seed 1
  gruwatch train --data sim/ --out bundles/v1 --signing-key keys/signing.key
  gruwatch train --data femto/Learning_set --horizon 1h --out bundles/femto --epochs 40
  gruwatch train --data collected/ --mode forecast --out bundles/healthy --parent bundles/v1
  torchrun --nproc-per-node 2 -m trainer --data sim/ --out bundles/v2 --device cpu
  # two machines x 4 GPUs: on machine `head` --node-rank 0 (writes the bundle), on the other 1
  torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --master-addr head --master-port 29500 \\
      -m trainer --data /shared/fleet --out bundles/v3 --device cuda
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="gruwatch train",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("data and output")
    io.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="simulator dataset folders, FEMTO bearing folders, CWRU .mat folders (several allowed)",
    )
    io.add_argument(
        "--out", required=True, metavar="BUNDLE_DIR", help="folder to write the bundle into (new or empty)"
    )
    io.add_argument(
        "--signing-key",
        metavar="KEY",
        help="Ed25519 private key (PEM, from `gruwatch keys new`) to sign the bundle with (agents need it)",
    )
    io.add_argument(
        "--events",
        metavar="CSV",
        help="maintenance events (machine,sensor,ts,event) labelling unlabelled runs",
    )
    io.add_argument(
        "--parent", metavar="BUNDLE_DIR", help="the bundle this one replaces (recorded as parent_version)"
    )
    io.add_argument("--checkpoint", metavar="FILE.pt", help="also save a torch checkpoint (config + weights)")
    io.add_argument("--window", type=int, help="window length when framing continuous recordings (CWRU)")
    io.add_argument("--target-fs", type=float, help="resample every run to this rate (Hz)")

    m = p.add_argument_group("model and training")
    m.add_argument(
        "--mode",
        choices=["auto", "supervised", "forecast"],
        default="auto",
        help="supervised (labelled degraded windows), forecast (healthy-only data) or auto (default: "
        "supervised when degraded windows are labelled)",
    )
    m.add_argument(
        "--horizon",
        type=parse_duration,
        metavar="DURATION",
        help=f"run-to-failure data: degraded := remaining life <= this ({DURATION_HELP})",
    )
    hidden_alias(m, "--horizon-s", dest="horizon", type=parse_duration)
    m.add_argument(
        "--cell",
        choices=["gru", "lstm"],
        default="gru",
        help="recurrent cell (default gru: 25%% fewer parameters and a cheaper step for the agent at equal "
        "hidden size; lstm for comparison, e.g. `gruwatch evaluate --baselines`). The card records it; "
        "the agent runs either (an LSTM's state holds h and c: 2 x layers rows). See docs/training.md",
    )
    m.add_argument("--hidden", type=int, default=64, help="hidden size of the cell (default 64)")
    m.add_argument("--layers", type=int, default=1, help="stacked cell layers (default 1)")
    m.add_argument("--epochs", type=int, default=30, help="passes over the training runs (default 30)")
    m.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    m.add_argument("--batch-size", type=int, default=64, help="runs per batch (default 64)")
    m.add_argument(
        "--chunk-len", type=int, default=128, help="windows per truncated-BPTT chunk (default 128)"
    )
    m.add_argument("--weight-decay", type=float, default=1e-5, help="AdamW weight decay (default 1e-5)")
    m.add_argument(
        "--input-noise",
        type=float,
        default=0.0,
        help="training noise per window, in feature standard deviations (default 0; CWRU used 0.2)",
    )
    m.add_argument(
        "--run-offset-noise",
        type=float,
        default=0.0,
        help="training offset per run, in feature standard deviations: teaches the model to ignore a "
        "sensor's or load's constant level shift (default 0; CWRU used 0.5)",
    )
    m.add_argument(
        "--early-weight",
        type=float,
        default=0.0,
        help="extra loss weight on the first windows after a zero state, 1 + w*exp(-t/5) (default 0)",
    )
    m.add_argument(
        "--keep",
        choices=["best", "last"],
        default="best",
        help="weights to keep: lowest validation loss (default) or the last epoch's",
    )
    m.add_argument(
        "--refit",
        action="store_true",
        help="after choosing the epochs on validation, retrain on training + validation runs "
        "(single process; thresholds are then calibrated on runs the model has seen)",
    )
    m.add_argument(
        "--synthetic-failures",
        type=int,
        default=0,
        metavar="N",
        help="run-to-failure data with a per-sensor baseline: N synthetic failures per training run "
        "(a healthy stretch whose level features then rise far above the baseline; the trainer picks "
        "6 for such data; 0 = none)",
    )
    m.add_argument(
        "--synthetic-steps",
        type=int,
        default=0,
        metavar="N",
        help="run-to-failure data with a per-sensor baseline: N copies of each training run with a "
        "lasting step in a few level features, labelled healthy (a shift that is not a failure; 0 = none)",
    )
    m.add_argument(
        "--health-target",
        choices=("binary", "hi-linear", "life-fraction"),
        default="binary",
        help="what the loss fits for runs that end in a failure: 'binary' (default) degraded or not; "
        "'hi-linear' a health indicator 0 until --hi-cap horizons before the end, then rising to 1; "
        "'life-fraction' the share of life elapsed (trainer/targets.py; alarms still calibrate on the horizon)",
    )
    m.add_argument(
        "--hi-cap",
        type=float,
        default=2.0,
        metavar="HORIZONS",
        help="--health-target hi-linear: where the indicator starts to rise, in horizons before the end (default 2)",
    )
    m.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and batching")
    m.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = cuda when available"
    )
    m.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1; see PERFORMANCE-NOTES)"
    )

    c = p.add_argument_group("validation and alarms")
    c.add_argument("--val-fraction", type=float, default=0.2, help="share of machines held out (default 0.2)")
    c.add_argument(
        "--target-false-alarms-per-day",
        type=float,
        default=0.1,
        help="alarm raises allowed per healthy machine-day on validation runs (default 0.1)",
    )
    c.add_argument(
        "--min-raise-windows",
        type=int,
        default=2,
        help="consecutive windows at/above the alarm threshold needed to raise it "
        "(default 2: a single cold-start or noisy window never alarms)",
    )
    c.add_argument(
        "--clear-windows",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="consecutive windows under the alarm level that clear a raised alarm (default 0: calibration "
        "chooses among 1, 3, 6, 12; run-to-failure data gets 12, so an alarm does not flicker off at one "
        "low window)",
    )
    c.add_argument(
        "--alarm-margin",
        type=float,
        default=0.05,
        help="score margin: validation must stay free of false alarms with every score this much "
        "higher (default 0.05)",
    )
    c.add_argument(
        "--alarm-pool",
        choices=("pooled", "median-run"),
        default="pooled",
        help="how the alarm level is set: 'pooled' (default) the lowest level free of false alarms on all "
        "validation runs together; 'median-run' the median of each validation and training run's own "
        "such level, so one run with a high healthy step does not set it alone (run-to-failure data "
        "gets median-run unless given)",
    )
    c.add_argument(
        "--alarm-grace",
        type=float,
        default=0.0,
        metavar="HORIZONS",
        help="calibration: healthy windows within this many horizons before a run's final degraded "
        "stretch count as neither healthy nor degraded (an alarm there warns early; it is not false). "
        "Default 0 (on FEMTO, 1 tripled the false alarms of training-side validation)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object (bundle, thresholds, validation, timings) instead of text",
    )
    add_progress_option(p)
    return p


def _parent_version(path: str | None) -> str | None:
    if path is None:
        return None
    card_path = Path(path) / "card.json"
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise GruwatchError(
            f"--parent {path}: cannot read {card_path} ({exc}); pass a bundle folder"
        ) from exc
    version = card.get("model_version")
    if not isinstance(version, str):
        raise GruwatchError(f"--parent {path}: card.json has no model_version")
    return version


def _output_problem(args: argparse.Namespace) -> str:
    """Why the bundle, its signature or the checkpoint could not be written ("" when they can)."""
    try:
        check_output_dir(args.out, fresh=True)
        if args.signing_key:
            check_signing_key(args.signing_key)
        if args.checkpoint:
            check_output_file(args.checkpoint, "--checkpoint")
    except GruwatchError as exc:
        return str(exc)
    return ""


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Everything `gruwatch train` does; returns a summary (also printed as JSON).

    Under torchrun (WORLD_SIZE > 1) this process joins the process group first; only rank 0 returns
    a bundle summary, the other ranks return {"bundle": None, "rank": ..., "world_size": ...}.
    """
    import torch

    from trainer.distributed import init_distributed, shutdown

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dist = init_distributed(device)
    try:
        return _train_and_export(args, device, dist)
    finally:
        shutdown(dist)


def _train_and_export(args: argparse.Namespace, device: str, dist: ProcessContext) -> dict[str, Any]:
    import torch

    from trainer.data import apply_events, fingerprint, load_events_csv, load_runs, trained_on
    from trainer.data.plan import apply_kind_settings, describe_plan, plan_training
    from trainer.data.runs import DataError
    from trainer.distributed import shard_indices
    from trainer.export import write_model_bundle
    from trainer.sequences import build_sequences
    from trainer.synthetic import training_failures
    from trainer.train import TrainConfig, set_seeds, train

    is_main = dist.is_main
    progress = progress_enabled(args) and is_main
    device = dist.device or device
    set_seeds(args.seed, args.threads)
    parent = _parent_version(args.parent)
    out = Path(args.out)
    # Everything that would fail after training is checked now. Only rank 0 writes: its answer
    # counts, and every process stops with it.
    problem = _output_problem(args) if is_main else ""
    if dist.main_decides(bool(problem)):
        raise GruwatchError(problem or "rank 0 refused the options (see its message)")
    if args.events and args.horizon is None:
        raise DataError("--events needs --horizon: how long before a failure a window counts as degraded")

    t0 = time.perf_counter()
    runs = load_runs(args.data, window=args.window, target_fs=args.target_fs, progress=progress)
    if args.events:
        runs = apply_events(runs, load_events_csv(args.events), horizon_s=args.horizon)
    if not runs:
        raise DataError(f"no runs found under {', '.join(args.data)}")
    t_load = time.perf_counter() - t0

    plan = plan_training(runs, val_fraction=args.val_fraction, seed=args.seed, horizon_s=args.horizon)
    kept = apply_kind_settings(args, plan.settings, build_parser())
    if is_main:
        print(describe_plan(plan, kept), file=sys.stderr)
    train_runs, val_runs, spec, classes = plan.train_runs, plan.val_runs, plan.spec, plan.classes
    args.horizon = plan.horizon_s
    training_data = {
        "plan": plan.describe(),
        "fingerprint": fingerprint(runs) if is_main else "",
        "runs": len(runs),
        "sources": sorted({r.source for r in runs}),
        "train_runs": [r.run_id for r in train_runs],
        "validation_runs": [r.run_id for r in val_runs],
    }
    windows_seen = trained_on(train_runs + val_runs) if is_main else None  # what the agent will accept
    if dist.world_size > 1:  # keep this process's shard of the runs (features are computed per shard)
        if len(train_runs) < dist.world_size:
            raise DataError(
                f"{len(train_runs)} training runs for {dist.world_size} processes: every process needs "
                "at least one; start fewer processes (--nproc-per-node / --nnodes) or add data"
            )
        train_runs = [
            train_runs[i]
            for i in shard_indices([r.n_windows for r in train_runs], dist.world_size, dist.rank)
        ]
        val_runs = [
            val_runs[i] for i in shard_indices([r.n_windows for r in val_runs], dist.world_size, dist.rank)
        ]
        del runs
    t1 = time.perf_counter()
    train_seqs = build_sequences(train_runs, spec, horizon_s=args.horizon, classes=classes, progress=progress)
    val_seqs = build_sequences(
        val_runs, spec, horizon_s=args.horizon, classes=classes, progress=progress, desc="features (val)"
    )
    t_features = time.perf_counter() - t1

    cfg = TrainConfig(
        mode=args.mode,
        cell=args.cell,
        hidden=args.hidden,
        layers=args.layers,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        chunk_len=args.chunk_len,
        seed=args.seed,
        clear_windows=args.clear_windows,
        device=device,
        threads=args.threads,
        horizon_s=args.horizon,
        val_fraction=args.val_fraction,
        target_false_alarms_per_day=args.target_false_alarms_per_day,
        weight_decay=args.weight_decay,
        input_noise=args.input_noise,
        run_offset_noise=args.run_offset_noise,
        early_weight=args.early_weight,
        keep=args.keep,
        refit=args.refit,
        synthetic_failures=args.synthetic_failures,
        synthetic_steps=args.synthetic_steps,
        health_target=args.health_target,
        hi_cap=args.hi_cap,
        min_raise_windows=args.min_raise_windows,
        alarm_margin=args.alarm_margin,
        alarm_pool=args.alarm_pool,
        alarm_grace=args.alarm_grace,
        progress=progress,
    )
    train_seqs += training_failures(train_seqs, spec, cfg, rank=dist.rank)
    result = train(train_seqs, val_seqs, cfg, classes=classes, dist=dist)
    if not dist.is_main:
        return {"bundle": None, "rank": dist.rank, "world_size": dist.world_size}

    t2 = time.perf_counter()
    held_out = [s.features for s in result.calibration_seqs]
    training = {k: v for k, v in vars(result.config).items() if k != "progress"}
    if dist.world_size > 1:
        training["distributed"] = dist.describe()
    bundle = write_model_bundle(
        out,
        result.model,
        held_out=held_out,
        feature_spec=spec.to_dict(),
        thresholds=result.thresholds,
        validation=result.validation,
        training_data=training_data,
        parent_version=parent,
        training=training,
        trained_on=windows_seen,
        signing_key=args.signing_key,
    )
    t_export = time.perf_counter() - t2
    if args.checkpoint:
        torch.save(result.model.checkpoint(), args.checkpoint)
    card = json.loads((bundle / "card.json").read_text())
    return {
        "bundle": str(bundle),
        "validation_runs": list(card.get("training_data", {}).get("validation_runs") or []),
        "model_version": card["model_version"],
        "mode": card["mode"],
        "cell": card["cell"],
        "signed": (bundle / "signature.json").exists(),
        "thresholds": card["thresholds"],
        "validation": {
            k: card["validation"].get(k) for k in ("auroc", "average_precision", "alarms", "onnx_parity")
        },
        "seconds": {
            "load": round(t_load, 2),
            "features": round(t_features, 2),
            "fit": round(result.timings["fit_s"], 2),
            "calibrate": round(result.timings["calibrate_s"], 2),
            "export": round(t_export, 2),
        },
        "distributed": dist.describe(),
        "device": device,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        summary = run_training(args)
    except GruwatchError as exc:
        sys.stderr.write(f"gruwatch train: error: {exc}\n")
        return 1
    if summary.get("bundle") is not None:  # under torchrun only rank 0 has a bundle to report
        text = json.dumps(summary, indent=2, default=str) if args.json else human_summary(summary)
        sys.stdout.write(text + "\n")
    return 0


def human_summary(summary: dict[str, Any]) -> str:
    """What `gruwatch train` made, for a person: the alarm rule, how it did on validation, what next."""
    t, v = summary["thresholds"], summary["validation"]
    signed = (
        "signed" if summary["signed"] else "UNSIGNED (an agent with trusted keys refuses it; --signing-key)"
    )
    lines = [
        f"wrote {summary['bundle']}: model {summary['model_version']}, {summary['cell'].upper()}, "
        f"{summary['mode']}, {signed}",
        f"alarm: health >= {t['alarm']:.3f} for {t['raise_windows']} window(s) raises it, "
        f"{t['clear_windows']} window(s) below clears it; warning at {t['warning']:.3f}",
    ]
    runs = summary.get("validation_runs") or []
    if runs:
        shown = ", ".join(runs[:4]) + (f" and {len(runs) - 4} more" if len(runs) > 4 else "")
        lines.append(f"validation on {len(runs)} run(s) the model did not fit: {shown}")
    else:
        lines.append("validation: none (too few runs to hold any out); figures below are on training runs")
    if v.get("auroc") is not None:
        lines.append(f"  window AUROC {v['auroc']:.3f} (health score vs degraded windows)")
    a = v.get("alarms") or {}
    if a.get("degraded_runs"):
        delay = a.get("median_detection_delay_s")
        lines.append(
            f"  {a['degraded_runs_detected']} of {a['degraded_runs']} degrading runs alarmed"
            + (f", median {delay:.0f} s after the degradation began" if delay is not None else "")
        )
    if "false_alarms" in a:
        per_day = a.get("false_alarms_per_day")
        days = a.get("healthy_machine_days") or 0.0
        target = a.get("target_false_alarms_per_day")
        if target and days * target < 1.0:  # not even one false raise allowed: no rate to speak of
            lines.append(
                f"  {a['false_alarms']} false alarm(s) in {format_duration(days * 86_400)} of healthy validation "
                f"data: too little to measure a rate against the target of {target} per machine-day; "
                f"the alarm margin ({a.get('margin', 0):g}) and the {t['raise_windows']}-window raise guard it "
                "instead"
            )
        else:
            rate = "" if per_day is None else f" = {per_day:.3g} per machine-day"
            lines.append(
                f"  {a['false_alarms']} false alarm(s) in {days:.3g} healthy "
                f"machine-days{rate} (target {target})"
            )
        if a["false_alarms"] and a.get("pool") == "median-run":
            lines.append(
                "    the alarm level is the median of each run's own false-alarm-free level, so a run whose "
                "healthy life steps up alone does not set it (docs/training.md, Alarm thresholds)"
            )
    parity = v.get("onnx_parity") or {}
    if parity.get("step_error") is not None:
        lines.append(f"  exported ONNX step matches torch within {parity['step_error']:.2g}")
    sec = summary["seconds"]
    on = f" on {summary['device']}" if summary.get("device") else ""
    lines.append(
        f"took {sum(sec.values()):.1f} s{on} (" + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()) + ")"
    )
    lines.append(
        f"next: gruwatch evaluate --model {summary['bundle']} --data <runs it never saw> --out <folder>; "
        "--json prints this summary as JSON"
    )
    return "\n".join(lines)
