"""The check suite every scorer passes (edge_agent.scorer_checks) on every variant, plus the Scorer's own
behaviour: ONNX against numpy and torch, the bounded state table, alarms, windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.alarms import STATE_NAMES, Thresholds
from edge_agent.bundle import load_bundle
from edge_agent.features import extract
from edge_agent.protocol import Window
from edge_agent.scorer import ScoreBatch, Scorer
from edge_agent.scorer_checks import Check, check_deterministic, check_sensors_independent, yield_checks
from tests.edge_agent.gru_fixtures import (
    GruParams,
    build_bundle,
    build_step_model,
    default_feature_spec,
    reference_step,
)
from tests.edge_agent.test_alarms import reference_states

F = default_feature_spec()[1]


@dataclass
class Case:
    name: str
    hidden: int
    layers: int
    outputs: int


CASES = [Case("h8-l1-k2", 8, 1, 2), Case("h6-l2-k3", 6, 2, 3), Case("h4-l1-k1", 4, 1, 1)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def bundle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, GruParams]:
    c: Case = request.param
    return build_bundle(tmp_path_factory.mktemp(c.name), hidden=c.hidden, layers=c.layers, outputs=c.outputs)


def new_scorer(bundle: tuple[Path, GruParams], **kw: object) -> Scorer:
    return Scorer.from_bundle(bundle[0], allow_unsigned=True, **kw)  # type: ignore[arg-type]


def feats(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.5, size=(n, F)).astype(np.float32)


def test_constructor_only_stores_arguments(bundle: tuple[Path, GruParams]) -> None:
    b = load_bundle(bundle[0], allow_unsigned=True)
    s = Scorer(
        b.session,
        spec=b.spec,
        state_shape=b.state_shape,
        outputs=b.outputs,
        thresholds=b.thresholds,
        model_version=b.model_version,
    )
    assert s.session is b.session
    assert s.n_tracked == 0
    empty = s.score_features([], np.zeros((0, F), np.float32))
    assert len(empty) == 0
    assert empty.scores.shape == (0, len(s.outputs))
    assert s.n_tracked == 0
    assert s.table.data.size == 0  # nothing allocated until a sensor arrives


# ----------------------------------------------------------------------------- the check suite

#: Every scorer variant the suite runs on: model shapes (the `bundle` fixture) x how it is built.
VARIANTS = {
    "from_bundle": lambda b: lambda: new_scorer(b),
    "from_loaded": lambda b: lambda: Scorer.from_loaded(load_bundle(b[0], allow_unsigned=True)),
    "bounded_8": lambda b: lambda: new_scorer(b, max_sensors=8),
    "own_clock": lambda b: lambda: new_scorer(b, clock=lambda: 0.0),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("check", list(yield_checks()), ids=lambda c: c.__name__)
def test_check_suite(bundle: tuple[Path, GruParams], variant: str, check: Check) -> None:
    check(VARIANTS[variant](bundle))


def test_check_suite_catches_a_scorer_that_leaks_between_sensors(bundle: tuple[Path, GruParams]) -> None:
    # Control: a scorer whose sensors share one state fails the independence check.
    class Leaky(Scorer):
        def score_features(self, sensor_ids: Sequence[str], features: Any, **kw: Any) -> ScoreBatch:
            return super().score_features(["one"] * len(sensor_ids), features)

    b = load_bundle(bundle[0], allow_unsigned=True)
    with pytest.raises(AssertionError):
        check_sensors_independent(lambda: Leaky.from_loaded(b))


def test_same_seed_same_bundle(bundle: tuple[Path, GruParams], tmp_path: Path) -> None:
    path, p = bundle
    again, _ = build_bundle(tmp_path / "again", hidden=p.hidden, layers=p.layers, outputs=p.n_outputs)
    assert (again / "model.onnx").read_bytes() == (path / "model.onnx").read_bytes()
    check_deterministic(lambda: Scorer.from_bundle(again, allow_unsigned=True))


def test_onnx_matches_numpy_reference_over_carried_steps(bundle: tuple[Path, GruParams]) -> None:
    _, p = bundle
    s = new_scorer(bundle)
    ids = ["a", "b", "c"]
    h = np.zeros((p.layers, 3, p.hidden))
    for t in range(40):
        x = feats(100 + t, 3)
        want, h = reference_step(p, x, h)
        got = s.score_features(ids, x)
        np.testing.assert_allclose(got.scores, want, rtol=0, atol=1e-5)
    exported = s.export_states()
    np.testing.assert_allclose(exported.h.transpose(1, 0, 2), h, rtol=0, atol=1e-5)


def test_dynamic_batch_one_and_seven(bundle: tuple[Path, GruParams]) -> None:
    _, p = bundle
    session = load_bundle(bundle[0], allow_unsigned=True).session
    for B in (1, 7):
        score, h_out = session.run(
            ["score", "h_out"],
            {"features": feats(B, B), "h": np.zeros((p.layers, B, p.hidden), np.float32)},
        )
        assert score.shape == (B, p.n_outputs)
        assert h_out.shape == (p.layers, B, p.hidden)


def test_onnx_matches_torch_gru() -> None:
    import onnxruntime as ort
    import torch  # tests may use torch; edge_agent never imports it

    torch.manual_seed(0)
    torch.set_num_threads(1)
    H, L, K = 8, 2, 2
    gru = torch.nn.GRU(F, H, num_layers=L)
    head = torch.nn.Linear(H, K)
    g = np.random.default_rng(0)
    mean, std = g.normal(size=F).astype(np.float32), g.uniform(0.5, 2, size=F).astype(np.float32)
    p = GruParams(
        mean=mean,
        std=std,
        w_ih=[getattr(gru, f"weight_ih_l{i}").detach().numpy().copy() for i in range(L)],
        w_hh=[getattr(gru, f"weight_hh_l{i}").detach().numpy().copy() for i in range(L)],
        b_ih=[getattr(gru, f"bias_ih_l{i}").detach().numpy().copy() for i in range(L)],
        b_hh=[getattr(gru, f"bias_hh_l{i}").detach().numpy().copy() for i in range(L)],
        w_out=head.weight.detach().numpy().copy(),
        b_out=head.bias.detach().numpy().copy(),
    )
    session = ort.InferenceSession(build_step_model(p), providers=["CPUExecutionProvider"])
    x = feats(7, 30 * 3).reshape(30, 3, F)
    with torch.no_grad():
        y, _ = gru(torch.from_numpy((x - mean) / std))
        want = torch.sigmoid(head(y)).numpy()  # [T, B, K]
    h = np.zeros((L, 3, H), np.float32)
    ref_h = np.zeros((L, 3, H))
    for t in range(30):
        score, h = session.run(["score", "h_out"], {"features": x[t], "h": h})
        np.testing.assert_allclose(score, want[t], rtol=0, atol=1e-5)
        ref, ref_h = reference_step(p, x[t], ref_h)
        np.testing.assert_allclose(ref, want[t], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------- the Scorer


def test_bounded_store_evicts_least_recently_used(bundle: tuple[Path, GruParams]) -> None:
    s = new_scorer(bundle, max_sensors=3)
    fresh = new_scorer(bundle)
    s.score_features(["a", "b", "c"], feats(60, 3))
    s.score_features(["a"], feats(61, 1))  # b is now the least recently used
    r = s.score_features(["d"], feats(62, 1))
    assert s.n_tracked == 3
    assert "b" not in s.table
    assert s.table.evicted_total == 1
    assert r.steps.tolist() == [1]
    x = feats(63, 1)
    back = s.score_features(["b"], x)  # b comes back with a fresh state
    np.testing.assert_array_equal(back.scores, fresh.score_features(["b"], x).scores)
    assert back.steps.tolist() == [1]
    with pytest.raises(ValueError, match="at most 3"):
        s.score_features(list("pqrs"), feats(64, 4))


def test_reset_and_idle_eviction(bundle: tuple[Path, GruParams]) -> None:
    now = [0.0]
    s = new_scorer(bundle, clock=lambda: now[0])
    fresh = new_scorer(bundle)
    s.score_features(["a", "b"], feats(70, 2))
    assert s.reset("a")
    assert not s.reset("zzz")
    x = feats(71, 1)
    np.testing.assert_array_equal(s.score_features(["a"], x).scores, fresh.score_features(["a"], x).scores)
    now[0] = 100.0
    s.score_features(["a"], feats(72, 1))
    assert s.table.evict_idle(50.0) == ["b"]
    assert s.n_tracked == 1


def test_alarm_states_follow_the_state_machine(bundle: tuple[Path, GruParams]) -> None:
    s = new_scorer(bundle)
    T = 40
    x = feats(80, T)
    health = [float(s.score_features(["probe"], x[t : t + 1]).health[0]) for t in range(T)]
    lo, hi = np.quantile(health, [0.3, 0.7])
    t = Thresholds(float(lo), float(hi), 2, 2)
    scorer = Scorer.from_loaded(load_bundle(bundle[0], allow_unsigned=True))
    scorer.thresholds = t
    states, transitions = [], []
    for i in range(T):
        r = scorer.score_features(["m"], x[i : i + 1])
        states.append(r.states[0])
        transitions += list(r.transitions.values())
    assert states == reference_states(health, t)
    changes = [i for i in range(T) if states[i] != (states[i - 1] if i else "ok")]
    assert len(transitions) == len(changes) > 0
    for tr, i in zip(transitions, changes, strict=True):
        assert tr.state == states[i]
        assert tr.previous_state == (states[i - 1] if i else "ok")
        assert tr.sensor == "m"
        assert tr.seq == i + 1  # without seqs: the sensor's step count
        assert tr.reason
    assert scorer.state_of("m") == states[-1]
    assert scorer.state_of("never") == "ok"
    assert set(states) <= set(STATE_NAMES)


def test_score_windows_groups_by_rate_and_length(bundle: tuple[Path, GruParams]) -> None:
    s, ref = new_scorer(bundle), new_scorer(bundle)
    rng = np.random.default_rng(90)
    windows = [
        Window(1, 0, 12800.0, 1800.0, rng.normal(size=2048).astype(np.float32)),
        Window(1, 0, 25600.0, 0.0, rng.normal(size=2560).astype(np.float32)),
        Window(1, 0, 12800.0, 1500.0, rng.normal(size=2048).astype(np.float32)),
        Window(1, 0, 12800.0, 0.0, rng.normal(size=1024).astype(np.float32)),
    ]
    ids = ["a", "b", "c", "d"]
    got = s.score_windows(ids, windows)
    want_feats = np.stack([extract(w.samples, w.fs, w.rpm, ref.spec) for w in windows])
    np.testing.assert_allclose(s.features_of(windows), want_feats, rtol=1e-6, atol=1e-6)
    want = ref.score_features(ids, want_feats)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
    one = new_scorer(bundle).score_one("a", windows[0])
    assert one.sensor_id == "a"
    assert one.step == 1
    np.testing.assert_allclose(one.scores, want.scores[0], rtol=0, atol=1e-6)


def test_import_states_from_another_model_is_refused(bundle: tuple[Path, GruParams], tmp_path: Path) -> None:
    s = new_scorer(bundle)
    s.score_features(["a"], feats(1, 1))
    exported = s.export_states()
    _, p = bundle
    other_path, _ = build_bundle(
        tmp_path / "o", hidden=p.hidden, layers=p.layers, outputs=p.n_outputs, model_version="test-2"
    )
    other = Scorer.from_bundle(other_path, allow_unsigned=True)
    with pytest.raises(ValueError, match="fresh states"):
        other.import_states(exported)
    exported.state_shape = (p.layers, p.hidden + 1)
    with pytest.raises(ValueError, match="shape"):
        new_scorer(bundle).import_states(exported)
