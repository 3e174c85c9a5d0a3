"""trainer/fast_gru.py computes nn.GRU's function: outputs and every gradient, over seeds, shapes and layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainer import fast_gru
from trainer.model import HealthModel
from trainer.sequences import FeatureSequence
from trainer.train import TrainConfig, train

torch.set_num_threads(1)


def _grads(
    rnn: nn.GRU, x: torch.Tensor, h0: torch.Tensor, fused: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(y, h_n, gradients of a random linear loss w.r.t. x, h0 and every parameter)."""
    x = x.detach().clone().requires_grad_(True)
    h0 = h0.detach().clone().requires_grad_(True)
    y, h_n = fast_gru.gru_sequence(rnn, x, h0) if fused else rnn(x, h0)
    gen = torch.Generator().manual_seed(seed)
    wy = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    wh = torch.randn(h_n.shape, generator=gen, dtype=y.dtype)
    loss = (y * wy).sum() + (h_n * wh).sum()
    grads = torch.autograd.grad(loss, [x, h0, *rnn.parameters()])
    return y.detach(), h_n.detach(), list(grads)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("batch", "steps", "inputs", "hidden", "layers"),
    [(1, 1, 3, 4, 1), (3, 7, 5, 4, 1), (4, 33, 6, 8, 2), (2, 20, 25, 16, 3), (16, 64, 25, 64, 1)],
)
def test_outputs_and_gradients_equal_nn_gru_in_float64(
    seed: int, batch: int, steps: int, inputs: int, hidden: int, layers: int
) -> None:
    torch.manual_seed(seed)
    rnn = nn.GRU(inputs, hidden, num_layers=layers, batch_first=True).double()
    x = torch.randn(batch, steps, inputs, dtype=torch.float64) * 2
    h0 = torch.randn(layers, batch, hidden, dtype=torch.float64) * 0.5  # a carried state, not zeros
    y_ref, h_ref, g_ref = _grads(rnn, x, h0, fused=False, seed=seed)
    y, h_n, g = _grads(rnn, x, h0, fused=True, seed=seed)
    assert y.shape == y_ref.shape
    assert h_n.shape == h_ref.shape
    assert torch.allclose(y, y_ref, atol=1e-12, rtol=0)
    assert torch.allclose(h_n, h_ref, atol=1e-12, rtol=0)
    names = ["x", "h0", *(n for n, _ in rnn.named_parameters())]
    for name, got, want in zip(names, g, g_ref, strict=True):
        assert got.shape == want.shape, name
        assert torch.allclose(got, want, atol=1e-10, rtol=1e-10), f"d loss / d {name}"


def test_float32_matches_nn_gru_to_rounding() -> None:
    torch.manual_seed(5)
    rnn = nn.GRU(25, 64, batch_first=True)
    x, h0 = torch.randn(32, 128, 25), torch.randn(1, 32, 64) * 0.5
    y_ref, h_ref, g_ref = _grads(rnn, x, h0, fused=False, seed=5)
    y, h_n, g = _grads(rnn, x, h0, fused=True, seed=5)
    assert float((y - y_ref).abs().max()) < 1e-5
    assert float((h_n - h_ref).abs().max()) < 1e-5
    for got, want in zip(g, g_ref, strict=True):
        assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


def test_state_carried_across_chunks_is_the_whole_sequence() -> None:
    """Two chunks with the state carried give the same outputs as one pass over both."""
    torch.manual_seed(2)
    rnn = nn.GRU(4, 8, batch_first=True).double()
    x, h0 = torch.randn(3, 20, 4, dtype=torch.float64), torch.zeros(1, 3, 8, dtype=torch.float64)
    with torch.enable_grad():
        y_all, h_all = fast_gru.gru_sequence(rnn, x, h0)
        y1, h1 = fast_gru.gru_sequence(rnn, x[:, :12], h0)
        y2, h2 = fast_gru.gru_sequence(rnn, x[:, 12:], h1.detach())
    assert torch.allclose(torch.cat([y1, y2], dim=1), y_all, atol=1e-13)
    assert torch.allclose(h2, h_all, atol=1e-13)


def test_usable_only_where_it_is_exact_and_faster() -> None:
    x = torch.zeros(2, 3, 4)
    gru = nn.GRU(4, 8, batch_first=True)
    assert fast_gru.usable(gru, x)
    with torch.no_grad():  # forward only: torch's C++ loop is faster
        assert not fast_gru.usable(gru, x)
    assert not fast_gru.usable(nn.LSTM(4, 8, batch_first=True), x)
    assert not fast_gru.usable(gru, x.double())
    assert not fast_gru.usable(nn.GRU(4, 8, batch_first=False), x)
    dropped = nn.GRU(4, 8, num_layers=2, dropout=0.5, batch_first=True).train()
    assert not fast_gru.usable(dropped, x)  # nn.GRU draws its own dropout masks
    assert fast_gru.usable(dropped.eval(), x)
    wide = torch.zeros(fast_gru.MAX_BATCH, 3, 4)  # large batches: nn.GRU was as fast
    assert not fast_gru.usable(gru, wide)
    assert fast_gru.usable(gru, wide[:-1])


def test_health_model_trains_through_the_fused_layer_with_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = HealthModel(5, cell="gru", hidden=8, layers=2, fault_classes=("a", "b"))
    x = torch.randn(3, 10, 5)
    out, _ = model.run(x)
    assert "_GruLayerBackward" in _graph_names(out["health_logit"])
    loss = out["health_logit"].sum() + out["fault_logits"].square().sum()
    fused = torch.autograd.grad(loss, list(model.parameters()))
    model.fused = False
    out, _ = model.run(x)
    assert "_GruLayerBackward" not in _graph_names(out["health_logit"])
    loss = out["health_logit"].sum() + out["fault_logits"].square().sum()
    plain = torch.autograd.grad(loss, list(model.parameters()))
    for a, b in zip(fused, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_training_with_the_fused_layer_learns_like_nn_gru(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's own loop: same seed, same data -> (nearly) the same loss history either way."""
    rng = np.random.default_rng(0)
    seqs = []
    for i in range(6):
        n = 60
        target = (np.arange(n) > 40).astype(np.float32)
        feats = rng.normal(size=(n, 4)).astype(np.float32) + target[:, None] * 3.0
        seqs.append(
            FeatureSequence(f"r{i}", f"m{i}", "sim", feats, np.arange(n) * 10.0, target, np.full(n, -1))
        )
    cfg = TrainConfig(hidden=8, epochs=8, lr=1e-2, chunk_len=16, progress=False, batch_size=4)
    fused = train(seqs[:4], seqs[4:], cfg)
    monkeypatch.setattr(fast_gru, "usable", lambda rnn, x: False)
    plain = train(seqs[:4], seqs[4:], cfg)
    losses_f = [h["train_loss"] for h in fused.history]
    losses_p = [h["train_loss"] for h in plain.history]
    assert np.allclose(losses_f, losses_p, rtol=1e-4), (losses_f, losses_p)
    assert losses_f[-1] < losses_f[0]


def _graph_names(t: torch.Tensor) -> set[str]:
    names, visited, todo = set(), set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or id(fn) in visited:
            continue
        visited.add(id(fn))
        names.add(fn.name())
        todo.extend(f for f, _ in fn.next_functions)
    return names
