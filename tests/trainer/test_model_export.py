"""The GRU model's step form, its single-step ONNX export, the parity check and the bundle files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edge_agent.bundle import make_session, replay_test_vectors
from edge_agent.errors import BundleError
from trainer.export import (
    ExportError,
    check_parity,
    export_onnx,
    make_test_vectors,
    onnx_sequence,
    torch_sequence,
    write_model_bundle,
)
from trainer.model import HealthModel

torch.set_num_threads(1)
F = 6


def _model(mode: str, layers: int = 1, faults: tuple[str, ...] = ()) -> HealthModel:
    torch.manual_seed(3)
    m = HealthModel(F, hidden=8, layers=layers, mode=mode, fault_classes=faults)
    rng = np.random.default_rng(0)
    m.set_scaler(rng.normal(size=F), rng.uniform(0.5, 2.0, size=F))
    if mode == "forecast":
        m.set_error_calibration(0.3, 0.7)
    return m.eval()


def _feats(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, F)) * 2 + 1).astype(np.float32)


@pytest.mark.parametrize(
    ("mode", "layers", "faults"),
    [("supervised", 1, ()), ("supervised", 2, ("healthy", "outer", "inner")), ("forecast", 2, ())],
)
def test_step_matches_sequence_forward(mode: str, layers: int, faults: tuple[str, ...]) -> None:
    m = _model(mode, layers, faults)
    x = torch.as_tensor(np.stack([_feats(30, 1), _feats(30, 2), _feats(30, 3)]))
    with torch.no_grad():
        ref, h_ref = m(x)
        h = m.initial_state(3)
        steps = []
        for t in range(30):
            s, h = m.step(x[:, t], h)
            steps.append(s)
    got = torch.stack(steps, dim=1)
    assert got.shape == (3, 30, 1 + len(faults))
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(h, h_ref, atol=1e-6)
    assert float(got[..., 0].min()) >= 0.0
    assert float(got[..., 0].max()) <= 1.0
    if faults:
        assert torch.allclose(got[..., 1:].sum(-1), torch.ones(3, 30), atol=1e-5)


def test_checkpoint_round_trip() -> None:
    m = _model("forecast", 2)
    again = HealthModel.from_checkpoint(m.checkpoint()).eval()
    x = torch.as_tensor(_feats(10))[None]
    with torch.no_grad():
        assert torch.equal(m(x)[0], again(x)[0])
    assert again.config == m.config


@pytest.mark.parametrize("mode", ["supervised", "forecast"])
def test_export_is_dynamic_and_matches_torch(mode: str) -> None:
    faults = ("healthy", "outer", "ball") if mode == "supervised" else ()
    m = _model(mode, 2, faults)
    onnx_bytes = export_onnx(m)
    proto = onnx.load_from_string(onnx_bytes)
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*proto.graph.input, *proto.graph.output]
    }
    assert isinstance(dims["features"][0], str)
    assert dims["features"][1] == F
    assert isinstance(dims["h"][1], str)
    assert dims["h"][0] == 2
    assert dims["score"][1] == 1 + len(faults)
    assert "GRU" not in {n.op_type for n in proto.graph.node}  # plain matmuls: faster to step in batches
    # Any batch size works, including 1 and 5, and matches torch.
    session = make_session(onnx_bytes)
    for batch in (1, 5):
        x = np.stack([_feats(40, seed) for seed in range(batch)])
        ref, h_ref = torch_sequence(m, x)
        got, h_got, _ = onnx_sequence(session, x, np.zeros((2, batch, 8), np.float32))
        assert np.max(np.abs(got - ref)) <= 1e-5
        assert np.max(np.abs(h_got - h_ref)) <= 1e-5
    report = check_parity(m, onnx_bytes, [_feats(300), _feats(500, 9)])
    assert report["steps"] == 1000
    assert report["max_abs_score"] <= 1e-5
    assert report["max_abs_state"] <= 1e-5


def test_parity_check_raises_on_a_perturbed_graph() -> None:
    m = _model("supervised", 1)
    onnx_bytes = export_onnx(m)
    proto = onnx.load_from_string(onnx_bytes)
    # Nudge the largest initializer (a GRU weight matrix) slightly.
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 1e-2
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(m, proto.SerializeToString(), [_feats(200)])


def test_test_vectors_replay_and_carry_a_warm_state() -> None:
    m = _model("forecast", 1)
    onnx_bytes = export_onnx(m)
    vectors = make_test_vectors(m, [_feats(400)])
    assert vectors["atol"] == 1e-5
    assert len(vectors["vectors"]) == 3
    assert np.abs(np.asarray(vectors["vectors"][1]["h0"])).max() > 0.0
    v0 = vectors["vectors"][0]
    assert np.asarray(v0["features"]).shape == (16, F)
    assert np.asarray(v0["scores"]).shape == (16, 1)
    assert np.asarray(v0["h_final"]).shape == (1, 1, 8)
    session = make_session(onnx_bytes)
    assert replay_test_vectors(session, vectors, F, (1, 8), 1) == 3 * 16  # every step within atol
    v0["scores"][3][0] += 0.01
    with pytest.raises(BundleError, match="step 3: scores differ"):
        replay_test_vectors(session, vectors, F, (1, 8), 1)


def test_write_model_bundle_files(tmp_path: pytest.TempPathFactory) -> None:
    m = _model("supervised", 1, ("healthy", "outer"))
    out = write_model_bundle(
        tmp_path / "bundle",  # type: ignore[operator]
        m,
        held_out=[_feats(700)],
        feature_spec={"name": "test", "version": 1},
        thresholds={"warning": 0.3, "alarm": 0.6, "raise_windows": 2, "clear_windows": 3},
        validation={"auroc": 0.5},
        training_data={"fingerprint": "0" * 64, "runs": 1, "sources": ["sim"]},
        parent_version="parent-1",
    )
    card = json.loads((out / "card.json").read_text())
    assert card["schema"] == 1
    assert card["mode"] == "supervised"
    assert card["outputs"] == ["health", "p_healthy", "p_outer"]
    assert card["state_shape"] == [1, 8]
    assert card["parent_version"] == "parent-1"
    assert card["thresholds"]["raise_windows"] == 2
    assert card["validation"]["onnx_parity"]["max_abs_score"] <= 1e-5
    assert set(card["files"]) >= {"model.onnx", "test_vectors.json"}
    import hashlib

    assert card["files"]["model.onnx"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert card["model_version"].endswith(card["files"]["model.onnx"][:8])
    tv = json.loads((out / "test_vectors.json").read_text())
    assert replay_test_vectors(make_session((out / "model.onnx").read_bytes()), tv, F, (1, 8), 3) == 48
