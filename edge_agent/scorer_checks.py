"""The check suite every scorer passes (CONVENTIONS 4, river's `check_estimator`), reusable on any variant.

    from edge_agent.scorer_checks import check_scorer
    check_scorer(lambda: Scorer.from_bundle("bundle/", trusted_keys=["keys/signing.pub"]))

Each check takes a factory that makes a FRESH scorer of the variant under test (same model, no
sensors) and raises AssertionError with what went wrong. `yield_checks()` lists them for pytest's
parametrize. Checks: inputs are not mutated, sensors do not influence each other, save/restore
gives the same next scores, a batch equals the same windows one by one, repeated sensors in a
batch are stepped in order, the same scorer twice gives the same results, bad input is refused
without touching the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

from edge_agent.protocol import Window
from edge_agent.scorer import Scorer
from edge_agent.states import StateColumns, states_from_bytes, states_to_bytes

Factory = Callable[[], Scorer]
Check = Callable[[Factory], None]


def _feats(seed: int, n: int, f: int) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).normal(0.0, 1.5, size=(n, f)).astype(np.float32)


def check_inputs_not_mutated(make: Factory) -> None:
    s = make()
    x = _feats(0, 4, s.n_features)
    x_copy = x.copy()
    ids = ["a", "b", "a", "c"]
    s.score_features(ids, x)
    np.testing.assert_array_equal(x, x_copy)
    assert ids == ["a", "b", "a", "c"], "sensor ids were changed"
    ro = _feats(1, 2, s.n_features)
    ro.flags.writeable = False
    s.score_features(["a", "b"], ro)  # read-only input is fine
    rng = np.random.default_rng(2)
    windows = [Window(i, 0, 12800.0, 1800.0, rng.normal(size=2048).astype(np.float32)) for i in range(3)]
    copies = [w.samples.copy() for w in windows]
    s.score_windows(["a", "b", "c"], windows)
    for w, c in zip(windows, copies, strict=True):
        np.testing.assert_array_equal(w.samples, c)


def check_sensors_independent(make: Factory) -> None:
    alone, crowd = make(), make()
    f = alone.n_features
    xa = _feats(3, 6, f)
    others = _feats(4, 6 * 5, f).reshape(6, 5, f)
    for t in range(6):
        ra = alone.score_features(["A"], xa[t : t + 1])
        # A in the middle of a batch whose other members change every step
        batch = np.concatenate([others[t, :2], xa[t : t + 1], others[t, 2 : 2 + t % 3]])
        ids = ["B", "C", "A", "D", "E"][: len(batch)]
        rc = crowd.score_features(ids, batch)
        np.testing.assert_allclose(rc.scores[2], ra.scores[0], rtol=0, atol=1e-6)
        assert rc.states[2] == ra.states[0]


def check_save_restore(make: Factory) -> None:
    s = make()
    f = s.n_features
    ids = ["a", "b", "c"]
    for t in range(4):
        s.score_features(ids, _feats(10 + t, 3, f))
    saved = StateColumns.from_dict(states_from_bytes(states_to_bytes(s.export_states().to_dict())))
    restored = make()
    assert restored.import_states(saved) == 3
    assert restored.n_tracked == 3
    for t in range(3):
        x = _feats(20 + t, 3, f)
        r1, r2 = s.score_features(ids, x), restored.score_features(ids, x)
        np.testing.assert_array_equal(r1.scores, r2.scores)
        assert r1.states == r2.states
        np.testing.assert_array_equal(r1.steps, r2.steps)


def check_batch_equals_singles(make: Factory) -> None:
    batched, single = make(), make()
    ids = [f"s{i}" for i in range(7)]
    for t in range(4):
        x = _feats(40 + t, 7, batched.n_features)
        rb = batched.score_features(ids, x)
        rs = [single.score_features([sid], x[i : i + 1]) for i, sid in enumerate(ids)]
        np.testing.assert_allclose(rb.scores, np.concatenate([r.scores for r in rs]), rtol=0, atol=1e-6)
        assert rb.states == [r.states[0] for r in rs]


def check_repeats_stepped_in_order(make: Factory) -> None:
    batched, seq = make(), make()
    x = _feats(50, 6, batched.n_features)
    ids = ["a", "b", "a", "a", "c", "b"]
    rb = batched.score_features(ids, x)
    expected = [seq.score_features([sid], x[i : i + 1]) for i, sid in enumerate(ids)]
    np.testing.assert_allclose(rb.scores, np.concatenate([r.scores for r in expected]), rtol=0, atol=1e-6)
    assert rb.steps.tolist() == [1, 1, 2, 3, 1, 2]
    nxt = _feats(51, 3, batched.n_features)
    np.testing.assert_allclose(
        batched.score_features(["a", "b", "c"], nxt).scores,
        seq.score_features(["a", "b", "c"], nxt).scores,
        rtol=0,
        atol=1e-6,
    )


def check_deterministic(make: Factory) -> None:
    s1, s2 = make(), make()
    for t in range(3):
        x = _feats(30 + t, 4, s1.n_features)
        np.testing.assert_array_equal(
            s1.score_features(list("wxyz"), x).scores, s2.score_features(list("wxyz"), x).scores
        )


def check_bad_input_refused(make: Factory) -> None:
    s = make()
    f = s.n_features
    for ids, x in (
        (["a"], np.zeros((1, f + 1), np.float32)),
        (["a", "b"], np.zeros((1, f), np.float32)),
        (["a"], np.full((1, f), np.nan, np.float32)),
    ):
        try:
            s.score_features(ids, x)
        except ValueError:
            pass
        else:
            raise AssertionError(f"score_features accepted ids {ids} with features of shape {x.shape}")
    assert s.n_tracked == 0, "a refused batch created sensor states"


def yield_checks() -> Iterator[Check]:
    """Every check, for `pytest.mark.parametrize`."""
    yield check_inputs_not_mutated
    yield check_sensors_independent
    yield check_save_restore
    yield check_batch_equals_singles
    yield check_repeats_stepped_in_order
    yield check_deterministic
    yield check_bad_input_refused


def check_scorer(make: Factory) -> None:
    """Run every check on the variant `make` builds; raises AssertionError at the first failure."""
    for check in yield_checks():
        check(make)
