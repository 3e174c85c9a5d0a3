"""The health model: feature scaling as buffers, a recurrent cell (GRU or LSTM) over window features,
and its output heads.

One module serves training and export, for both cells:

- `run(x, h0)` / `forward` run whole sequences `[B, T, F]` through `nn.GRU` / `nn.LSTM` (fast to
  train) and return the same scores the exported graph produces step by step;
- `step(features, h)` is ONE time step written as plain matrix products (ONNX's GRU and LSTM
  operators are the slowest way to step a batch, see PERFORMANCE-NOTES) with the exact torch
  equations, so the exported graph matches `forward` to float32 rounding, in GEMM form
  (`step_weights`: one Gemm per gate, biases folded in, no Split).

On CPU, GRU sequences train through trainer/fast_gru.py (nn.GRU's function with a hand-written
backward; `fused`), LSTM sequences through nn.LSTM (one oneDNN kernel).

The state is one tensor: GRU `[layers, B, hidden]`; LSTM `[2 × layers, B, hidden]` (h rows first,
then c), so the training loop carries and detaches it the same way for both cells.

Two modes share the scaler and the cell:

- ``"supervised"``: score[:, 0] = sigmoid(health_head(h_t[-1])); with fault classes, score[:, 1:] =
  softmax(fault_head(h_t[-1])) named ``p_<class>``.
- ``"forecast"`` (healthy-only data): the cell forecasts the next window's scaled features from
  h_{t-1}; score[:, 0] = sigmoid((log(err_t + eps) - err_center) / err_width) with
  err_t = mean((scaled(x_t) - forecast(h_{t-1}))²), calibrated on healthy training windows and
  folded into the graph as buffers.

The constructor only stores its arguments (they are the checkpoint's `config`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import fast_gru

MODES = ("supervised", "forecast")
CELLS = ("gru", "lstm")
LOG_EPS = 1e-6


class HealthModel(nn.Module):
    """Scaler buffers + GRU or LSTM + heads. `config` holds the constructor arguments for checkpoints."""

    feature_mean: torch.Tensor
    feature_scale: torch.Tensor
    err_center: torch.Tensor
    err_width: torch.Tensor

    def __init__(
        self,
        n_features: int,
        *,
        cell: str = "gru",
        hidden: int = 64,
        layers: int = 1,
        mode: str = "supervised",
        fault_classes: tuple[str, ...] | list[str] = (),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, not {cell!r}")
        if n_features < 1 or hidden < 1 or layers < 1:
            raise ValueError("n_features, hidden and layers must be >= 1")
        fault_classes = tuple(fault_classes) if mode == "supervised" else ()
        if len(fault_classes) == 1:
            raise ValueError("a fault head needs at least two classes (or none)")
        self.config: dict[str, Any] = {
            "n_features": int(n_features),
            "cell": cell,
            "hidden": int(hidden),
            "layers": int(layers),
            "mode": mode,
            "fault_classes": list(fault_classes),
            "dropout": float(dropout),
        }
        self.n_features = int(n_features)
        self.cell = cell
        self.hidden = int(hidden)
        self.layers = int(layers)
        self.mode = mode
        self.fault_classes = fault_classes
        # GRU sequences through trainer.fast_gru (nn.GRU's function, faster on CPU) where it is exact.
        self.fused = True
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        between = dropout if layers > 1 else 0.0
        # Named after the cell ("gru" / "lstm"): the checkpoint keys say which it is.
        self.add_module(cell, rnn(n_features, hidden, num_layers=layers, batch_first=True, dropout=between))
        if mode == "supervised":
            self.health_head = nn.Linear(hidden, 1)
            self.fault_head = nn.Linear(hidden, len(fault_classes)) if fault_classes else None
        else:
            self.forecast_head = nn.Linear(hidden, n_features)
            self.register_buffer("err_center", torch.zeros(()))
            self.register_buffer("err_width", torch.ones(()))

    # ----------------------------------------------------------------- metadata
    @property
    def outputs(self) -> list[str]:
        """Names of score's columns (card["outputs"])."""
        return ["health", *(f"p_{c}" for c in self.fault_classes)]

    @property
    def rnn(self) -> nn.Module:
        """The `nn.GRU` or `nn.LSTM`."""
        return self.get_submodule(self.cell)

    @property
    def state_rows(self) -> int:
        """Rows of the state tensor: layers (GRU) or h and c of every layer (LSTM)."""
        return self.layers if self.cell == "gru" else 2 * self.layers

    @property
    def state_shape(self) -> list[int]:
        return [self.state_rows, self.hidden]

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.state_rows, batch, self.hidden, device=device)

    # ----------------------------------------------------------------- scaling
    def set_scaler(self, mean: np.ndarray, scale: np.ndarray) -> None:
        """Fold a fitted StandardScaler (mean_, scale_) into the graph."""
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        scale_t = torch.as_tensor(np.asarray(scale, dtype=np.float32))
        if mean_t.shape != (self.n_features,) or scale_t.shape != (self.n_features,):
            raise ValueError(f"scaler must have {self.n_features} features")
        scale_t = torch.where(scale_t > 0, scale_t, torch.ones_like(scale_t))
        self.feature_mean.copy_(mean_t)
        self.feature_scale.copy_(scale_t)

    def set_error_calibration(self, center: float, width: float) -> None:
        """Forecast mode: score = sigmoid((log(err + eps) - center) / width)."""
        if self.mode != "forecast":
            raise ValueError("error calibration exists only in forecast mode")
        self.err_center.fill_(float(center))
        self.err_width.fill_(max(float(width), 1e-3))

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / self.feature_scale

    # ----------------------------------------------------------------- sequences (training)
    def run(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Whole sequences. x [B, T, F] raw features -> (raw head outputs, h_T [layers, B, hidden]).

        Supervised: {"health_logit" [B, T], "fault_logits" [B, T, C] (if any)}.
        Forecast: {"forecast" [B, T, F] (prediction of scaled x_t from h_{t-1}), "scaled" [B, T, F],
        "error" [B, T]}.
        """
        if h0 is None:
            h0 = self.initial_state(x.shape[0], x.device)
        z = self.scale(x)
        y, h_n = self.recur(z, h0)
        out: dict[str, torch.Tensor] = {}
        if self.mode == "supervised":
            out["health_logit"] = self.health_head(y).squeeze(-1)
            if self.fault_head is not None:
                out["fault_logits"] = self.fault_head(y)
        else:
            prev = torch.cat([h0[self.layers - 1].unsqueeze(1), y[:, :-1]], dim=1)  # h_{t-1}, last layer
            pred = self.forecast_head(prev)
            out["forecast"] = pred
            out["scaled"] = z
            out["error"] = ((z - pred) ** 2).mean(dim=-1)
        return out, h_n

    def recur(self, z: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled sequences z [B, T, F] -> (top layer's h_t [B, T, hidden], final state like h0)."""
        if self.cell == "gru":
            if self.fused and fast_gru.usable(self.rnn, z):
                return fast_gru.gru_sequence(self.rnn, z, h0)
            return self.rnn(z, h0)  # type: ignore[no-any-return]
        L = self.layers
        y, (h_n, c_n) = self.rnn(z, (h0[:L].contiguous(), h0[L:].contiguous()))
        return y, torch.cat([h_n, c_n], dim=0)

    def scores_from(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw head outputs -> score [B, T, K] exactly as `step` computes them."""
        if self.mode == "supervised":
            cols = [torch.sigmoid(out["health_logit"]).unsqueeze(-1)]
            if "fault_logits" in out:
                cols.append(torch.softmax(out["fault_logits"], dim=-1))
            return torch.cat(cols, dim=-1)
        err = out["error"]
        return torch.sigmoid((torch.log(err + LOG_EPS) - self.err_center) / self.err_width).unsqueeze(-1)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole sequences: x [B, T, F] -> (score [B, T, K], h_T [layers, B, hidden])."""
        out, h_n = self.run(x, h0)
        return self.scores_from(out), h_n

    # ----------------------------------------------------------------- one step (export)
    def _weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        rnn = self.rnn
        return tuple(getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def step_weights(self) -> list[tuple[torch.Tensor, ...]]:
        """Per layer, the weights of `step` in GEMM form, from the cell's parameters.

        One (W, b) pair per Gemm, W [rows, H]: GRU (W_r, b_r, W_z, b_z) over [input, h] with
        b = b_i + b_h, then (W_in, b_in) over the input and (W_hn, b_hn) over h apart (the reset gate
        multiplies only the h part of n); LSTM (W_g, b_g) for g = i, f, g, o over [input, h].
        """
        H = self.hidden
        out: list[tuple[torch.Tensor, ...]] = []
        for layer in range(self.layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer)
            w = torch.cat([w_ih, w_hh], dim=1)  # rows: gates, columns: [input, h]
            b = b_ih + b_hh
            if self.cell == "gru":  # r, z over [input, h]; n's input and h parts apart
                out.append(
                    (
                        w[:H].t(),
                        b[:H],
                        w[H : 2 * H].t(),
                        b[H : 2 * H],
                        w_ih[2 * H :].t(),
                        b_ih[2 * H :],
                        w_hh[2 * H :].t(),
                        b_hh[2 * H :],
                    )
                )
            else:  # i, f, g, o over [input, h]
                out.append(
                    tuple(t for k in range(4) for t in (w[k * H : (k + 1) * H].t(), b[k * H : (k + 1) * H]))
                )
        return [tuple(t.contiguous() for t in ws) for ws in out]

    def load_step_weights(self, weights: list[tuple[torch.Tensor, ...]]) -> None:
        """The inverse of `step_weights`: set the cell's parameters from per-layer GEMM-form weights
        (e.g. an exported graph's constants, read back to fine-tune: trainer/champion.py).

        Each gate's W [input + h, H] is split back into its input and h columns and the gates are
        stacked in PyTorch's order (GRU r, z, n; LSTM i, f, g, o) into weight_ih / weight_hh. Where
        the step form holds only b_ih + b_hh (GRU r, z; every LSTM gate), each bias gets half the
        sum: the cell computes the same function and trains the same way (the two always get the
        same gradient), weight decay aside.
        """
        H = self.hidden
        gates = 3 if self.cell == "gru" else 4
        with torch.no_grad():
            for layer, ws in enumerate(weights):
                n_in = self.n_features if layer == 0 else H
                w_ih_old, w_hh_old, b_ih_old, b_hh_old = self._weights(layer)
                if self.cell == "gru":
                    w_r, b_r, w_z, b_z, w_in, b_in, w_hn, b_hn = ws
                    w_ih = torch.cat([w_r.t()[:, :n_in], w_z.t()[:, :n_in], w_in.t()])
                    w_hh = torch.cat([w_r.t()[:, n_in:], w_z.t()[:, n_in:], w_hn.t()])
                    half = torch.cat([b_r, b_z]) / 2
                    b_ih, b_hh = torch.cat([half, b_in]), torch.cat([half, b_hn])
                else:
                    w = [ws[2 * k].t() for k in range(gates)]
                    w_ih = torch.cat([g[:, :n_in] for g in w])
                    w_hh = torch.cat([g[:, n_in:] for g in w])
                    b_ih = b_hh = torch.cat([ws[2 * k + 1] for k in range(gates)]) / 2
                for param, value in ((w_ih_old, w_ih), (w_hh_old, w_hh), (b_ih_old, b_ih), (b_hh_old, b_hh)):
                    if tuple(param.shape) != tuple(value.shape):
                        raise ValueError(
                            f"layer {layer}: step weights of shape {tuple(value.shape)}, "
                            f"the cell needs {tuple(param.shape)}"
                        )
                    param.copy_(value)

    def step(
        self,
        features: torch.Tensor,
        h: torch.Tensor,
        weights: list[tuple[torch.Tensor, ...]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ONE step: features [B, F], h [state rows, B, hidden] -> (score [B, K], h_out, same shape as h).

        Each gate is one Gemm with `step_weights()` (given as `weights`, e.g. constants of the
        exported graph), biases folded in: no Split of the gates (onnxruntime's Split copies; it cost 15-20 % of
        a step at B=1,024) and no multiply by zero. Of the forms measured for both cells (one Gemm
        over [input, h] then Split; input and h Gemms apart; one Gemm per gate; ONNX's GRU / LSTM
        operator; the heads as one Gemm), this one was the fastest for each at B = 64 and 1,024 and
        within noise of the fastest at B = 1 (benchmarks/bench_cells.py --step-only,
        docs/performance.md).
        """
        weights = self.step_weights() if weights is None else weights
        # The scaler stays two nodes (Sub, Div) with its own initializers: folding 1/scale into the
        # weights saves one node (~3 % at B=1 and 64) but leaves the bundle without its scaler, which
        # fine-tuning a deployed model (trainer/champion.py, its input noise) needs.
        z = self.scale(features)
        L = self.layers
        # The state's rows: one row is a Squeeze (a view in onnxruntime), several one Split, where
        # indexing h[k] exports as Gather (a copy per row).
        rows = [h.squeeze(0)] if self.state_rows == 1 else list(h.unbind(0))
        score_forecast: torch.Tensor | None = None
        if self.mode == "forecast":
            pred = self.forecast_head(rows[L - 1])
            err = ((z - pred) ** 2).mean(dim=-1, keepdim=True)
            score_forecast = torch.sigmoid((torch.log(err + LOG_EPS) - self.err_center) / self.err_width)
        layer_in = z
        hs, cs = [], []
        for layer, ws in enumerate(weights):
            h_prev = rows[layer]
            xh = torch.cat([layer_in, h_prev], dim=-1)
            if self.cell == "gru":  # nn.GRU: r, z, n; the reset gate applied after W_hn·h
                r = torch.sigmoid(torch.addmm(ws[1], xh, ws[0]))
                u = torch.sigmoid(torch.addmm(ws[3], xh, ws[2]))
                n = torch.tanh(torch.addmm(ws[5], layer_in, ws[4]) + r * torch.addmm(ws[7], h_prev, ws[6]))
                h_l = n + u * (h_prev - n)
            else:  # nn.LSTM: i, f, g, o
                i = torch.sigmoid(torch.addmm(ws[1], xh, ws[0]))
                f = torch.sigmoid(torch.addmm(ws[3], xh, ws[2]))
                g = torch.tanh(torch.addmm(ws[5], xh, ws[4]))
                o = torch.sigmoid(torch.addmm(ws[7], xh, ws[6]))
                c_l = f * rows[L + layer] + i * g
                h_l = o * torch.tanh(c_l)
                cs.append(c_l)
            hs.append(h_l)
            layer_in = h_l
        h_out = torch.stack(hs + cs, dim=0)
        if score_forecast is not None:
            return score_forecast, h_out
        top = hs[-1]
        cols = [torch.sigmoid(self.health_head(top))]
        if self.fault_head is not None:
            cols.append(torch.softmax(self.fault_head(top), dim=-1))
        return torch.cat(cols, dim=-1), h_out

    # ----------------------------------------------------------------- checkpoints
    def checkpoint(self) -> dict[str, Any]:
        return {"config": dict(self.config), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> HealthModel:
        cfg = dict(ckpt["config"])
        model = cls(cfg.pop("n_features"), **cfg)
        model.load_state_dict(ckpt["state_dict"])
        return model


# Older name, kept for imports written before the LSTM cell joined the module.
GruHealthModel = HealthModel


def step_weight_name(layer: int, k: int) -> str:
    """The name of layer `layer`'s k-th `step_weights` tensor in StepModule, hence in the exported
    graph's initializers (what trainer/champion.py reads back)."""
    return f"l{layer}_{k}"


class StepModule(nn.Module):
    """Wraps `model.step` as forward(features, h) for ONNX export, the `step_weights` as buffers
    named by `step_weight_name`."""

    def __init__(self, model: HealthModel) -> None:
        super().__init__()
        self.model = model
        self.counts = []
        with torch.no_grad():  # the GEMM-form weights as constants of the graph
            for layer, ws in enumerate(model.step_weights()):
                self.counts.append(len(ws))
                for k, w in enumerate(ws):
                    self.register_buffer(step_weight_name(layer, k), w.detach().clone())

    def forward(self, features: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = [
            tuple(getattr(self, step_weight_name(i, k)) for k in range(n)) for i, n in enumerate(self.counts)
        ]
        return self.model.step(features, h, weights)
