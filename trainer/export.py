"""Single-step ONNX export of a trained model, the torch/onnxruntime parity check, and bundle writing.

`export_onnx` exports `HealthModel.step` (one window: `features` [B, F], `h` [state rows, B, hidden]
-> `score` [B, K], `h_out`) with the dynamo exporter, from an example batch of 2 (a batch-1 example
can freeze the batch axis to 1), and checks the graph in onnxruntime as the agent will load it
(`edge_agent.bundle.check_shapes`: names, dynamic batch axis, shapes at B=1 and 3). `check_parity`
steps the ONNX graph over >= 1,000 windows of held-out features and compares it with torch's
full-sequence forward; the export raises `ExportError` if any score or state differs by more than
1e-5. `write_model_bundle` writes model.onnx, card.json (with `trained_on`, the windows the model
was fitted on, when given) and test_vectors.json through
`edge_agent.bundle.write_bundle`, after replaying the test vectors as the agent does at load
(`edge_agent.bundle.replay_test_vectors`), and signs with `sign_bundle` when given a key.
The graph's metadata records the buffers it holds only unnamed (`folded_buffers`): with its
initializers, the model can be read back to fine-tune (trainer/champion.py).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_agent.bundle import check_shapes, make_session, replay_test_vectors, sign_bundle, write_bundle
from edge_agent.errors import BundleError, GruwatchError
from trainer.model import HealthModel, StepModule

PARITY_ATOL = 1e-5
PARITY_STEPS = 1000
# The graph's carried-state drift may be this many times torch's own float32 drift (check_parity).
DRIFT_FACTOR = 10.0
CARD_SCHEMA = 1
# model.onnx's metadata_props key: the buffers the step graph holds only unnamed (folded_buffers).
FOLDED_KEY = "gruwatch.folded"


class ExportError(GruwatchError):
    """The exported graph is not the trained model (shapes not dynamic, or outputs differ from torch)."""

    reason = "export_failed"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter warns about internals (pytree deprecations, torchvision absence) we cannot act on."""
    names = ["torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "torch._dynamo"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def folded_buffers(model: HealthModel) -> dict[str, Any]:
    """The model's buffers that its exported step holds only as unnamed constants, as JSON (written
    under FOLDED_KEY in model.onnx's metadata; trainer/champion.py reads them back).

    The graph's initializers are the parameters that keep their names (`model.feature_mean`,
    `model.feature_scale`, the heads as `model.health_head.weight`, ...) and the cell's weights in
    step form, named by `trainer.model.step_weight_name`. Not recoverable from them: a forecast
    model's err_center / err_width (folded into unnamed constants).
    """
    out: dict[str, Any] = {}
    if model.mode == "forecast":
        out["err_center"] = float(model.err_center)
        out["err_width"] = float(model.err_width)
    return out


def step_program(step: torch.nn.Module, model: HealthModel) -> Any:
    """`step(features, h) -> (score, h_out)` of `model` exported by dynamo with a dynamic batch axis:
    the ONNX ModelProto (also how benchmarks/bench_cells.py exports its other step forms)."""
    example_batch = 2
    features = torch.zeros(example_batch, model.n_features)
    h = torch.zeros(model.state_rows, example_batch, model.hidden)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            step,
            (features, h),
            input_names=["features", "h"],
            output_names=["score", "h_out"],
            dynamo=True,
            dynamic_shapes={"features": {0: batch}, "h": {1: batch}},
            optimize=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


def export_onnx(model: HealthModel) -> bytes:
    """ONE time step of `model` as ONNX bytes with a dynamic batch axis (checked in onnxruntime)."""
    model = model.cpu().eval()
    proto = step_program(StepModule(model).eval(), model)
    proto.producer_name = "gruwatch-trainer"
    folded = proto.metadata_props.add()
    folded.key, folded.value = FOLDED_KEY, json.dumps(folded_buffers(model))
    onnx_bytes = bytes(proto.SerializeToString())
    try:
        check_shapes(make_session(onnx_bytes), model.n_features, _state_shape(model), len(model.outputs))
    except BundleError as exc:
        raise ExportError(f"the exported graph would not load in the agent: {exc}") from exc
    return onnx_bytes


def _state_shape(model: HealthModel) -> tuple[int, int]:
    return (model.state_rows, model.hidden)


def _parity_streams(held_out: Sequence[np.ndarray], steps: int, rows: int) -> np.ndarray:
    """`rows` feature streams of `steps` windows cut from the held-out runs (tiled when they are short)."""
    usable = [np.asarray(f, dtype=np.float32) for f in held_out if len(f) > 0]
    if not usable:
        raise ExportError("parity check needs held-out feature sequences; none given")
    stream = np.concatenate(usable, axis=0)
    need = steps * rows
    if len(stream) < need:
        stream = np.concatenate([stream] * (need // len(stream) + 1), axis=0)
    return stream[:need].reshape(rows, steps, stream.shape[1])


def torch_sequence(
    model: HealthModel, x: np.ndarray, h0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Full-sequence torch scores: x [B, T, F] -> (score [B, T, K], h_T [state rows, B, hidden])."""
    model = model.cpu().eval()
    with torch.no_grad():
        h = None if h0 is None else torch.as_tensor(h0, dtype=torch.float32)
        score, h_n = model(torch.as_tensor(x, dtype=torch.float32), h)
    return score.numpy(), h_n.numpy()


def onnx_sequence(session: Any, x: np.ndarray, h0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step the ONNX graph window by window: (score [B, T, K], h_T, every h_t [T, rows, B, hidden])."""
    h = np.ascontiguousarray(h0, dtype=np.float32)
    scores, states = [], []
    for t in range(x.shape[1]):
        score, h = session.run(["score", "h_out"], {"features": np.ascontiguousarray(x[:, t]), "h": h})
        scores.append(score)
        states.append(h)
    return np.stack(scores, axis=1), h, np.stack(states, axis=0)


def reference_steps(
    model: HealthModel, x: np.ndarray, h0: np.ndarray | None = None, *, dtype: torch.dtype = torch.float64
) -> tuple[np.ndarray, np.ndarray]:
    """The model's own `step` in float64: the function the graph encodes, free of float32 rounding.

    x [B, T, F] -> (score [B, T, K], states [T + 1, rows, B, hidden]: the state before each window
    and after the last), in `dtype`.
    """
    ref = copy.deepcopy(model).cpu().to(dtype).eval()
    h = ref.initial_state(x.shape[0]).to(dtype) if h0 is None else torch.as_tensor(h0, dtype=dtype)
    xs = torch.as_tensor(x, dtype=dtype)
    scores, states = [], [h]
    with torch.no_grad():
        for t in range(x.shape[1]):
            score, h = ref.step(xs[:, t], h)
            scores.append(score)
            states.append(h)
    return torch.stack(scores, dim=1).numpy(), torch.stack(states, dim=0).numpy()


def _rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max(1, |want|): absolute for scores and GRU states (|h| <= 1), relative for
    an LSTM cell state that grows beyond 1."""
    err = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))
    return float(np.max(err)) if err.size else 0.0


def check_parity(
    model: HealthModel,
    onnx_bytes: bytes,
    held_out: Sequence[np.ndarray],
    *,
    steps: int = PARITY_STEPS,
    atol: float = PARITY_ATOL,
) -> dict[str, float]:
    """Is the ONNX graph the trained model? Two checks over `steps` held-out windows, 2 sensors.

    1. The step function: every window stepped ONCE in onnxruntime from the exact state before it
       (the model's own step in float64, `reference_steps`), all in one batched call. Each score and
       state must match the exact step within `atol` (relative beyond magnitude 1). This is what the
       export must get right, and it does not depend on how the model's dynamics amplify rounding.
    2. The carried state, as the agent runs it: the graph stepped over all windows from a zero
       state, against the exact model. Float32 rounding, in torch as in onnxruntime, accumulates
       through the recurrence, by how much depends on the trained weights; so the graph's drift
       is allowed `atol` plus DRIFT_FACTOR times torch's own float32 drift from the same exact
       model (the larger of its full-sequence forward and its float32 step): the graph must be as
       close to the model as torch is.

    Returns {"steps", "max_abs_score", "max_abs_state" (the graph's carried drift), "step_error",
    "torch_drift", "allowed_drift"}; raises ExportError when either check fails.
    """
    x = _parity_streams(held_out, steps, rows=2)
    B, T, F = x.shape
    ref_score, ref_states = reference_steps(model, x)
    session = make_session(onnx_bytes)
    # 1. One step from the exact state, every window at once (batch T * B).
    h_in = ref_states[:-1].transpose(1, 0, 2, 3).reshape(model.state_rows, T * B, model.hidden)
    score1, h1 = session.run(
        ["score", "h_out"],
        {
            "features": np.ascontiguousarray(x.transpose(1, 0, 2).reshape(T * B, F)),
            "h": h_in.astype(np.float32),
        },
    )
    want_h1 = ref_states[1:].transpose(1, 0, 2, 3).reshape(model.state_rows, T * B, model.hidden)
    step_error = max(
        _rel_error(score1, ref_score.transpose(1, 0, 2).reshape(T * B, -1)), _rel_error(h1, want_h1)
    )
    if not np.isfinite(step_error) or step_error > atol:
        raise ExportError(
            f"ONNX differs from torch: one step from the same state is off by {step_error:.3g} "
            f"(allowed {atol:g}); the graph is not the trained model and the bundle was not written"
        )
    # 2. The carried state: the graph's drift from the exact model beside torch's own.
    top = model.layers - 1  # the top layer's h (GRU and LSTM: h rows come first)
    got_score, _, got_states = onnx_sequence(session, x, model.initial_state(B).numpy())
    err_score = _rel_error(got_score, ref_score)
    err_state = _rel_error(got_states[:, top], ref_states[1:, top])
    torch_score, _ = torch_sequence(model, x)
    with torch.no_grad():
        y, _ = model.recur(model.scale(torch.as_tensor(x)), model.initial_state(B))
    step32_score, step32_states = reference_steps(model, x, dtype=torch.float32)
    torch_drift = max(
        _rel_error(torch_score, ref_score),
        _rel_error(y.numpy().transpose(1, 0, 2), ref_states[1:, top]),
        _rel_error(step32_score, ref_score),
        _rel_error(step32_states[1:, top], ref_states[1:, top]),
    )
    allowed = atol + DRIFT_FACTOR * torch_drift
    drift = max(err_score, err_state)
    if not np.isfinite(drift) or drift > allowed:
        raise ExportError(
            f"ONNX differs from torch over {steps} carried steps: max |score| error {err_score:.3g}, "
            f"max |state| error {err_state:.3g} from the exact model, where torch itself drifts "
            f"{torch_drift:.3g} (allowed {allowed:.3g}); the bundle was not written"
        )
    return {
        "steps": float(steps),
        "max_abs_score": err_score,
        "max_abs_state": err_state,
        "step_error": step_error,
        "torch_drift": torch_drift,
        "allowed_drift": allowed,
    }


def make_test_vectors(
    model: HealthModel, held_out: Sequence[np.ndarray], *, count: int = 3, length: int = 16
) -> dict[str, Any]:
    """A few short held-out sequences with the exact model's outputs (`reference_steps`, float64);
    vector 1 starts from a warmed-up state."""
    stream = _parity_streams(held_out, steps=length * count + 200, rows=1)[0]
    vectors = []
    for i in range(count):
        start = 200 + i * length if i else 0
        feats = stream[start : start + length][None]
        h0 = model.initial_state(1).numpy()
        if i == 1:  # a state the agent has after 200 windows, not only the zero state
            h0 = reference_steps(model, stream[None, :200])[1][-1].astype(np.float32)
        scores, states = reference_steps(model, feats, h0)
        h_final = states[-1]
        vectors.append(
            {
                "features": feats[0].astype(np.float32).tolist(),
                "h0": h0.astype(np.float32).tolist(),
                "scores": scores[0].astype(np.float32).tolist(),
                "h_final": h_final.astype(np.float32).tolist(),
            }
        )
    return {"atol": PARITY_ATOL, "vectors": vectors}


def model_version(onnx_bytes: bytes, now: datetime | None = None) -> str:
    """e.g. '20261128T093000Z-1a2b3c4d': UTC time of export + the first 8 hex of the graph's sha256."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{hashlib.sha256(onnx_bytes).hexdigest()[:8]}"


def build_card(
    model: HealthModel,
    onnx_bytes: bytes,
    *,
    feature_spec: dict[str, Any],
    thresholds: dict[str, Any],
    validation: dict[str, Any],
    training_data: dict[str, Any],
    parent_version: str | None = None,
    training: dict[str, Any] | None = None,
    trained_on: dict[str, Any] | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    card: dict[str, Any] = {
        "schema": CARD_SCHEMA,
        "model_version": model_version(onnx_bytes, now),
        "created": now.isoformat(timespec="seconds"),
        "parent_version": parent_version,
        "mode": model.mode,
        "cell": model.cell,
        "feature_spec": feature_spec,
        "state_shape": model.state_shape,
        "outputs": model.outputs,
        "thresholds": {
            "warning": float(thresholds["warning"]),
            "alarm": float(thresholds["alarm"]),
            "raise_windows": int(thresholds["raise_windows"]),
            "clear_windows": int(thresholds["clear_windows"]),
        },
        "validation": validation,
        "training_data": training_data,
        "files": {},
    }
    if training is not None:
        card["training"] = training
    if trained_on is not None:
        card["trained_on"] = trained_on
    return card


def write_model_bundle(
    out_dir: str | Path,
    model: HealthModel,
    *,
    held_out: Sequence[np.ndarray],
    feature_spec: dict[str, Any],
    thresholds: dict[str, Any],
    validation: dict[str, Any],
    training_data: dict[str, Any],
    parent_version: str | None = None,
    training: dict[str, Any] | None = None,
    trained_on: dict[str, Any] | None = None,
    signing_key: str | Path | None = None,
    parity_steps: int = PARITY_STEPS,
) -> Path:
    """Export, check parity (raises ExportError), and write (and sign) the bundle. Returns its folder.

    `trained_on` (trainer.data.trained_on of the runs fitted and calibrated on) tells the agent which
    windows the model was made for; without it the agent checks less (docs/model-bundle.md).
    """
    model = model.cpu().eval()
    onnx_bytes = export_onnx(model)
    parity = check_parity(model, onnx_bytes, held_out, steps=parity_steps)
    vectors = make_test_vectors(model, held_out)
    try:  # what the agent checks when it loads the bundle
        replay_test_vectors(
            make_session(onnx_bytes), vectors, model.n_features, _state_shape(model), len(model.outputs)
        )
    except BundleError as exc:
        raise ExportError(f"test vectors do not replay in onnxruntime: {exc}") from exc
    validation = {**validation, "onnx_parity": parity}
    card = build_card(
        model,
        onnx_bytes,
        feature_spec=feature_spec,
        thresholds=thresholds,
        validation=validation,
        training_data=training_data,
        parent_version=parent_version,
        training=training,
        trained_on=trained_on,
    )
    path = Path(write_bundle(Path(out_dir), onnx_bytes=onnx_bytes, card=card, test_vectors=vectors))
    if signing_key is not None:
        sign_bundle(path, Path(signing_key))
    return path
