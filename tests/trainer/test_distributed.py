"""Data-parallel training: torchrun with 2 CPU processes (gloo) trains the model one process trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.data.runs import DataError
from trainer.distributed import per_rank_batch, shard_indices, torchrun_env
from trainer.model import HealthModel
from trainer.sequences import FeatureSequence
from trainer.train import TrainConfig, _run_epoch

REPO = Path(__file__).resolve().parents[2]
# Validation AUROC of a 2-process run vs one process on the same data and options (docs/training.md).
AUROC_TOLERANCE = 0.05
BUNDLE_FILES = {"card.json", "model.onnx", "test_vectors.json"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


# --------------------------------------------------------------------------- pure parts
def test_shards_cover_every_run_once_and_balance_windows() -> None:
    rng = np.random.default_rng(0)
    sizes = [int(n) for n in rng.integers(10, 1000, size=23)]
    for world in (1, 2, 3, 5):
        shards = [shard_indices(sizes, world, r) for r in range(world)]
        flat = sorted(i for s in shards for i in s)
        assert flat == list(range(len(sizes)))
        assert all(s == sorted(s) for s in shards)  # input order within a shard
        loads = [sum(sizes[i] for i in s) for s in shards]
        assert max(loads) - min(loads) <= max(sizes)  # greedy longest-first bound
        assert shards == [shard_indices(sizes, world, r) for r in range(world)]  # deterministic
    assert shard_indices([5, 5, 5, 5], 2, 0) == [0, 2]
    with pytest.raises(ValueError, match="outside world_size"):
        shard_indices(sizes, 2, 2)


def test_torchrun_environment_detection() -> None:
    assert torchrun_env({}) is None
    assert torchrun_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None
    assert torchrun_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with pytest.raises(DataError, match="torchrun"):
        torchrun_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})
    with pytest.raises(DataError, match="integers"):
        torchrun_env({"WORLD_SIZE": "two"})
    assert per_rank_batch(64, 2) == 32
    assert per_rank_batch(5, 2) == 3
    assert per_rank_batch(1, 8) == 1


# --------------------------------------------------------------------------- one epoch, exactly
def toy_sequences() -> list[FeatureSequence]:
    """Two labelled runs of different lengths (random features; degraded after an onset)."""
    rng = np.random.default_rng(5)
    out = []
    for i, (n, onset) in enumerate([(7, 4), (23, 12)]):
        target = (np.arange(n) >= onset).astype(np.float32)
        out.append(
            FeatureSequence(
                run_id=f"toy{i}",
                machine=f"m{i}",
                source="sim",
                features=rng.standard_normal((n, 6)).astype(np.float32),
                ts=np.arange(n) * 10.0,
                target=target,
                fault=target.astype(np.int64),
            )
        )
    return out


def toy_model() -> HealthModel:
    torch.manual_seed(0)
    return HealthModel(6, hidden=8, fault_classes=("healthy", "outer"))


TOY_CONFIG = TrainConfig(chunk_len=5, batch_size=2, lr=1e-2, grad_clip=1e9, progress=False)

EPOCH_SCRIPT = """
import sys
import torch
from tests.trainer.test_distributed import TOY_CONFIG, toy_model, toy_sequences
from trainer.distributed import init_distributed, shutdown, wrap_ddp
from trainer.train import _run_epoch

torch.set_num_threads(1)
ctx = init_distributed("cpu")
model = toy_model()
optimizer = torch.optim.AdamW(model.parameters(), lr=TOY_CONFIG.lr)
shard = [toy_sequences()[ctx.rank]]  # rank 0: 7 windows (2 chunks), rank 1: 23 windows (5 chunks)
loss = _run_epoch(
    model, [(shard, [0])], TOY_CONFIG, torch.tensor(2.0), optimizer, dist=ctx, ddp=wrap_ddp(model, ctx)
)
if ctx.is_main:
    torch.save({"loss": loss, "state_dict": model.state_dict()}, sys.argv[1])
shutdown(ctx)
"""


def test_two_processes_take_the_single_process_steps_on_uneven_shards(tmp_path: Path) -> None:
    """Rank 0 runs out of chunks after 2 of 5 steps and pads; the result is one process on both runs."""
    script, out = tmp_path / "epoch.py", tmp_path / "epoch.pt"
    script.write_text(EPOCH_SCRIPT)
    _run([*TORCHRUN, str(script), str(out)])
    got = torch.load(out, weights_only=True)

    model = toy_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=TOY_CONFIG.lr)
    want_loss = _run_epoch(model, [(toy_sequences(), [0, 0])], TOY_CONFIG, torch.tensor(2.0), optimizer)
    assert got["loss"] == pytest.approx(want_loss, rel=1e-5)
    for name, want in model.state_dict().items():
        torch.testing.assert_close(got["state_dict"][name], want, rtol=1e-5, atol=1e-5, msg=name)
    assert not torch.equal(
        got["state_dict"]["gru.weight_hh_l0"], toy_model().state_dict()["gru.weight_hh_l0"]
    )


# --------------------------------------------------------------------------- torchrun, end to end
def _run(cmd: list[str], timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_torchrun_two_processes_train_the_single_process_model(sim_dataset: Path, tmp_path: Path) -> None:
    from edge_agent.bundle import load_bundle

    common = ["--data", str(sim_dataset), "--hidden", "16", "--epochs", "8", "--chunk-len", "16"]
    common += ["--val-fraction", "0.3", "--seed", "2", "--device", "cpu", "--no-progress", "--json"]
    out_ddp, out_one = tmp_path / "ddp", tmp_path / "one"
    ckpt_ddp, ckpt_one = tmp_path / "ddp.pt", tmp_path / "one.pt"
    ddp = _run([*TORCHRUN, "-m", "trainer", *common, "--out", str(out_ddp), "--checkpoint", str(ckpt_ddp)])
    one = _run(
        [sys.executable, "-m", "trainer", *common, "--out", str(out_one), "--checkpoint", str(ckpt_one)]
    )

    # Rank 0 alone reports and writes: one summary on stdout, one bundle, nothing else in tmp_path.
    summary = json.loads(ddp.stdout)
    assert summary["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert summary["bundle"] == str(out_ddp)
    assert {p.name for p in out_ddp.iterdir()} == BUNDLE_FILES
    assert {p.name for p in tmp_path.iterdir()} == {"ddp", "one", "ddp.pt", "one.pt"}
    assert json.loads(one.stdout)["distributed"] is None

    bundle = load_bundle(out_ddp, allow_unsigned=True)  # replays the test vectors
    assert not bundle.verified
    card = json.loads((out_ddp / "card.json").read_text())
    card_one = json.loads((out_one / "card.json").read_text())
    assert card["training"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "distributed" not in card_one["training"]
    # Same data, same split: the validation metrics are over the same runs.
    assert card["training_data"] == card_one["training_data"]
    val, val_one = card["validation"], card_one["validation"]
    assert val["runs"] == val_one["runs"] == len(card["training_data"]["validation_runs"])
    assert val["labelled_windows"] == val_one["labelled_windows"]
    assert val["mode"] == val_one["mode"] == "supervised"
    assert val["auroc"] > 0.75
    assert abs(val["auroc"] - val_one["auroc"]) <= AUROC_TOLERANCE, (val["auroc"], val_one["auroc"])

    # The scaler is fitted over both processes' shards: the same buffers one process fits on all runs.
    state = torch.load(ckpt_ddp, weights_only=True)["state_dict"]
    state_one = torch.load(ckpt_one, weights_only=True)["state_dict"]
    for name in ("feature_mean", "feature_scale"):
        torch.testing.assert_close(state[name], state_one[name], rtol=1e-5, atol=1e-6)
    # ...and the weights were trained, not left at the shared initialisation.
    assert not torch.equal(state["gru.weight_ih_l0"], state_one["gru.weight_ih_l0"])
