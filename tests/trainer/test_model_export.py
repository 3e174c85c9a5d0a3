"""The GRU model's step form, its single-step ONNX export, the parity check and the bundle files."""

from __future__ import annotations

import copy
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
from trainer.model import HealthModel, step_weight_name

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


# --------------------------------------------------------------------------- parity over many models
def _graph_constants(model: HealthModel) -> dict[str, np.ndarray]:
    """What the exported graph holds: the scaler and heads, and the cell's weights in step (GEMM) form."""
    out = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith(f"{model.cell}.")}
    for layer, ws in enumerate(model.step_weights()):
        out.update({step_weight_name(layer, k): w.detach().numpy() for k, w in enumerate(ws)})
    return out


def _carrying(proto: onnx.ModelProto, exported: HealthModel, model: HealthModel) -> bytes:
    """The graph exported from `exported`, with `model`'s weights (same architecture) in its
    initializers: one export serves many models (an export takes seconds)."""
    base, new = _graph_constants(exported), _graph_constants(model)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    replaced = 0
    for init in out.graph.initializer:
        arr = numpy_helper.to_array(init)
        for name, value in base.items():
            if value.shape == arr.shape and np.array_equal(value, arr):
                init.CopyFrom(numpy_helper.from_array(new[name].astype(arr.dtype), init.name))
            elif value.ndim == 2 and value.T.shape == arr.shape and np.array_equal(value.T, arr):
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new[name].T), init.name))
            else:
                continue
            replaced += 1
            break
    assert replaced == len(base) - (2 if model.mode == "forecast" else 0)
    return out.SerializeToString()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_parity_holds_over_many_seeds_and_recurrent_gains(cell: str) -> None:
    """Issue 9: retrained bundles failed an absolute 1e-5 on the carried state (4.3e-5) although the
    graph was right: float32 rounding accumulates through the recurrence by an amount the weights
    decide. The check now compares one step from the exact state (tight) and the carried state
    against torch's own float32 drift; it must pass for every healthy model, however its dynamics
    amplify rounding, and still refuse a wrong graph."""
    layers, hidden = 2, 16
    torch.manual_seed(0)
    exported = HealthModel(F, cell=cell, hidden=hidden, layers=layers, fault_classes=("a", "b"))
    exported.set_scaler(np.arange(F) * 0.1, np.linspace(0.5, 2.0, F))
    proto = onnx.load_from_string(export_onnx(exported.eval()))
    held_out = [_feats(700, 1), _feats(400, 2)]
    drifts = []
    for seed in range(5):
        for gain in (1.0, 6.0, 12.0):  # recurrent weights scaled up amplify rounding
            torch.manual_seed(100 + seed)
            model = HealthModel(F, cell=cell, hidden=hidden, layers=layers, fault_classes=("a", "b"))
            model.set_scaler(np.random.default_rng(seed).normal(size=F), np.linspace(0.5, 2.0, F))
            with torch.no_grad():
                for layer in range(layers):
                    getattr(model.rnn, f"weight_hh_l{layer}").mul_(gain)
            report = check_parity(model.eval(), _carrying(proto, exported, model), held_out)
            assert report["step_error"] <= 1e-5, (seed, gain, report)
            drifts.append(max(report["max_abs_score"], report["max_abs_state"]))
    # The sweep reaches the models an absolute 1e-5 on the carried state refused, and tame ones.
    assert max(drifts) > 1e-5
    assert min(drifts) < 1e-6
    # A wrong graph is still refused: one recurrent weight off by 1e-3.
    torch.manual_seed(100)
    model = HealthModel(F, cell=cell, hidden=hidden, layers=layers, fault_classes=("a", "b")).eval()
    model.set_scaler(np.zeros(F), np.ones(F))
    wrong = HealthModel.from_checkpoint(model.checkpoint()).eval()
    with torch.no_grad():
        wrong.rnn.weight_hh_l0[0, 0] += 1e-3
    with pytest.raises(ExportError, match="one step from the same state"):
        check_parity(model, _carrying(proto, exported, wrong), held_out)


# --------------------------------------------------------------------------- the exported form
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_exported_form_reads_state_rows_without_copies_and_matches_nn_rnn(cell: str) -> None:
    """Issue 12: the step graph reads one state row by Squeeze (a view) and several by one Split,
    not by a Gather (a copy) per row, and keeps its scaler as named initializers (fine-tuning reads
    it back). It must still be torch's nn.GRU / nn.LSTM to 1e-5, also for features whose mean lies
    far above their spread and whose spreads span six decades."""
    torch.manual_seed(7)
    model = HealthModel(F, cell=cell, hidden=16, layers=1, fault_classes=("a", "b", "c"))
    spread = np.logspace(-3, 3, F)
    mean = np.linspace(-50.0, 400.0, F) * spread
    model.set_scaler(mean, spread)
    model.fused = False  # the sequence forward through torch's own nn.GRU / nn.LSTM
    model.eval()
    onnx_bytes = export_onnx(model)
    proto = onnx.load_from_string(onnx_bytes)
    ops = [n.op_type for n in proto.graph.node]
    assert "Gather" not in ops
    assert ("Squeeze" if cell == "gru" else "Slice") in ops
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    np.testing.assert_array_equal(inits["model.feature_scale"], spread.astype(np.float32))
    np.testing.assert_array_equal(inits["model.feature_mean"], mean.astype(np.float32))
    rng = np.random.default_rng(3)
    x = mean + spread * rng.normal(size=(3, 200, F))  # [B, T, F] around each feature's mean
    exact = copy.deepcopy(model).double()
    L = model.state_rows
    with torch.no_grad():
        ref_score, _ = exact(torch.as_tensor(x), torch.zeros(L, 3, 16, dtype=torch.float64))
        h = torch.zeros(L, 3, 16, dtype=torch.float64)
        ref_states = []
        for t in range(x.shape[1]):  # nn.GRU / nn.LSTM one window at a time: the state before each
            ref_states.append(h)
            _, h = exact(torch.as_tensor(x[:, t : t + 1]), h)
    session = make_session(onnx_bytes)
    # One step from torch's exact state, every window: the graph is nn.GRU / nn.LSTM to 1e-5.
    for t in range(0, x.shape[1], 7):
        score, _ = session.run(
            ["score", "h_out"],
            {"features": x[:, t].astype(np.float32), "h": ref_states[t].numpy().astype(np.float32)},
        )
        assert np.max(np.abs(score - ref_score[:, t].numpy())) <= 1e-5, t
    # And carried from a zero state as the agent runs it.
    got, _, _ = onnx_sequence(session, x.astype(np.float32), np.zeros((L, 3, 16), np.float32))
    assert np.max(np.abs(got - ref_score.numpy())) <= 1e-5
