"""The torch model inside a deployed bundle, for fine-tuning: weights read back from model.onnx.

A bundle carries no torch checkpoint, only the single-step ONNX graph. Its initializers are the
model's parameters: most keep their module name (`model.gru.bias_ih_l0`, `model.health_head.weight`,
`model.feature_mean`, ...), while the exporter folds the GRU's weight matrices into anonymous
transposes (`t`, `t_1`, ...). `model_from_bundle` rebuilds `HealthModel` from the card (cell,
mode, state shape, outputs), loads the named tensors, assigns the anonymous ones by shape (trying every
assignment when shapes tie, e.g. hidden = features), and accepts the result only if it reproduces
the ONNX graph step by step on random inputs; otherwise it raises `ChampionError`, whose message
says to retrain `--from-scratch`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_agent.errors import GruwatchError
from trainer.metrics import cell_of
from trainer.model import HealthModel

MATCH_ATOL = 1e-4
MAX_ASSIGNMENTS = 720


class ChampionError(GruwatchError):
    """The bundle's ONNX graph could not be turned back into a trainable model."""


def _initializers(onnx_path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_path))
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def _skeleton(card: dict[str, Any], n_features: int) -> HealthModel:
    rows, hidden = (int(v) for v in card["state_shape"])
    cell = cell_of(card)
    layers = rows if cell == "gru" else rows // 2  # an LSTM's state holds h and c of every layer
    outputs = list(card.get("outputs") or ["health"])
    classes = tuple(o[2:] for o in outputs[1:] if o.startswith("p_"))
    mode = str(card.get("mode") or "supervised")
    return HealthModel(n_features, cell=cell, hidden=hidden, layers=layers, mode=mode, fault_classes=classes)


def _matches(model: HealthModel, session: Any, n_features: int, steps: int = 12) -> float:
    """Largest |torch step − ONNX step| over `steps` random windows of 3 sensors (scores and states)."""
    rng = np.random.default_rng(0)
    mean = model.feature_mean.numpy()
    scale = model.feature_scale.numpy()
    h_t = model.initial_state(3)
    h_o = np.zeros((model.state_rows, 3, model.hidden), np.float32)
    worst = 0.0
    model.eval()
    with torch.no_grad():
        for _ in range(steps):
            x = (mean + scale * rng.standard_normal((3, n_features))).astype(np.float32)
            s_t, h_t = model.step(torch.as_tensor(x), h_t)
            s_o, h_o = session.run(["score", "h_out"], {"features": x, "h": h_o})
            worst = max(
                worst, float(np.max(np.abs(s_t.numpy() - s_o))), float(np.max(np.abs(h_t.numpy() - h_o)))
            )
    return worst


def model_from_bundle(bundle: Any) -> HealthModel:
    """The bundle's model as a trainable `HealthModel` (checked against its ONNX graph)."""
    card = bundle.card
    n_features = int(bundle.n_features)
    model = _skeleton(card, n_features)
    inits = _initializers(Path(bundle.path) / "model.onnx")
    state = model.state_dict()
    loaded: set[str] = set()
    for name, tensor in state.items():
        arr = inits.get(f"model.{name}")
        if arr is not None and tuple(arr.shape) == tuple(tensor.shape):
            state[name] = torch.as_tensor(arr.copy())
            loaded.add(name)
    if model.mode == "forecast":
        cal = (card.get("validation") or {}).get("error_calibration") or {}
        for name, key in (("err_center", "log_error_q99"), ("err_width", "width")):
            if name not in loaded and key in cal:
                state[name] = torch.tensor(float(cal[key]))
                loaded.add(name)
    missing = [n for n in state if n not in loaded]
    named = {f"model.{n}" for n in loaded}
    spare = [(k, v) for k, v in inits.items() if k not in named and v.ndim == 2]
    slots = [n for n in missing if n.startswith(f"{model.cell}.weight_")]
    other = [n for n in missing if n not in slots]
    if other:
        raise ChampionError(
            f"{bundle.path}: model.onnx lacks {', '.join(other)}; it was not exported by this trainer's "
            "HealthModel, so it cannot be fine-tuned; retrain with --from-scratch"
        )
    # The recurrent weights: anonymous transposes, assigned by shape; every assignment is checked below.
    options = [[k for k, v in spare if tuple(v.T.shape) == tuple(state[n].shape)] for n in slots]
    tried = 0
    worst = float("inf")
    for pick in itertools.product(*options):
        if len(set(pick)) != len(pick):
            continue
        tried += 1
        if tried > MAX_ASSIGNMENTS:
            break
        for n, k in zip(slots, pick, strict=True):
            state[n] = torch.as_tensor(np.ascontiguousarray(inits[k].T))
        model.load_state_dict(state)
        worst = min(worst, _matches(model, bundle.session, n_features))
        if worst <= MATCH_ATOL:
            return model
    raise ChampionError(
        f"{bundle.path}: could not read the model's weights back from model.onnx (best match "
        f"{worst:.2g} after {tried} assignments); fine-tuning needs them: retrain with --from-scratch"
    )
