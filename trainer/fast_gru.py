"""A GRU layer over whole sequences with a hand-written backward: nn.GRU's function, trained faster on CPU.

Why: on CPU, PyTorch runs nn.LSTM as one fused oneDNN kernel per layer and sequence but nn.GRU as
thousands of small autograd ops, so at the trainer's batch sizes the GRU — which does 3/4 of the
LSTM's arithmetic — trained 2-3x slower (PERFORMANCE-NOTES). `gru_layer` computes exactly nn.GRU's
equations (gate order r, z, n; the reset gate applied after W_hn·h, ONNX linear_before_reset=1)
with as few operations per time step as the recurrence allows:

forward, once per sequence:   gi = x·W_ihᵀ + b_ih for every step in one GEMM;
forward, per step (5 ops):    [a_rz, gh_n] = h·W_hhᵀ + [gi_rz + b_hh_rz, b_hn]; [r, u] = σ(a_rz);
                              n = tanh(gi_n + r·gh_n); h' = n + u·(h − n)
backward, once per sequence:  every local derivative the chain rule needs, from the saved r, u, n,
                              gh_n and h, as whole-sequence tensors G = [A·gh_n·r(1−r), (h−n)·u(1−u),
                              A·r] with A = (1−u)(1−n²);
backward, per step (3 ops):   dgh_t = dh'_t·G_t; dh'_{t−1} = dy_{t−1} + dh'_t·u_t + dgh_t·W_hh
backward, once per sequence:  dW_hh, db_hh, dW_ih, db_ih and dx as single GEMMs / sums over all steps.

`gru_sequence` stacks layers (without dropout between them; with dropout nn.GRU runs). The weights stay nn.GRU's
own parameters (same names, checkpoints, export); tests/trainer/test_fast_gru.py checks outputs and
gradients against nn.GRU. Used by `HealthModel.recur` when training on CPU (`usable`); CUDA keeps
nn.GRU (cuDNN's kernel is fused), and so does the forward pass without gradients (torch's C++ loop).

What it buys (benchmarks/bench_cells.py, docs/performance.md): 1.15-1.8x faster GRU epochs than
nn.GRU at 8-64 runs per batch; NOT the LSTM's speed: the LSTM's oneDNN kernel runs a whole chunk
in one call, while here every step costs at least eight torch operations (a few µs each however
small the batch), so at equal hidden size the GRU still trains at 0.5-0.9x the LSTM's speed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Batches of this many sequences or more train through nn.GRU (measured: fused 1.8x faster than
# nn.GRU per epoch at 8 runs per batch, 1.4x at 32, 1.15x at 64, 0.85x at 128; docs/performance.md).
MAX_BATCH = 96


def _forward_steps(
    gi: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor, hs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the recurrence: gi [T, B, 3H] (x·W_ihᵀ + b_ih), hs [T + 1, B, H] with hs[0] = h0, filled
    in place with h'_t. Returns (gh [T, B, 3H] whose n part is h·W_hnᵀ + b_hn, rz [T, B, 2H] = [r, u])."""
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    # Step t's GEMM adds h·W_hhᵀ to c_t = [gi_rz + b_hh_rz, b_hn]: one op gives the r and z
    # pre-activations and the hidden part of n (which the reset gate multiplies alone).
    c = torch.cat([gi[..., : 2 * H] + b_hh[: 2 * H], b_hh[2 * H :].expand(T, B, H)], dim=2)
    gh = torch.empty_like(c)
    rz = hs.new_empty(T, B, 2 * H)
    n = hs.new_empty(T, B, H)
    # Per-step views made once: indexing inside the loop would cost more than the arithmetic.
    c_l, h_l, gh_l, rz_l, n_l = c.unbind(0), hs.unbind(0), gh.unbind(0), rz.unbind(0), n.unbind(0)
    gi_n, gh_rz, gh_n = gi[..., 2 * H :].unbind(0), gh[..., : 2 * H].unbind(0), gh[..., 2 * H :].unbind(0)
    r_l, u_l = rz[..., :H].unbind(0), rz[..., H:].unbind(0)
    for t in range(T):
        torch.addmm(c_l[t], h_l[t], w_hh_t, out=gh_l[t])  # (in-place addmm_ measured 2x slower)
        torch.sigmoid(gh_rz[t], out=rz_l[t])
        torch.addcmul(gi_n[t], r_l[t], gh_n[t], out=n_l[t]).tanh_()
        torch.lerp(n_l[t], h_l[t], u_l[t], out=h_l[t + 1])  # n + u·(h − n)
    return gh, rz, n


def _backward_steps(
    g: torch.Tensor, u: torch.Tensor, dy: torch.Tensor, w_hh: torch.Tensor, dhs: torch.Tensor
) -> torch.Tensor:
    """BPTT: g [T, B, 3, H] local derivatives, u [T, B, H], dy [T, B, H]; dhs [T + 1, B, H] holds
    dh'_{T-1} in dhs[T] and is filled down to dhs[0] (the gradient of h0). Returns dgh [T, B, 3, H]."""
    T, B = g.shape[0], g.shape[1]
    dgh = torch.empty_like(g)
    g_l, dgh_l, dhs_l, dy_l, u_l = g.unbind(0), dgh.unbind(0), dhs.unbind(0), dy.unbind(0), u.unbind(0)
    zero = torch.zeros_like(dhs_l[0])
    for t in range(T - 1, -1, -1):
        torch.mul(g_l[t], dhs_l[t + 1].unsqueeze(1), out=dgh_l[t])
        carry = torch.addcmul(dy_l[t - 1] if t > 0 else zero, dhs_l[t + 1], u_l[t])
        torch.addmm(carry, dgh_l[t].view(B, -1), w_hh, out=dhs_l[t])
    return dgh


class _GruLayer(torch.autograd.Function):
    """One GRU layer over a time-major sequence: (x [T, B, I], h0 [B, H], weights) -> (y [T, B, H], h_T)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        h0: torch.Tensor,
        w_ih: torch.Tensor,
        w_hh: torch.Tensor,
        b_ih: torch.Tensor,
        b_hh: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        T, B, _ = x.shape
        H = h0.shape[-1]
        hs = x.new_empty(T + 1, B, H)  # hs[0] = h0, hs[t + 1] = h'_t (y is hs[1:])
        hs[0] = h0
        gi = torch.addmm(b_ih, x.reshape(T * B, -1), w_ih.t()).view(T, B, 3 * H)
        gh, rz, n = _forward_steps(gi, w_hh.t(), b_hh, hs)
        ctx.save_for_backward(x, w_ih, w_hh, hs, gh, rz, n)
        return hs[1:], hs[T].clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dy: torch.Tensor | None, dh_last: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        x, w_ih, w_hh, hs, gh, rz, n = ctx.saved_tensors
        T, B, _ = x.shape
        H = hs.shape[-1]
        dy = torch.zeros_like(n) if dy is None else dy.contiguous()
        dh = torch.zeros_like(hs[0]) if dh_last is None else dh_last
        if T == 0:
            return None, dh.clone(), None, None, None, None
        r, u, h_prev = rz[..., :H], rz[..., H:], hs[:-1]
        # Local derivatives of h'_t with respect to the hidden pre-activations (r, z, n parts), all steps.
        a = (1.0 - u) * (1.0 - n * n)
        g = x.new_empty(T, B, 3, H)
        torch.mul(a * gh[..., 2 * H :], r * (1.0 - r), out=g[:, :, 0])
        torch.mul(h_prev - n, u * (1.0 - u), out=g[:, :, 1])
        torch.mul(a, r, out=g[:, :, 2])
        dhs = torch.empty_like(hs)  # dhs[t + 1] = dh'_t, the gradient reaching h'_t; dhs[0] -> h0
        torch.add(dy[T - 1], dh, out=dhs[T])
        dgh = _backward_steps(g, u, dy, w_hh, dhs)
        dgh_flat = dgh.view(T * B, 3 * H)
        # The input-side gradient equals the hidden-side one for r and z; for n it is before the reset gate.
        dgi = dgh.clone()
        torch.mul(a, dhs[1:], out=dgi[:, :, 2])
        dgi_flat = dgi.view(T * B, 3 * H)
        d_w_hh = dgh_flat.t().mm(h_prev.reshape(T * B, H))
        d_b_hh = dgh_flat.sum(0)
        d_w_ih = dgi_flat.t().mm(x.reshape(T * B, -1))
        d_b_ih = dgi_flat.sum(0)
        dx = dgi_flat.mm(w_ih).view_as(x) if ctx.needs_input_grad[0] else None
        return dx, dhs[0], d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_layer(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer: x [T, B, I] time-major, h0 [B, H] -> (y [T, B, H], h_T [B, H])."""
    out: tuple[torch.Tensor, torch.Tensor] = _GruLayer.apply(
        x.contiguous(), h0.contiguous(), w_ih, w_hh, b_ih, b_hh
    )
    return out


def usable(rnn: nn.Module, x: torch.Tensor) -> bool:
    """Should `gru_sequence` replace `rnn(x, h0)` here? When it computes the same function (a
    batch-first, one-direction nn.GRU with biases on CPU float32 data, no dropout drawn between
    layers) and is faster: when gradients are wanted, at batches below MAX_BATCH. Without gradients
    torch's own C++ loop over the steps is faster (it keeps no intermediates), so scoring and
    validation stay on nn.GRU; from ~128 runs per batch the arithmetic dominates and nn.GRU's
    training was as fast or faster (benchmarks/bench_cells.py)."""
    if not isinstance(rnn, nn.GRU) or not torch.is_grad_enabled() or x.shape[0] >= MAX_BATCH:
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if not rnn.bias or rnn.bidirectional or not rnn.batch_first:
        return False
    return not (rnn.training and rnn.dropout > 0 and rnn.num_layers > 1)


def gru_sequence(rnn: nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.GRU(batch_first=True)'s forward through `gru_layer`: x [B, T, I], h0 [layers, B, H] ->
    (y [B, T, H], h_n [layers, B, H]) with `rnn`'s parameters."""
    layer_in = x.transpose(0, 1)
    finals = []
    for layer in range(rnn.num_layers):
        w = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        layer_in, h_last = gru_layer(layer_in, h0[layer], *w)
        finals.append(h_last)
    return layer_in.transpose(0, 1), torch.stack(finals, dim=0)
