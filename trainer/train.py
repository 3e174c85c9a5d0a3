"""Training: scaler fit, the GRU training loop with truncated BPTT, validation scoring and calibration.

Reads top to bottom (nanoGPT style):

1. `ProcessContext.scaler` fits scikit-learn's StandardScaler on the training windows' features; it is folded
   into the model as buffers, so the exported graph takes raw features.
2. `fit` trains with truncated back-propagation through time: each batch of runs is cut into chunks
   of `chunk_len` windows and the hidden state is carried (detached) from one chunk to the next, so
   the model learns from — and is scored with — states after thousands of windows, as the agent
   runs for months without a reset. Each epoch a share of the runs starts at a random offset, so a
   sensor first seen mid-life is scored sensibly too.
   - supervised: BCE on the health logit (degraded vs healthy, positive class re-weighted) plus
     cross-entropy on fault classes where labels exist;
   - forecast (healthy-only data): mean squared error of the next window's scaled features,
     on windows not labelled degraded.
   The weights with the lowest validation loss are kept (or the last epoch's, `keep="last"`;
   `refit` then retrains on training + validation runs for the chosen epochs). Optional training
   noise (`input_noise` per window, `run_offset_noise` per run) and `early_weight` on the first
   windows after a zero state.
3. `score_sequences` scores runs from a zero state exactly like the exported step graph does.
4. `train` runs it all: features, mode choice, fit, forecast-error calibration, validation metrics
   and alarm thresholds (trainer.calibrate).

Seeds are fixed (torch.manual_seed and a numpy Generator); torch uses 1 thread by default.

One loop serves one process and many: every function takes a `trainer.distributed.ProcessContext`
(`dist=`; `LOCAL`, the no-op context, by default). Under torchrun each process passes its shard of
the runs and a `DistContext`: the scaler, the mode choice and the class weight become global, `fit`
steps a DistributedDataParallel wrapper the same number of times on every process, and rank 0
receives every process's validation runs and scores and alone calibrates (trainer/distributed.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from trainer.calibrate import ScoredRun, alarm_metrics, calibrate, median_run_alarm, settings_of
from trainer.data.runs import DataError
from trainer.distributed import LOCAL, ProcessContext, per_rank_batch
from trainer.model import LOG_EPS, HealthModel
from trainer.sequences import Batch, FeatureSequence, chunk_slices, pad_batch
from trainer.targets import check_health_target, with_health_targets


@dataclass
class TrainConfig:
    """Everything `fit`/`train` need; stored in the bundle card under "training"."""

    mode: str = "auto"  # "supervised" | "forecast" | "auto" (supervised when degraded labels exist)
    cell: str = "gru"  # "gru" | "lstm"
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 64  # runs per batch
    chunk_len: int = 128  # windows per truncated-BPTT chunk
    random_start: float = 0.5  # share of runs that start at a random offset each epoch
    grad_clip: float = 1.0
    fault_weight: float = 0.5
    # Augmentation, in units of each feature's training standard deviation, training batches only:
    # fresh noise per window, and one offset per run (a sensor/load/mounting shift held for the run).
    input_noise: float = 0.0
    run_offset_noise: float = 0.0
    # Which weights `fit` keeps: "best" (lowest validation loss) or "last" (the final epoch's; the
    # validation runs then only calibrate thresholds and report metrics).
    keep: str = "best"
    # Extra loss weight on the first windows after a zero state: window t (0-based, counted from
    # where the run starts in the batch) weighs 1 + early_weight * exp(-t / 5). The agent scores a
    # new sensor from a zero state, so its first windows should be right too.
    early_weight: float = 0.0
    # After choosing the epoch count on validation, train a fresh model on training + validation runs
    # for that many epochs (single process only). The thresholds are still calibrated on the
    # validation runs, which the refitted model has seen: use it where the fault-type output
    # matters more than calibrated alarm thresholds.
    refit: bool = False
    # Run-to-failure data: synthetic failures per training run added to the training sequences by
    # the caller (trainer/synthetic.py; needs baseline-normalised features and a horizon).
    synthetic_failures: int = 0
    # ... and copies of each training run with a lasting step in a few level features, still healthy.
    synthetic_steps: int = 0
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    horizon_s: float | None = None
    val_fraction: float = 0.2
    target_false_alarms_per_day: float = 0.1
    # Calibration safety: at least this many consecutive windows to raise an alarm, and no false
    # alarm on validation even with every score `alarm_margin` higher (trainer.calibrate).
    min_raise_windows: int = 2
    alarm_margin: float = 0.05
    # Windows under the alarm level that clear it: 0 = calibration chooses (ties: the least sticky);
    # N = always N (a raised alarm does not flicker off at one low window).
    clear_windows: int = 0
    # "pooled": thresholds from all validation runs at once; "median-run": the alarm level is the median
    # of each validation and real training run's own false-alarm-free threshold.
    alarm_pool: str = "pooled"
    # Calibration only: the healthy windows within `alarm_grace` horizons before a run's final
    # degraded stretch count as neither healthy nor degraded (an alarm there is an early warning,
    # not a false alarm). 0 = every window before the horizon is healthy.
    alarm_grace: float = 0.0
    # What the loss fits (trainer/targets.py): "binary", or on runs ending in a failure "hi-linear" (rising
    # from `hi_cap` horizons before the end) or "life-fraction"; calibration keeps the binary target.
    health_target: str = "binary"
    hi_cap: float = 2.0
    progress: bool = True


@dataclass
class TrainResult:
    model: HealthModel
    config: TrainConfig
    thresholds: dict[str, Any]
    validation: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # The runs the thresholds were calibrated on (validation, else training). Distributed: all of them
    # on rank 0 (gathered from every process), empty on the other ranks, whose result is partial.
    calibration_seqs: list[FeatureSequence] = field(default_factory=list)


def set_seeds(seed: int, threads: int = 1) -> np.random.Generator:
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)
    return np.random.default_rng(seed)


def choose_mode(
    requested: str, seqs: Sequence[FeatureSequence], *, counts: tuple[float, float] | None = None
) -> str:
    """'auto' -> supervised when any window is labelled degraded (and some healthy), else forecast.

    `counts` = (degraded, healthy) windows over all processes replaces what `seqs` (a shard) holds.
    """
    both = _has_both_classes(seqs) if counts is None else bool(counts[0] > 0 and counts[1] > 0)
    if requested in ("supervised", "forecast"):
        if requested == "supervised" and not both:
            raise DataError(
                "supervised training needs windows labelled degraded and healthy; for run-to-failure data "
                "pass --horizon (degraded := remaining life <= horizon), or use --mode forecast "
                "(healthy-only data)"
            )
        return requested
    if requested != "auto":
        raise ValueError(f"mode must be supervised, forecast or auto, not {requested!r}")
    return "supervised" if both else "forecast"


def calibration_targets(seq: FeatureSequence, grace_s: float) -> np.ndarray:
    """The targets alarms are calibrated against: `seq.target` with the healthy windows less than
    `grace_s` before the run's final degraded stretch (a run ending degraded) set to NaN."""
    target = seq.target
    if grace_s <= 0 or len(target) == 0 or target[-1] != 1:
        return target
    healthy_before = np.flatnonzero(target != 1)
    start = int(healthy_before[-1]) + 1 if healthy_before.size else 0
    out = target.copy()
    near = (seq.ts >= seq.ts[start] - grace_s) & (np.arange(len(target)) < start) & (target == 0)
    out[near] = np.nan
    return out


def _has_both_classes(seqs: Sequence[FeatureSequence]) -> bool:
    t = np.concatenate([s.target for s in seqs]) if seqs else np.zeros(0)
    return bool(np.any(t == 1) and np.any(t == 0))


def _loss(
    model: HealthModel,
    out: dict[str, torch.Tensor],
    target: torch.Tensor,
    fault: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor,
    fault_weight: float,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """(summed loss, number of windows it covers) for one chunk; `weight` [B, T] scales windows."""
    if model.mode == "forecast":
        use = mask & ~(target == 1)  # healthy or unknown windows
        per = ((out["forecast"] - out["scaled"]) ** 2).mean(dim=-1)
        return (per * use).sum(), int(use.sum())
    known = mask & ~torch.isnan(target)
    logits = out["health_logit"][known]
    bce = nn.functional.binary_cross_entropy_with_logits(
        logits, target[known], pos_weight=pos_weight, reduction="none"
    )
    loss = (bce * weight[known]).sum() if weight is not None else bce.sum()
    count = int(known.sum())
    if "fault_logits" in out:
        has = mask & (fault >= 0)
        if bool(has.any()):
            ce = nn.functional.cross_entropy(out["fault_logits"][has], fault[has], reduction="none")
            ce_sum = (ce * weight[has]).sum() if weight is not None else ce.sum()
            loss = loss + fault_weight * ce_sum
    return loss, count


def _batches(
    seqs: Sequence[FeatureSequence], cfg: TrainConfig, rng: np.random.Generator, *, train: bool
) -> list[tuple[list[FeatureSequence], list[int]]]:
    order = rng.permutation(len(seqs)) if train else np.arange(len(seqs))
    out = []
    for start in range(0, len(order), cfg.batch_size):
        group = [seqs[i] for i in order[start : start + cfg.batch_size]]
        offsets = []
        for s in group:
            if train and len(s) > 2 and rng.random() < cfg.random_start:
                offsets.append(int(rng.integers(0, len(s) // 2)))
            else:
                offsets.append(0)
        out.append((group, offsets))
    return out


def _run_epoch(
    model: HealthModel,
    batches: list[tuple[list[FeatureSequence], list[int]]],
    cfg: TrainConfig,
    pos_weight: torch.Tensor,
    optimizer: torch.optim.Optimizer | None,
    *,
    dist: ProcessContext = LOCAL,
    ddp: Callable[..., Any] | None = None,
) -> float:
    """Mean loss per labelled window over `batches` (over every process under torchrun).

    Training steps when given an `optimizer`, through `ddp` (the context's wrapper of `model.run`)
    when given; evaluation (no optimizer) runs `model.run` without gradients.
    """
    if optimizer is not None and dist.world_size > 1 and ddp is None:
        raise ValueError("distributed training steps need the DistributedDataParallel wrapper (ddp=)")
    forward = ddp if ddp is not None and optimizer is not None else model.run
    total, count = dist.all_sum(_epoch_sums(model, forward, batches, cfg, pos_weight, optimizer, dist))
    return float(total / max(count, 1.0))


def _early_weights(sl: slice, batch: int, cfg: TrainConfig, device: torch.device) -> torch.Tensor | None:
    """[B, T] loss weights of one chunk: 1 + early_weight * exp(-t / 5), t = windows since the start."""
    if cfg.early_weight <= 0:
        return None
    t = torch.arange(sl.start, sl.stop, device=device, dtype=torch.float32)
    return (1.0 + cfg.early_weight * torch.exp(-t / 5.0)).expand(batch, -1)


def _augment(model: HealthModel, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Training-time noise on raw features [B, T, F], scaled by the model's feature scale."""
    if cfg.input_noise <= 0 and cfg.run_offset_noise <= 0:
        return x
    noise = torch.zeros_like(x)
    if cfg.input_noise > 0:
        noise = noise + cfg.input_noise * torch.randn_like(x)
    if cfg.run_offset_noise > 0:
        noise = noise + cfg.run_offset_noise * torch.randn(x.shape[0], 1, x.shape[2], device=x.device)
    return x + noise * model.feature_scale


def _labelled_windows(mode: str, b: Batch, sl: slice) -> int:
    """The windows `_loss` counts in one chunk (known targets; forecast: not degraded)."""
    mask, target = b.mask[:, sl], b.target[:, sl]
    use = mask & ~(target == 1) if mode == "forecast" else mask & ~np.isnan(target)
    return int(use.sum())


def _padding_chunk(model: HealthModel) -> Batch:
    """One fully masked window: a step on it adds nothing to the loss or the gradient."""
    f = model.n_features
    return Batch(
        x=np.zeros((1, 1, f), np.float32),
        target=np.full((1, 1), np.nan, np.float32),
        fault=np.full((1, 1), -1, np.int64),
        mask=np.zeros((1, 1), bool),
    )


def _epoch_sums(
    model: HealthModel,
    forward: Callable[..., Any],
    batches: list[tuple[list[FeatureSequence], list[int]]],
    cfg: TrainConfig,
    pos_weight: torch.Tensor,
    optimizer: torch.optim.Optimizer | None,
    dist: ProcessContext,
) -> tuple[float, int]:
    """(summed loss, labelled windows) over `batches` in this process; steps when given an optimizer.

    Truncated BPTT: each batch of runs is cut into chunks of `cfg.chunk_len` windows and the state is
    carried (detached) from chunk to chunk. Training takes the same number of optimizer steps on
    every process (the most chunks any process has; one that runs out steps on a fully masked
    padding chunk), and each step's loss is divided by the labelled windows of that step over all
    processes (per process: that count / world_size), so DDP's gradient average is the gradient of
    the mean loss over the union of the processes' chunks, as in one process.
    """
    device = torch.device(cfg.device)
    training = optimizer is not None
    model.train(training)
    padded = [pad_batch(group, offsets) for group, offsets in batches]
    plan = [(i, sl) for i, b in enumerate(padded) for sl in chunk_slices(b.x.shape[1], cfg.chunk_len)]
    n_steps, step_counts = len(plan), np.zeros(0)
    if training:
        n_steps = dist.all_max(len(plan))
        local = np.zeros(n_steps)
        local[: len(plan)] = [_labelled_windows(model.mode, padded[i], sl) for i, sl in plan]
        step_counts = dist.all_sum(local)
    pad = _padding_chunk(model)
    total, count = 0.0, 0
    current = -1
    tensors: tuple[torch.Tensor, ...] = ()
    h = model.initial_state(1, device)
    for k in range(n_steps):
        weight = None
        if k < len(plan):
            i, sl = plan[k]
            if i != current:  # a new batch of runs starts from a zero state
                b, current = padded[i], i
                tensors = tuple(torch.as_tensor(a, device=device) for a in (b.x, b.target, b.fault, b.mask))
                if training:
                    tensors = (_augment(model, tensors[0], cfg), *tensors[1:])
                h = model.initial_state(b.x.shape[0], device)
            x, target, fault, mask = (t[:, sl] for t in tensors)
            if training:
                weight = _early_weights(sl, x.shape[0], cfg, device)
        else:  # this process has no chunk left: a fully masked one keeps it in step
            x, target, fault, mask = (
                torch.as_tensor(a, device=device) for a in (pad.x, pad.target, pad.fault, pad.mask)
            )
            h = model.initial_state(1, device)
        with torch.set_grad_enabled(training):
            out, h = forward(x, h)
            loss, n = _loss(model, out, target, fault, mask, pos_weight, cfg.fault_weight, weight)
        if optimizer is not None:
            if dist.world_size > 1 and "fault_logits" in out:  # DDP reduces every parameter: a chunk
                loss = loss + 0.0 * out["fault_logits"].sum()  # without fault labels ties the head in
            n_step = float(step_counts[k])
            optimizer.zero_grad(set_to_none=True)
            # Every process runs backward every step (DDP's all-reduce needs all of them); a step
            # with no labelled window anywhere changes nothing.
            (loss / (max(n_step, 1.0) / dist.world_size)).backward()
            if n_step > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
        h = h.detach()  # truncated BPTT: carry the state, not the graph
        total += float(loss.detach())
        count += n
    return total, count


def fit(
    model: HealthModel,
    train_seqs: Sequence[FeatureSequence],
    val_seqs: Sequence[FeatureSequence],
    cfg: TrainConfig,
    rng: np.random.Generator,
    *,
    dist: ProcessContext = LOCAL,
) -> list[dict[str, float]]:
    """Train in place (keeps the weights with the best validation loss). Returns per-epoch history.

    Under torchrun `train_seqs`/`val_seqs` are this process's shards; losses, the class weight and
    the choice of the best epoch are global, and `cfg.batch_size` runs per step are split over processes.
    """
    if cfg.keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', not {cfg.keep!r}")
    device = torch.device(cfg.device)
    model.to(device)
    n_pos, n_neg = dist.label_counts(train_seqs)
    has_val = bool(dist.all_sum([len(val_seqs)])[0] > 0)
    batch_cfg = replace(cfg, batch_size=per_rank_batch(cfg.batch_size, dist.world_size))
    ddp = dist.wrap(model)
    # A health-indicator target is a regression onto [0, 1]: no re-weighting of the degraded windows.
    weight = 1.0 if cfg.health_target != "binary" else min(max(n_neg / max(n_pos, 1.0), 1.0), 50.0)
    pos_weight = torch.tensor(weight, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    val_batches = _batches(val_seqs, batch_cfg, rng, train=False) if has_val else []
    history: list[dict[str, float]] = []
    best_state, best_loss = None, float("inf")
    bar = tqdm(range(cfg.epochs), desc=f"train ({model.mode})", unit="epoch", disable=not cfg.progress)
    for epoch in bar:
        t0 = time.perf_counter()
        batches = _batches(train_seqs, batch_cfg, rng, train=True)
        train_loss = _run_epoch(model, batches, cfg, pos_weight, optimizer, dist=dist, ddp=ddp)
        scheduler.step()
        val_loss = _run_epoch(model, val_batches, cfg, pos_weight, None, dist=dist) if has_val else train_loss
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "seconds": time.perf_counter() - t0,
            }
        )
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_loss:
            best_loss = val_loss
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None and cfg.keep != "last":
        model.load_state_dict(best_state)
    return history


def _fresh_like(model: HealthModel, seed: int) -> HealthModel:
    """A newly initialised model with `model`'s configuration and scaler buffers."""
    torch.manual_seed(seed)
    cfg = dict(model.config)
    fresh = HealthModel(cfg.pop("n_features"), **cfg)
    fresh.set_scaler(model.feature_mean.cpu().numpy(), model.feature_scale.cpu().numpy())
    return fresh


def score_sequences(
    model: HealthModel, seqs: Sequence[FeatureSequence], *, device: str = "cpu", key: str = "score"
) -> list[np.ndarray]:
    """Per run, from a zero state: score [N, K] (key="score") or forecast error [N] (key="error")."""
    model.eval().to(device)
    out = []
    with torch.no_grad():
        for s in seqs:
            x = torch.as_tensor(s.features[None], device=device)
            raw, _ = model.run(x)
            if key == "error":
                out.append(raw["error"][0].cpu().numpy())
            else:
                out.append(model.scores_from(raw)[0].cpu().numpy())
    return out


def calibrate_forecast_error(
    model: HealthModel, seqs: Sequence[FeatureSequence], device: str, *, dist: ProcessContext = LOCAL
) -> dict[str, float]:
    """Map log forecast error to [0, 1]: the healthy median -> 0.01, the healthy 99th percentile -> 0.5.

    The quantiles are over every process's healthy windows (identical on all of them).
    """
    errs = score_sequences(model, seqs, device=device, key="error")
    parts = [e[s.target != 1] for e, s in zip(errs, seqs, strict=True)]
    parts = [p for rank_parts in dist.all_gather(parts) for p in rank_parts]
    healthy = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if healthy.size == 0:
        raise DataError("forecast mode needs healthy training windows to calibrate its error score")
    log_err = np.log(healthy.astype(np.float64) + LOG_EPS)
    q50, q99 = np.quantile(log_err, [0.5, 0.99])
    width = max((q99 - q50) / np.log(99.0), 1e-3)
    model.set_error_calibration(float(q99), float(width))
    return {"log_error_q50": float(q50), "log_error_q99": float(q99), "width": float(width)}


def window_metrics(scores: Sequence[np.ndarray], seqs: Sequence[FeatureSequence]) -> dict[str, Any]:
    """AUROC / average precision of score[:, 0] against degraded targets (where both classes exist)."""
    s = np.concatenate([sc[:, 0] for sc in scores]) if scores else np.zeros(0)
    t = np.concatenate([q.target for q in seqs]) if seqs else np.zeros(0)
    known = ~np.isnan(t)
    out: dict[str, Any] = {"windows": len(s), "labelled_windows": int(known.sum())}
    if known.any() and len(np.unique(t[known])) == 2:
        out["auroc"] = float(roc_auc_score(t[known], s[known]))
        out["average_precision"] = float(average_precision_score(t[known], s[known]))
    return out


def fault_accuracy(
    model: HealthModel, scores: Sequence[np.ndarray], seqs: Sequence[FeatureSequence]
) -> float | None:
    """Share of degraded windows with a known fault class whose most probable class is right."""
    if len(model.fault_classes) < 2:
        return None
    pred = np.concatenate([sc[:, 1:].argmax(axis=1) for sc in scores])
    fault = np.concatenate([q.fault for q in seqs])
    deg = np.concatenate([q.target for q in seqs]) == 1
    use = deg & (fault >= 0)
    return float(np.mean(pred[use] == fault[use])) if use.any() else None


def train(
    train_seqs: Sequence[FeatureSequence],
    val_seqs: Sequence[FeatureSequence],
    cfg: TrainConfig,
    *,
    classes: Sequence[str] = (),
    dist: ProcessContext = LOCAL,
    init: HealthModel | None = None,
) -> TrainResult:
    """Fit a model on `train_seqs`, calibrate on `val_seqs` (or train when there is none).

    Under torchrun `train_seqs`/`val_seqs` are this process's shards and every process must call
    `train` with the same `cfg` and `classes`; rank 0 gets the complete result, the other ranks a
    partial one (empty thresholds, validation {"mode", "rank"}).

    `init` fine-tunes that model (its mode, fault classes and feature scaler are kept) instead of a
    fresh one (single process only; trainer/retrain.py).
    """
    if int(dist.all_sum([len(train_seqs)])[0]) == 0:
        raise DataError("no training runs; pass --data with at least one run")
    set_seeds(cfg.seed, cfg.threads)
    rng = dist.rng(cfg.seed)
    check_health_target(cfg.health_target, cfg.horizon_s)
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DataError("--device cuda: no CUDA device is available here; use --device cpu")
        # No TF32 (cuDNN's RNNs use it by default): calibration sees the agent's float32 scores.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if init is not None:
        if dist.world_size != 1:
            raise ValueError("fine-tuning (init=) runs in one process")
        # The champion's scaler stays: the challenger reads features as the champion did.
        model = init.to(torch.device(cfg.device))
        mode = init.mode
        cfg = replace(cfg, mode=mode, cell=init.cell, hidden=init.hidden, layers=init.layers)
    else:
        mode = choose_mode(cfg.mode, train_seqs, counts=dist.label_counts(train_seqs))
        cfg = TrainConfig(**{**asdict(cfg), "mode": mode})
        model = HealthModel(
            dist.n_features([*train_seqs, *val_seqs]),
            cell=cfg.cell,
            hidden=cfg.hidden,
            layers=cfg.layers,
            mode=mode,
            fault_classes=tuple(classes) if mode == "supervised" else (),
            dropout=cfg.dropout,
        )
        model.set_scaler(*dist.scaler(train_seqs))
    t0 = time.perf_counter()
    fit_train, fit_val = (
        with_health_targets(seqs, cfg.health_target, cfg.horizon_s, cfg.hi_cap)
        for seqs in (train_seqs, val_seqs)
    )
    history = fit(model, fit_train, fit_val, cfg, rng, dist=dist)
    validation: dict[str, Any] = {"mode": mode, "epochs": len(history)}
    if cfg.refit and dist.world_size == 1 and val_seqs and history:
        best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
        n_epochs = len(history) if cfg.keep == "last" else best + 1
        refitted = _fresh_like(model, cfg.seed)
        fit(refitted, [*fit_train, *fit_val], [], replace(cfg, epochs=n_epochs), rng)
        model = refitted
        validation["refit_epochs"] = n_epochs
    timings = {"fit_s": time.perf_counter() - t0}
    if mode == "forecast":
        validation["error_calibration"] = calibrate_forecast_error(model, train_seqs, cfg.device, dist=dist)
    t1 = time.perf_counter()
    has_val = bool(dist.all_sum([len(val_seqs)])[0] > 0)
    local = list(val_seqs) if has_val else list(train_seqs)
    gathered = dist.gather_scored(local, score_sequences(model, local, device=cfg.device))
    if gathered is None:  # not rank 0: rank 0 calibrates and writes the bundle
        model.cpu().eval()
        timings["calibrate_s"] = time.perf_counter() - t1
        return TrainResult(model, cfg, {}, {"mode": mode, "rank": dist.rank}, history, timings)
    cal_seqs, scores = gathered
    validation["on"] = "validation" if has_val else "training (no validation runs)"
    validation["runs"] = len(cal_seqs)
    validation.update(window_metrics(scores, cal_seqs))
    acc = fault_accuracy(model, scores, cal_seqs)
    if acc is not None:
        validation["fault_accuracy_degraded"] = acc
    # Forecast mode assumes its data healthy: unlabelled windows count as healthy time for false alarms.
    scored = [
        ScoredRun(
            sc[:, 0].astype(np.float64),
            np.nan_to_num(s.target, nan=0.0)
            if mode == "forecast"
            else calibration_targets(s, cfg.alarm_grace * (cfg.horizon_s or 0.0)),
            s.interval_s,
        )
        for sc, s in zip(scores, cal_seqs, strict=True)
    ]
    thresholds, alarms = calibrate(scored, **settings_of(cfg))
    if cfg.alarm_pool == "median-run":  # docs/training.md "Alarm thresholds"
        # The real training runs (synthetic ones carry "#" in their id); under torchrun rank 0's shard.
        real_train = [s for s in train_seqs if "#" not in s.run_id]
        extra = [
            ScoredRun(sc[:, 0].astype(np.float64), np.nan_to_num(s.target, nan=0.0), s.interval_s)
            for sc, s in zip(score_sequences(model, real_train, device=cfg.device), real_train, strict=True)
        ]
        med = median_run_alarm(
            [*scored, *extra], thresholds["raise_windows"], thresholds["clear_windows"], cfg.alarm_margin
        )
        if med is not None:
            thresholds["alarm"] = med
            thresholds["warning"] = min(thresholds["warning"], med)
            safety = {k: alarms[k] for k in ("min_raise_windows", "margin")}
            alarms = {**alarm_metrics(scored, thresholds, cfg.target_false_alarms_per_day), **safety}
    alarms["pool"] = cfg.alarm_pool
    validation["alarms"] = alarms
    validation["final_train_loss"] = history[-1]["train_loss"] if history else None
    validation["best_val_loss"] = min(h["val_loss"] for h in history) if history else None
    timings["calibrate_s"] = time.perf_counter() - t1
    model.cpu().eval()
    return TrainResult(model, cfg, thresholds, validation, history, timings, calibration_seqs=cal_seqs)
