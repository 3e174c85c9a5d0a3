"""Small real one-step GRU ONNX models and bundles for tests, built with onnx.helper (no torch needed).

The graph is what the trainer exports (docs/model-bundle.md): feature scaling, `nn.GRU`-equivalent
layers as ONNX GRU operators with linear_before_reset=1, and a linear + sigmoid head on the last
layer's new state. `GruParams` keeps weights in torch's layout (gates r, z, n) so a test can copy an
`nn.GRU`'s weights in, and `reference_step` is the GRU written out in numpy, independent of ONNX:

    r = σ(W_ir x + b_ir + W_hr h + b_hr)
    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class GruParams:
    """Weights of a scaled-input GRU with a sigmoid head, torch layout (gate rows r, z, n)."""

    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]
    w_ih: list[np.ndarray]  # per layer [3H, in]
    w_hh: list[np.ndarray]  # per layer [3H, H]
    b_ih: list[np.ndarray]  # per layer [3H]
    b_hh: list[np.ndarray]  # per layer [3H]
    w_out: np.ndarray  # [K, H]
    b_out: np.ndarray  # [K]

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.w_hh[0].shape[1])

    @property
    def layers(self) -> int:
        return len(self.w_ih)

    @property
    def n_outputs(self) -> int:
        return int(self.w_out.shape[0])

    @classmethod
    def random(
        cls, F: int, H: int = 8, layers: int = 1, K: int = 2, seed: int = 0, scale: float = 0.6
    ) -> GruParams:
        rng = np.random.default_rng(seed)

        def u(*shape: int) -> np.ndarray:
            return (rng.uniform(-1.0, 1.0, size=shape) * scale).astype(np.float32)

        ins = [F] + [H] * (layers - 1)
        return cls(
            mean=rng.normal(0.0, 0.5, size=F).astype(np.float32),
            std=rng.uniform(0.5, 2.0, size=F).astype(np.float32),
            w_ih=[u(3 * H, i) for i in ins],
            w_hh=[u(3 * H, H) for _ in range(layers)],
            b_ih=[u(3 * H) for _ in range(layers)],
            b_hh=[u(3 * H) for _ in range(layers)],
            w_out=u(K, H) * 2,
            b_out=u(K),
        )


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def reference_step(p: GruParams, x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step in float64 numpy: x [B, F], h [layers, B, H] -> (score [B, K], h_out [layers, B, H])."""
    H = p.hidden
    inp = (np.asarray(x, np.float64) - p.mean) / p.std
    h = np.asarray(h, np.float64)
    h_out = np.empty_like(h)
    for layer in range(p.layers):
        gi = inp @ p.w_ih[layer].T.astype(np.float64) + p.b_ih[layer]
        gh = h[layer] @ p.w_hh[layer].T.astype(np.float64) + p.b_hh[layer]
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h_out[layer] = (1.0 - z) * n + z * h[layer]
        inp = h_out[layer]
    score = _sigmoid(inp @ p.w_out.T.astype(np.float64) + p.b_out)
    return score, h_out


def _torch_to_onnx_gates(a: np.ndarray, H: int) -> np.ndarray:
    """Rows r, z, n (torch) -> z, r, h (ONNX GRU)."""
    return np.concatenate([a[H : 2 * H], a[:H], a[2 * H :]], axis=0)


def build_step_model(p: GruParams, *, batch_dim: str | int = "batch") -> bytes:
    """The one-step ONNX model: (features [B, F], h [L, B, H]) -> (score [B, K], h_out [L, B, H])."""
    F, H, L, K = p.n_features, p.hidden, p.layers, p.n_outputs
    inits = [
        numpy_helper.from_array(p.mean.astype(np.float32), "mean"),
        numpy_helper.from_array(p.std.astype(np.float32), "std"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(p.w_out.astype(np.float32), "w_out"),
        numpy_helper.from_array(p.b_out.astype(np.float32), "b_out"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["x0"]),
    ]
    x, finals = "x0", []
    for layer in range(L):
        W = _torch_to_onnx_gates(p.w_ih[layer], H)[None]
        R = _torch_to_onnx_gates(p.w_hh[layer], H)[None]
        B = np.concatenate([_torch_to_onnx_gates(p.b_ih[layer], H), _torch_to_onnx_gates(p.b_hh[layer], H)])[
            None
        ]
        inits += [
            numpy_helper.from_array(W.astype(np.float32), f"W{layer}"),
            numpy_helper.from_array(R.astype(np.float32), f"R{layer}"),
            numpy_helper.from_array(B.astype(np.float32), f"B{layer}"),
            numpy_helper.from_array(np.array([layer], dtype=np.int64), f"start{layer}"),
            numpy_helper.from_array(np.array([layer + 1], dtype=np.int64), f"end{layer}"),
        ]
        nodes += [
            helper.make_node("Unsqueeze", [x, "axis0"], [f"seq{layer}"]),
            helper.make_node("Slice", ["h", f"start{layer}", f"end{layer}", "axis0"], [f"h{layer}"]),
            helper.make_node(
                "GRU",
                [f"seq{layer}", f"W{layer}", f"R{layer}", f"B{layer}", "", f"h{layer}"],
                [f"y{layer}", f"hn{layer}"],
                hidden_size=H,
                linear_before_reset=1,
            ),
            helper.make_node("Squeeze", [f"hn{layer}", "axis0"], [f"x{layer + 1}"]),
        ]
        x = f"x{layer + 1}"
        finals.append(f"hn{layer}")
    nodes += [
        helper.make_node("Concat", finals, ["h_out"], axis=0)
        if L > 1
        else helper.make_node("Identity", finals, ["h_out"]),
        helper.make_node("Gemm", [x, "w_out", "b_out"], ["logits"], transB=1),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gru_step",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch_dim, F]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [L, batch_dim, H]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch_dim, K]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [L, batch_dim, H]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gru_fixtures"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_test_vectors(
    p: GruParams, *, n: int = 2, steps: int = 5, seed: int = 1, atol: float = 1e-5
) -> dict[str, Any]:
    """Test vectors computed with the numpy reference (not with onnxruntime)."""
    rng = np.random.default_rng(seed)
    vectors = []
    for v in range(n):
        x = rng.normal(0.0, 1.5, size=(steps, p.n_features)).astype(np.float32)
        h0 = (
            np.zeros((p.layers, 1, p.hidden), np.float32)
            if v == 0
            else rng.uniform(-0.5, 0.5, size=(p.layers, 1, p.hidden)).astype(np.float32)
        )
        h = h0.astype(np.float64)
        scores = []
        for t in range(steps):
            s, h = reference_step(p, x[t : t + 1], h)
            scores.append(s[0])
        vectors.append(
            {
                "features": x.tolist(),
                "h0": h0.tolist(),
                "scores": np.asarray(scores).tolist(),
                "h_final": h.tolist(),
            }
        )
    return {"atol": atol, "vectors": vectors}


def make_card(
    p: GruParams,
    feature_spec: dict[str, Any],
    *,
    model_version: str = "test-1",
    thresholds: dict[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A schema-1 card for `p` (without "files": write_bundle fills it)."""
    names = list(outputs) if outputs is not None else ["health"] + [f"p_{i}" for i in range(1, p.n_outputs)]
    return {
        "schema": 1,
        "model_version": model_version,
        "created": _dt.datetime(2026, 11, 28, 9, 0, tzinfo=_dt.UTC).isoformat(),
        "parent_version": None,
        "mode": "supervised",
        "feature_spec": feature_spec,
        "state_shape": [p.layers, p.hidden],
        "outputs": names,
        "thresholds": thresholds or {"warning": 0.5, "alarm": 0.8, "raise_windows": 2, "clear_windows": 3},
        "validation": {"note": "test fixture"},
        "training_data": {"fingerprint": "0" * 64, "runs": 0, "sources": ["fixture"]},
    }


def default_feature_spec() -> tuple[dict[str, Any], int]:
    """(DEFAULT_SPEC.to_dict(), n_features) from edge_agent.features."""
    from edge_agent.features import DEFAULT_SPEC

    return DEFAULT_SPEC.to_dict(), int(DEFAULT_SPEC.n_features)


def build_bundle(
    out_dir: Path,
    *,
    hidden: int = 8,
    layers: int = 1,
    outputs: int = 2,
    seed: int = 0,
    thresholds: dict[str, Any] | None = None,
    params: GruParams | None = None,
    model_version: str = "test-1",
) -> tuple[Path, GruParams]:
    """An unsigned, valid bundle for DEFAULT_SPEC; returns (folder, params)."""
    from edge_agent.bundle import write_bundle

    spec, F = default_feature_spec()
    p = params or GruParams.random(F, hidden, layers, outputs, seed)
    card = make_card(p, spec, thresholds=thresholds, model_version=model_version)
    path = write_bundle(out_dir, onnx_bytes=build_step_model(p), card=card, test_vectors=make_test_vectors(p))
    return path, p


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2))
