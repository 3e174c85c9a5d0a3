"""The trainer's CUDA path (`--device cuda`): same function as on CPU, a bundle the agent reproduces.

These tests need a CUDA GPU and skip with that reason elsewhere (CI has none). They were run on a
lent GPU machine (docs/training.md, "Training on a GPU"): cuDNN's GRU/LSTM against the CPU paths
(trainer/fast_gru.py, nn.LSTM), `gruwatch train --device cuda` end to end, and the scores the alarm
thresholds are calibrated on against the scores the agent computes from the exported bundle.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.model import HealthModel

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: these tests run on a GPU machine"
)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_cuda_cell_computes_the_cpu_function_and_gradients(cell: str) -> None:
    """cuDNN's cell (CUDA) against the CPU path the trainer uses (fast_gru for the GRU), same weights,
    TF32 off: outputs and every gradient agree to float32 rounding."""
    torch.manual_seed(0)
    cpu = HealthModel(12, cell=cell, hidden=32, fault_classes=("inner", "outer"))
    cpu.set_scaler(np.zeros(12), np.ones(12))
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(8, 40, 12)
    h0 = cpu.initial_state(8, torch.device("cpu")) + 0.1 * torch.randn(cpu.state_rows, 8, 32)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        out_c, h_c = cpu.run(x, h0)
        out_g, h_g = gpu.run(x.cuda(), h0.cuda())
        loss_c = sum(v.square().sum() for v in out_c.values()) + h_c.square().sum()
        loss_g = sum(v.square().sum() for v in out_g.values()) + h_g.square().sum()
        loss_c.backward()
        loss_g.backward()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert set(out_c) == set(out_g)
    for k in out_c:
        torch.testing.assert_close(out_g[k].cpu(), out_c[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h_g.cpu(), h_c, rtol=1e-4, atol=1e-5)
    grads_c = dict(cpu.named_parameters())
    for name, p in gpu.named_parameters():
        want = grads_c[name].grad
        assert want is not None, name
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad.cpu(), want, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gruwatch_train_on_cuda_writes_a_bundle_the_agent_reproduces(
    sim_dataset: Path, tmp_path: Path, cell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trained on the GPU, exported and checked on the CPU: the bundle verifies, the checkpoint
    loads on a machine without CUDA, the agent's scorer reproduces the model, and the scores the
    thresholds were calibrated on (computed on the GPU) are the scores the agent computes."""
    from edge_agent.bundle import generate_keypair, load_bundle
    from edge_agent.features import extract_batch
    from edge_agent.scorer import Scorer
    from trainer.cli import main
    from trainer.data import load_runs
    from trainer.export import torch_sequence
    from trainer.sequences import build_sequences, fault_classes, spec_for_runs
    from trainer.train import score_sequences

    priv, pub = generate_keypair(tmp_path / "keys")
    out, ckpt = tmp_path / "bundle", tmp_path / "model.pt"
    argv = ["--data", str(sim_dataset), "--out", str(out), "--signing-key", str(priv), "--hidden", "16"]
    argv += ["--epochs", "8", "--chunk-len", "16", "--val-fraction", "0.3", "--seed", "2", "--no-progress"]
    argv += ["--checkpoint", str(ckpt), "--device", "cuda", "--cell", cell]
    assert main(argv) == 0
    said = capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert f"wrote {out}: model {card['model_version']}, {cell.upper()}, supervised, signed" in said
    assert card["training"]["device"] == "cuda"
    assert " s on cuda (" in said  # the summary says where it trained
    assert card["cell"] == cell
    assert card["validation"]["auroc"] > 0.75, card["validation"]
    assert card["validation"]["onnx_parity"]["steps"] == 1000

    bundle = load_bundle(out, trusted_keys=[pub])  # replays the test vectors on the CPU
    assert bundle.verified
    state = torch.load(ckpt, weights_only=True)  # no map_location: a CPU-only machine can read it
    assert {t.device.type for t in state["state_dict"].values()} == {"cpu"}
    model = HealthModel.from_checkpoint(state)

    runs = {r.run_id: r for r in load_runs([sim_dataset], progress=False)}
    val = [runs[i] for i in card["training_data"]["validation_runs"]]
    scorer = Scorer.from_loaded(bundle)
    for run in val[:2]:
        x = extract_batch(run.windows, run.fs, run.rpm, bundle.spec)
        want, _ = torch_sequence(model, x[None])
        got = np.stack([scorer.score_features([run.run_id], x[k : k + 1]).scores[0] for k in range(len(x))])
        np.testing.assert_allclose(got, want[0], atol=1e-5)

    # Calibration scores the validation runs with the model on the GPU; the agent scores them with
    # onnxruntime on the CPU. With cuDNN's default TF32 the two differed by 1.0e-4 (GRU); the
    # trainer turns TF32 off, so they agree to float32 rounding.
    spec = spec_for_runs(list(runs.values()))
    seqs = build_sequences(val, spec, classes=fault_classes(list(runs.values())), progress=False)
    on_gpu = score_sequences(copy.deepcopy(model), seqs, device="cuda")
    on_cpu = score_sequences(model, seqs, device="cpu")
    worst = max(float(np.max(np.abs(g - c))) for g, c in zip(on_gpu, on_cpu, strict=True))
    assert worst <= 1e-5, f"health scores on the GPU differ from the CPU's by up to {worst:.2g}"
