"""The health model: feature scaling as buffers, a recurrent cell (GRU or LSTM) over window features,
and its output heads.

One module serves training and export, for both cells:

- `run(x, h0)` / `forward` run whole sequences `[B, T, F]` through `nn.GRU` / `nn.LSTM` (fast to
  train) and return the same scores the exported graph produces step by step;
- `step(features, h)` is ONE time step written as plain matrix products (ONNX's GRU and LSTM
  operators are the slowest way to step a batch, see PERFORMANCE-NOTES) with the exact torch
  equations, so the exported graph matches `forward` to float32 rounding.

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

    def _gru_cell(self, layer: int, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """nn.GRU's equations for one layer and one step (gate order r, z, n; reset applied after W_hn)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer)
        gi = torch.matmul(x, w_ih.t()) + b_ih
        gh = torch.matmul(h, w_hh.t()) + b_hh
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        u = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + u * (h - n)

    def _lstm_cell(
        self, layer: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """nn.LSTM's equations for one layer and one step (gate order i, f, g, o)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer)
        gates = torch.matmul(x, w_ih.t()) + b_ih + torch.matmul(h, w_hh.t()) + b_hh
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    def step(self, features: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ONE step: features [B, F], h [state rows, B, hidden] -> (score [B, K], h_out, same shape as h)."""
        z = self.scale(features)
        L = self.layers
        score_forecast: torch.Tensor | None = None
        if self.mode == "forecast":
            pred = self.forecast_head(h[L - 1])
            err = ((z - pred) ** 2).mean(dim=-1, keepdim=True)
            score_forecast = torch.sigmoid((torch.log(err + LOG_EPS) - self.err_center) / self.err_width)
        layer_in = z
        hs, cs = [], []
        for layer in range(L):
            if self.cell == "gru":
                h_l = self._gru_cell(layer, layer_in, h[layer])
            else:
                h_l, c_l = self._lstm_cell(layer, layer_in, h[layer], h[L + layer])
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


class StepModule(nn.Module):
    """Wraps `model.step` as forward(features, h) for ONNX export."""

    def __init__(self, model: HealthModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.step(features, h)
