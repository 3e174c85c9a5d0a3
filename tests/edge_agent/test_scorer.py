"""The check suite every scorer passes (CONVENTIONS 4), run over several model shapes, plus the
Scorer's own behaviour: repeated sensors in a batch, the bounded state store, alarms, windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_agent.alarms import STATE_NAMES, Thresholds
from edge_agent.bundle import load_bundle
from edge_agent.features import extract
from edge_agent.protocol import Window
from edge_agent.scorer import Scorer
from edge_agent.states import StateStore, states_from_bytes, states_to_bytes
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
    assert s.store.data.size == 0  # nothing allocated until a sensor arrives


# ----------------------------------------------------------------------------- the check suite


def test_inputs_are_not_mutated(bundle: tuple[Path, GruParams]) -> None:
    s = new_scorer(bundle)
    x = feats(0, 4)
    x_copy = x.copy()
    ids = ["a", "b", "a", "c"]
    s.score_features(ids, x)
    np.testing.assert_array_equal(x, x_copy)
    assert ids == ["a", "b", "a", "c"]
    ro = feats(1, 2)
    ro.flags.writeable = False
    s.score_features(["a", "b"], ro)  # read-only input is fine
    rng = np.random.default_rng(2)
    windows = [Window(i, 0, 12800.0, 1800.0, rng.normal(size=2048).astype(np.float32)) for i in range(3)]
    copies = [w.samples.copy() for w in windows]
    s.score_windows(["a", "b", "c"], windows)
    for w, c in zip(windows, copies, strict=True):
        np.testing.assert_array_equal(w.samples, c)


def test_sensors_do_not_influence_each_other(bundle: tuple[Path, GruParams]) -> None:
    alone, crowd = new_scorer(bundle), new_scorer(bundle)
    xa = feats(3, 6)
    others = feats(4, 6 * 5).reshape(6, 5, F)
    for t in range(6):
        ra = alone.score_features(["A"], xa[t : t + 1])
        # A in the middle of a batch whose other members change every step
        batch = np.concatenate([others[t, :2], xa[t : t + 1], others[t, 2 : 2 + t % 3]])
        ids = ["B", "C", "A", "D", "E"][: len(batch)]
        rc = crowd.score_features(ids, batch)
        np.testing.assert_allclose(rc.scores[2], ra.scores[0], rtol=0, atol=1e-6)
        assert rc.states[2] == ra.states[0]


def test_save_restore_gives_same_next_scores(bundle: tuple[Path, GruParams]) -> None:
    s = new_scorer(bundle)
    ids = ["a", "b", "c"]
    for t in range(4):
        s.score_features(ids, feats(10 + t, 3))
    saved = states_from_bytes(states_to_bytes(s.export_states()))
    restored = new_scorer(bundle)
    assert restored.import_states(saved) == 3
    assert restored.n_tracked == 3
    for t in range(3):
        x = feats(20 + t, 3)
        r1, r2 = s.score_features(ids, x), restored.score_features(ids, x)
        np.testing.assert_array_equal(r1.scores, r2.scores)
        assert r1.states == r2.states
        np.testing.assert_array_equal(r1.steps, r2.steps)


def test_same_seed_same_result(bundle: tuple[Path, GruParams], tmp_path: Path) -> None:
    path, p = bundle
    again, _ = build_bundle(tmp_path / "again", hidden=p.hidden, layers=p.layers, outputs=p.n_outputs)
    assert (again / "model.onnx").read_bytes() == (path / "model.onnx").read_bytes()
    s1, s2 = new_scorer(bundle), Scorer.from_bundle(again, allow_unsigned=True)
    for t in range(3):
        x = feats(30 + t, 4)
        np.testing.assert_array_equal(
            s1.score_features(list("wxyz"), x).scores, s2.score_features(list("wxyz"), x).scores
        )


def test_batch_equals_singles(bundle: tuple[Path, GruParams]) -> None:
    batched, single = new_scorer(bundle), new_scorer(bundle)
    ids = [f"s{i}" for i in range(7)]
    for t in range(4):
        x = feats(40 + t, 7)
        rb = batched.score_features(ids, x)
        rs = [single.score_features([sid], x[i : i + 1]) for i, sid in enumerate(ids)]
        np.testing.assert_allclose(rb.scores, np.concatenate([r.scores for r in rs]), rtol=0, atol=1e-6)
        assert rb.states == [r.states[0] for r in rs]


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
    np.testing.assert_allclose(exported["h"].transpose(1, 0, 2), h, rtol=0, atol=1e-5)


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


def test_repeated_sensor_in_one_batch_is_stepped_in_order(bundle: tuple[Path, GruParams]) -> None:
    batched, seq = new_scorer(bundle), new_scorer(bundle)
    x = feats(50, 6)
    ids = ["a", "b", "a", "a", "c", "b"]
    rb = batched.score_features(ids, x)
    expected = [seq.score_features([sid], x[i : i + 1]) for i, sid in enumerate(ids)]
    np.testing.assert_allclose(rb.scores, np.concatenate([r.scores for r in expected]), rtol=0, atol=1e-6)
    assert rb.steps.tolist() == [1, 1, 2, 3, 1, 2]
    assert batched.n_tracked == 3
    # and the states left behind are the same
    nxt = feats(51, 3)
    np.testing.assert_allclose(
        batched.score_features(["a", "b", "c"], nxt).scores,
        seq.score_features(["a", "b", "c"], nxt).scores,
        rtol=0,
        atol=1e-6,
    )


def test_bounded_store_evicts_least_recently_used(bundle: tuple[Path, GruParams]) -> None:
    s = new_scorer(bundle, max_sensors=3)
    fresh = new_scorer(bundle)
    s.score_features(["a", "b", "c"], feats(60, 3))
    s.score_features(["a"], feats(61, 1))  # b is now the least recently used
    r = s.score_features(["d"], feats(62, 1))
    assert s.n_tracked == 3
    assert "b" not in s.store
    assert s.store.evicted_total == 1
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
    assert s.store.evict_idle(50.0) == ["b"]
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
        transitions += r.transitions
    assert states == reference_states(health, t)
    changes = [i for i in range(T) if states[i] != (states[i - 1] if i else "ok")]
    assert len(transitions) == len(changes) > 0
    for tr, i in zip(transitions, changes, strict=True):
        assert tr.state == states[i]
        assert tr.previous == (states[i - 1] if i else "ok")
        assert tr.sensor_id == "m"
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
    exported["state_shape"] = [p.layers, p.hidden + 1]
    with pytest.raises(ValueError, match="shape"):
        new_scorer(bundle).import_states(exported)


def test_bad_feature_input(bundle: tuple[Path, GruParams]) -> None:
    s = new_scorer(bundle)
    with pytest.raises(ValueError, match=r"\[B, "):
        s.score_features(["a"], np.zeros((1, F + 1), np.float32))
    with pytest.raises(ValueError, match="sensor ids"):
        s.score_features(["a", "b"], np.zeros((1, F), np.float32))
    bad = np.zeros((1, F), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.score_features(["a"], bad)
    assert s.n_tracked == 0


# ------------------------------------------------------------------------------------ the store


def test_store_keeps_recency_order_through_export_and_restore() -> None:
    store = StateStore((1, 2), capacity=4)
    store.rows_for(["a", "b"])
    store.rows_for(["c"])
    store.rows_for(["a"])
    assert store.ids() == ["b", "c", "a"]
    exported = store.export()
    assert exported["sensors"] == ["b", "c", "a"]
    small = StateStore((1, 2), capacity=2)
    small.restore(exported)  # more than fit: the most recently used are kept
    assert small.ids() == ["c", "a"]
    small.rows_for(["d"])  # evicts c, the least recently used
    assert small.ids() == ["a", "d"]
    with pytest.raises(ValueError, match="distinct"):
        small.rows_for(["a", "a"])


def test_store_restore_rejects_bad_exports() -> None:
    store = StateStore((1, 2))
    store.rows_for(["a"])
    good = store.export()
    for key, value in [("alarm", np.array([7], np.int8)), ("h", np.full((1, 1, 2), np.nan, np.float32))]:
        bad = dict(good, **{key: value})
        with pytest.raises(ValueError, match="saved states"):
            StateStore((1, 2)).restore(bad)
    with pytest.raises(ValueError, match="not a saved state file"):
        states_from_bytes(b"garbage")
