"""The torch model inside a deployed bundle, for fine-tuning: weights read back from model.onnx.

A bundle carries no torch checkpoint, only the single-step ONNX graph. `model_from_bundle`
rebuilds `HealthModel` from the card (cell, mode, state shape, outputs), loads its weights from the
graph's initializers and accepts the result only if it reproduces the ONNX graph step by step on
random inputs (within MATCH_ATOL); otherwise it raises `ChampionError`, whose message says to
retrain `--from-scratch`. Two export forms are read:

- **Step form** (today's exporter, since 34eecbb): the scaler and heads keep their names
  (`model.feature_mean`, `model.feature_scale`, `model.health_head.weight`, ...); the cell's
  weights are one Gemm (W, b) per gate, named by `trainer.model.step_weight_name` (`l0_0`,
  `l0_1`, ...), and go back into weight_ih / weight_hh / bias_ih / bias_hh by
  `HealthModel.load_step_weights`. A forecast model's error calibration, unnamed in the graph, is
  in model.onnx's metadata (`trainer.export.folded_buffers`) or, for graphs exported before that,
  the card's `validation.error_calibration`. A supervised graph exported between 487f6b6 and
  637a899 folds 1/feature_scale into layer 0's input weights and holds no feature_scale: it reads
  back with feature_scale = 1 and the folded weights as they are, the same function (checked),
  but training noise (`--input-noise`) is then drawn in raw feature units.
- **Older form** (the shipped demo bundle, bundles deployed before 34eecbb): the cell's biases
  named (`model.gru.bias_ih_l0`), its weight matrices anonymous transposes (`t`, `t_1`, ...),
  assigned by shape, trying every assignment when shapes tie (e.g. hidden = features).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_agent.errors import GruwatchError
from trainer.export import FOLDED_KEY
from trainer.metrics import cell_of
from trainer.model import HealthModel, step_weight_name

MATCH_ATOL = 1e-4
MAX_ASSIGNMENTS = 720


class ChampionError(GruwatchError):
    """The bundle's ONNX graph could not be turned back into a trainable model."""


def _graph(onnx_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The graph's initializers by name, and its folded buffers (FOLDED_KEY; {} if absent)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        folded = json.loads(meta.get(FOLDED_KEY, "{}"))
    except ValueError as exc:
        raise ChampionError(f"{onnx_path}: unreadable {FOLDED_KEY} metadata ({exc})") from exc
    return inits, folded if isinstance(folded, dict) else {}


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


def _named(
    model: HealthModel, inits: dict[str, np.ndarray], folded: dict[str, Any], card: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The model's state dict with what the graph holds by name, the folded buffers and (older
    forecast bundles) the card's error calibration; and the names so loaded."""
    state = model.state_dict()
    loaded: set[str] = set()
    for name, tensor in state.items():
        arr = inits.get(f"model.{name}")
        if arr is None and name in folded:
            arr = np.asarray(folded[name], dtype=np.float32)
        if arr is not None and tuple(arr.shape) == tuple(tensor.shape):
            state[name] = torch.as_tensor(arr.copy())
            loaded.add(name)
    if model.mode == "forecast":
        cal = (card.get("validation") or {}).get("error_calibration") or {}
        for name, key in (("err_center", "log_error_q99"), ("err_width", "width")):
            if name not in loaded and key in cal:
                state[name] = torch.tensor(float(cal[key]))
                loaded.add(name)
    return state, loaded


def _lacks(bundle: Any, names: list[str]) -> ChampionError:
    return ChampionError(
        f"{bundle.path}: model.onnx lacks {', '.join(names)}; it was not exported by this trainer's "
        "HealthModel, so it cannot be fine-tuned; retrain with --from-scratch"
    )


def _step_form(bundle: Any, model: HealthModel, inits: dict[str, np.ndarray], folded: dict[str, Any]) -> None:
    """Load a step-form graph (module docstring) into `model`; the caller checks the result."""
    state, loaded = _named(model, inits, folded, bundle.card)
    cell_params = {n for n in state if n.startswith(f"{model.cell}.")}
    if model.mode == "supervised" and "feature_scale" not in loaded:
        loaded.add("feature_scale")  # folded into l0's input weights (487f6b6): scale 1 computes the same
    missing = [n for n in state if n not in loaded and n not in cell_params]
    shapes = model.step_weights()  # the skeleton's own step form: how many tensors, which shapes
    names = [step_weight_name(layer, k) for layer, ws in enumerate(shapes) for k in range(len(ws))]
    want = {n: tuple(w.shape) for n, w in zip(names, (w for ws in shapes for w in ws), strict=True)}
    missing += [n for n, shape in want.items() if n not in inits or tuple(inits[n].shape) != shape]
    if missing:
        raise _lacks(bundle, missing)
    model.load_state_dict(state)
    weights = [
        tuple(torch.as_tensor(inits[step_weight_name(layer, k)].copy()) for k in range(len(ws)))
        for layer, ws in enumerate(shapes)
    ]
    model.load_step_weights(weights)


def _older_form(bundle: Any, model: HealthModel, inits: dict[str, np.ndarray]) -> HealthModel:
    """Load an older-form graph (module docstring): named biases, matrices assigned by shape."""
    n_features = int(bundle.n_features)
    state, loaded = _named(model, inits, {}, bundle.card)
    missing = [n for n in state if n not in loaded]
    named = {f"model.{n}" for n in loaded}
    spare = [(k, v) for k, v in inits.items() if k not in named and v.ndim == 2]
    slots = [n for n in missing if n.startswith(f"{model.cell}.weight_")]
    other = [n for n in missing if n not in slots]
    if other:
        raise _lacks(bundle, other)
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


def model_from_bundle(bundle: Any) -> HealthModel:
    """The bundle's model as a trainable `HealthModel` (checked against its ONNX graph)."""
    n_features = int(bundle.n_features)
    model = _skeleton(bundle.card, n_features)
    inits, folded = _graph(Path(bundle.path) / "model.onnx")
    if step_weight_name(0, 0) not in inits:
        return _older_form(bundle, model, inits)
    _step_form(bundle, model, inits, folded)
    worst = _matches(model, bundle.session, n_features)
    if not worst <= MATCH_ATOL:
        raise ChampionError(
            f"{bundle.path}: the weights read back from model.onnx do not reproduce its graph (off by "
            f"{worst:.2g}, allowed {MATCH_ATOL:g}); fine-tuning needs them: retrain with --from-scratch"
        )
    return model
