"""Data-parallel training across processes and machines (torchrun + DistributedDataParallel).

`torchrun --nproc-per-node 2 -m trainer --data ... --out ...` starts one `gruwatch train` per process;
each finds RANK, WORLD_SIZE and LOCAL_RANK in its environment (`torchrun_env`) and joins one process
group (`init_distributed`: gloo on CPU, NCCL with `--device cuda`, one GPU per process). Then:

- the *runs* are sharded (`shard_indices`, by window count, deterministic): every process computes
  features only for its training and validation shard;
- the feature scaler is fitted globally (`global_scaler`: all-reduced counts, sums and squared
  deviations), so every process folds identical buffers into its model; the mode choice and the
  positive-class weight come from all-reduced label counts too;
- `trainer.train.fit` wraps the model in `DistributedDataParallel` (`wrap_ddp`) and makes every process
  take the same number of optimizer steps per epoch: a process that runs out of chunks steps on a
  fully masked chunk that adds nothing to the gradient, so DDP's all-reduce never waits for a
  process that has left the loop. Each step's loss is normalised by the *global*
  number of labelled windows, so the averaged gradient is the single-process gradient of the union of
  the processes' chunks;
- after training every process scores its validation shard and `gather_to_main` sends runs and scores
  to rank 0, which calibrates the alarm thresholds and alone writes the bundle; the others exit 0.

Without torchrun (or with WORLD_SIZE=1) `init_distributed` returns `LOCAL`, the no-op context: the
same training loop runs with every collective being the identity.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.data.runs import DataError
from trainer.model import HealthModel
from trainer.sequences import FeatureSequence

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class ProcessContext:
    """One process training alone: every collective is the identity (the no-op context).

    `trainer.train` calls these methods whatever the number of processes; `DistContext` overrides
    them with torch.distributed collectives.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"  # "gloo" | "nccl" under torchrun
    device: str = ""  # where tensors and collectives live ("cpu", "cuda:<local_rank>"); "" = as asked

    @property
    def is_main(self) -> bool:
        """Rank 0 calibrates and writes the bundle."""
        return self.rank == 0

    def describe(self) -> dict[str, Any] | None:
        return None

    def all_sum(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def all_max(self, value: int) -> int:
        return int(value)

    def main_decides(self, flag: bool) -> bool:
        return bool(flag)

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    def gather_scored(
        self, seqs: Sequence[FeatureSequence], scores: Sequence[np.ndarray]
    ) -> tuple[list[FeatureSequence], list[np.ndarray]] | None:
        """Every process's (runs, scores) on rank 0 (None on the others)."""
        return list(seqs), list(scores)

    def rng(self, seed: int) -> np.random.Generator:
        """This process's batching generator."""
        return np.random.default_rng(seed)

    def scaler(self, seqs: Sequence[FeatureSequence]) -> tuple[np.ndarray, np.ndarray]:
        """StandardScaler's (mean_, scale_) over the training windows."""
        sc = StandardScaler().fit(np.concatenate([s.features for s in seqs], axis=0).astype(np.float64))
        return sc.mean_, sc.scale_

    def n_features(self, seqs: Sequence[FeatureSequence]) -> int:
        return int(seqs[0].features.shape[1])

    def label_counts(self, seqs: Sequence[FeatureSequence]) -> tuple[float, float]:
        """(degraded windows, healthy windows)."""
        t = np.concatenate([s.target for s in seqs]) if seqs else np.zeros(0, np.float32)
        return float(np.sum(t == 1)), float(np.sum(t == 0))

    def wrap(self, model: HealthModel) -> Callable[..., Any]:
        """What a training step calls: `model.run(x, h0)`."""
        return model.run


LOCAL = ProcessContext()


@dataclass(frozen=True)
class DistContext(ProcessContext):
    """This process's place in the process group; `device` is where its tensors and collectives live."""

    def describe(self) -> dict[str, Any] | None:
        return {"world_size": self.world_size, "backend": self.backend}

    def all_sum(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        return all_sum(self, values)

    def all_max(self, value: int) -> int:
        return all_max(self, value)

    def main_decides(self, flag: bool) -> bool:
        return main_decides(self, flag)

    def all_gather(self, obj: Any) -> list[Any]:
        return all_gather(self, obj)

    def gather_scored(
        self, seqs: Sequence[FeatureSequence], scores: Sequence[np.ndarray]
    ) -> tuple[list[FeatureSequence], list[np.ndarray]] | None:
        gathered = gather_to_main(self, list(zip(seqs, scores, strict=True)))
        if gathered is None:
            return None
        pairs = sorted((p for rank_pairs in gathered for p in rank_pairs), key=lambda p: p[0].run_id)
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def rng(self, seed: int) -> np.random.Generator:
        """Same torch seed (same initial weights) everywhere; a different batch order per process."""
        return np.random.default_rng([seed, self.rank])

    def scaler(self, seqs: Sequence[FeatureSequence]) -> tuple[np.ndarray, np.ndarray]:
        return global_scaler(seqs, self)

    def n_features(self, seqs: Sequence[FeatureSequence]) -> int:
        return global_n_features(seqs, self)

    def label_counts(self, seqs: Sequence[FeatureSequence]) -> tuple[float, float]:
        return label_counts(seqs, self)

    def wrap(self, model: HealthModel) -> Callable[..., Any]:
        return wrap_ddp(model, self)


def torchrun_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when started by torchrun with more than one process, else None."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise DataError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}); start processes with torchrun"
        ) from exc
    if world <= 1:
        return None
    if not 0 <= rank < world or local_rank < 0:
        raise DataError(f"RANK={rank} is outside WORLD_SIZE={world}; start processes with torchrun")
    return rank, world, local_rank


def init_distributed(
    device: str,
    *,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProcessContext:
    """Join torchrun's process group (gloo for `device` "cpu", NCCL for "cuda"); `LOCAL` outside torchrun.

    torchrun also sets MASTER_ADDR/MASTER_PORT, which the default `env://` rendezvous reads.
    """
    found = torchrun_env(environ)
    if found is None:
        return LOCAL
    rank, world, local_rank = found
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DataError("--device cuda: no CUDA device is available here; use --device cpu (gloo)")
        if local_rank >= torch.cuda.device_count():
            raise DataError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
        backend, where = "nccl", f"cuda:{local_rank}"
    else:
        backend, where = "gloo", "cpu"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=where)


def shutdown(ctx: ProcessContext) -> None:
    """Leave the process group together (no-op outside torchrun).

    Every rank waits at a barrier first: rank 0 may still be exporting the bundle, and a rank that
    tears gloo down while its peer is still connected can abort the process ("terminate called
    without an active exception", seen once in CI).
    """
    if ctx.world_size > 1 and torch_dist.is_initialized():
        try:
            torch_dist.barrier()
        finally:
            torch_dist.destroy_process_group()


# --------------------------------------------------------------------------- sharding
def shard_indices(sizes: Sequence[int], world_size: int, rank: int) -> list[int]:
    """Indices of the items `rank` owns, balancing total size (longest first to the least loaded).

    Deterministic (ties go to the lower index and the lower rank); every index goes to exactly one
    rank; the returned indices are in input order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    load = [0] * world_size
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-int(sizes[i]), i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += max(int(sizes[i]), 1)
    return [i for i in range(len(sizes)) if owner[i] == rank]


# --------------------------------------------------------------------------- collectives
def all_sum(ctx: DistContext, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Element-wise sum over all processes (float64)."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=ctx.device).clone()
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t.cpu().numpy()


def all_max(ctx: DistContext, value: int) -> int:
    """The largest `value` over all processes."""
    t = torch.tensor([int(value)], dtype=torch.int64, device=ctx.device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return int(t.item())


def main_decides(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's `flag` on every process (so that all refuse together, e.g. a non-empty --out)."""
    t = torch.tensor([int(flag)], dtype=torch.int64, device=ctx.device)
    torch_dist.broadcast(t, src=0)
    return bool(t.item())


def all_gather(ctx: DistContext, obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order, on every process (pickled)."""
    out: list[Any] = [None] * ctx.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def gather_to_main(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Every process's `obj` in rank order on rank 0; None on the others."""
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    torch_dist.gather_object(obj, out, dst=0)
    return out


def global_scaler(seqs: Sequence[FeatureSequence], ctx: DistContext) -> tuple[np.ndarray, np.ndarray]:
    """StandardScaler's (mean_, scale_) over every process's training windows, identical everywhere.

    Two passes (sum, then squared deviations from the global mean) in float64: the same numbers as
    scikit-learn's fit on the concatenated features, to float64 rounding. Constant features get
    scale 1, as in scikit-learn.
    """
    n_features = global_n_features(seqs, ctx)
    x = [s.features.astype(np.float64) for s in seqs if len(s)]
    local_n = float(sum(len(a) for a in x))
    local_sum = np.sum([a.sum(axis=0) for a in x], axis=0) if x else np.zeros(n_features)
    total = all_sum(ctx, np.concatenate([[local_n], local_sum]))
    n = total[0]
    if n < 1:
        raise DataError("no training windows on any process; check --data")
    mean = total[1:] / n
    local_sq = np.sum([((a - mean) ** 2).sum(axis=0) for a in x], axis=0) if x else np.zeros(n_features)
    var = all_sum(ctx, local_sq) / n
    scale = np.sqrt(var)
    tiny = 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    scale = np.where(scale < tiny, 1.0, scale)
    return mean, scale


def global_n_features(seqs: Sequence[FeatureSequence], ctx: DistContext) -> int:
    """Features per window, known even on a process whose shard is empty."""
    local = seqs[0].features.shape[1] if seqs else 0
    return all_max(ctx, local)


def label_counts(seqs: Sequence[FeatureSequence], ctx: DistContext) -> tuple[float, float]:
    """(degraded windows, healthy windows) over every process's shard."""
    t = np.concatenate([s.target for s in seqs]) if seqs else np.zeros(0, np.float32)
    pos, neg = all_sum(ctx, [float(np.sum(t == 1)), float(np.sum(t == 0))])
    return float(pos), float(neg)


# --------------------------------------------------------------------------- DDP
class SequenceForward(nn.Module):
    """`HealthModel.run` as `forward`, so DistributedDataParallel sees (and syncs) every step."""

    def __init__(self, model: HealthModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.model.run(x, h0)


def wrap_ddp(model: HealthModel, ctx: DistContext) -> nn.Module:
    """`model.run` wrapped for data-parallel training (gradients averaged across processes on backward).

    Every parameter must take part in every step's loss (trainer.train ties the fault head in with a
    zero-weighted term), so DDP needs no search for unused parameters. Buffers (the scaler) are
    identical by construction and are not re-sent before every step.
    """
    device_ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    no_buffer_sync: dict[str, Any] = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(SequenceForward(model), device_ids=device_ids, **no_buffer_sync)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Runs per batch on each process so that all processes together see about `batch_size` runs."""
    return max(1, math.ceil(batch_size / world_size))
