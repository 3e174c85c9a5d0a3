"""trainer.synthetic: made-up failures on healthy stretches of real runs (run-to-failure training)."""

from __future__ import annotations

import numpy as np

from edge_agent.baseline import BaselineSpec
from edge_agent.features import FeatureSpec
from trainer.sequences import FeatureSequence
from trainer.synthetic import SIGMA, level_features, synthetic_failures, training_failures
from trainer.train import TrainConfig

NAMES = ("log_rms", "kurtosis", "log_band_a", "log_band_b", "crest")


def _seq(n: int = 300, ready: int = 40, failing_from: int = 270) -> FeatureSequence:
    rng = np.random.default_rng(3)
    y = rng.normal(0.0, 0.3, size=(n, len(NAMES))).astype(np.float32)
    y[:ready] = 0.0  # the per-sensor baseline gives zeros while it learns
    target = np.zeros(n, np.float32)
    target[failing_from:] = 1.0
    return FeatureSequence(
        run_id="b1-h",
        machine="b1",
        source="femto",
        features=y,
        ts=np.arange(n) * 10.0,
        target=target,
        fault=np.full(n, -1, np.int64),
    )


def test_level_features_are_the_log_ones() -> None:
    assert list(level_features(NAMES)) == [0, 2, 3]


def test_a_synthetic_failure_is_a_healthy_prefix_whose_level_features_rise_at_the_end() -> None:
    s = _seq()
    out = synthetic_failures([s], NAMES, horizon_s=200.0, per_run=4, seed=0)
    assert len(out) == 4
    for f in out:
        n = len(f)
        assert 40 + 20 + 10 <= n <= 270 - 20  # after the baseline, a horizon before the real failure
        np.testing.assert_array_equal(f.target[: n - 20], 0.0)
        np.testing.assert_array_equal(f.target[n - 20 :], 1.0)
        # Untouched before the ending, and only level features move at the end.
        np.testing.assert_array_equal(f.features[: n - 20], s.features[: n - 20])
        np.testing.assert_array_equal(f.features[:, [1, 4]], s.features[:n, [1, 4]])
        z_end = np.expm1(np.abs(f.features[-1, [0, 2, 3]])) * np.sign(f.features[-1, [0, 2, 3]])
        z_was = np.expm1(np.abs(s.features[n - 1, [0, 2, 3]])) * np.sign(s.features[n - 1, [0, 2, 3]])
        rise = z_end - z_was
        moved = rise > 1e-3
        assert moved.any()
        assert np.all(rise[moved] >= SIGMA[0] - 1e-3)
        assert np.all(rise[moved] <= SIGMA[1] + 1e-3)
        # The deviation grows through the ending.
        j = int(np.flatnonzero(moved)[0])
        col = [0, 2, 3][j]
        assert f.features[n - 1, col] > f.features[n - 20, col]


def test_deterministic_in_the_seed_and_nothing_from_too_short_runs() -> None:
    s = _seq()
    a = synthetic_failures([s], NAMES, 200.0, 2, seed=5)
    b = synthetic_failures([s], NAMES, 200.0, 2, seed=5)
    assert [len(x) for x in a] == [len(x) for x in b]
    np.testing.assert_array_equal(a[0].features, b[0].features)
    assert synthetic_failures([_seq(n=90, ready=40, failing_from=80)], NAMES, 200.0, 2, seed=0) == []


def test_only_with_a_baseline_and_a_horizon() -> None:
    s = _seq()
    names = FeatureSpec().names
    s.features = np.zeros((len(s), len(names)), np.float32)
    s.features[40:] = 0.1
    with_baseline = FeatureSpec(version=2, baseline=BaselineSpec(skip_windows=10, learn_windows=30))
    cfg = TrainConfig(synthetic_failures=2, horizon_s=200.0)
    assert len(training_failures([s], with_baseline, cfg)) == 2
    assert training_failures([s], FeatureSpec(), cfg) == []
    assert training_failures([s], with_baseline, TrainConfig(synthetic_failures=2)) == []
    assert training_failures([s], with_baseline, TrainConfig(horizon_s=200.0)) == []


def test_a_synthetic_step_lasts_to_the_end_in_a_few_level_features_and_stays_healthy() -> None:
    from trainer.synthetic import synthetic_steps

    s = _seq()
    out = synthetic_steps([s], NAMES, horizon_s=200.0, per_run=3, seed=1)
    assert len(out) == 3
    for f in out:
        assert len(f) == len(s)
        changed = np.flatnonzero(np.any(f.features != s.features, axis=1))
        at = int(changed[0])
        assert 40 <= at < len(s) // 2
        assert changed[-1] == len(s) - 1  # it lasts to the end
        np.testing.assert_array_equal(f.features[:, [1, 4]], s.features[:, [1, 4]])
        assert np.all(np.isnan(f.target[at : at + 20]))  # the first horizon after the step: unknown
        np.testing.assert_array_equal(f.target[at + 20 :], s.target[at + 20 :])  # then the real targets
        np.testing.assert_array_equal(f.target[:at], 0.0)
