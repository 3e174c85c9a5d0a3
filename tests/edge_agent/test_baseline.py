"""The per-sensor healthy baseline (edge_agent.baseline): statistics, stepping, ceiling, spec round trip."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.baseline import (
    BaselineSpec,
    baseline_mean_std,
    init_state,
    normalise_run,
    ready,
    step,
    suspect,
)
from edge_agent.errors import FeatureError
from edge_agent.features import FeatureSpec


def test_baseline_is_mean_and_std_of_the_windows_after_run_in() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 0.5, size=(40, 4))
    x[:5] += 10.0  # run-in: must not enter the baseline
    spec = BaselineSpec(skip_windows=5, learn_windows=20)
    state = init_state(1, 4)
    for i in range(40):
        _, state = step(spec, state, x[i : i + 1])
    mean, std = baseline_mean_std(spec, state, 4)
    np.testing.assert_allclose(mean[0], x[5:25].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std[0], x[5:25].std(axis=0, ddof=1), rtol=1e-12)
    assert ready(spec, state).tolist() == [True]


def test_output_is_zero_while_learning_then_the_log_deviation() -> None:
    spec = BaselineSpec(skip_windows=2, learn_windows=4, std_floor=1e-6)
    x = np.array(
        [[100.0], [100.0], [1.0], [2.0], [3.0], [4.0], [2.5], [2.5 + 6 * np.std([1, 2, 3, 4], ddof=1)]]
    )
    y = normalise_run(spec, x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[:5, 0], 0.0)  # run-in and the first learning windows
    assert y[5, 0] != 0.0  # the window that completes the baseline is scored against it
    assert y[6, 0] == pytest.approx(0.0, abs=1e-6)
    assert y[7, 0] == pytest.approx(np.log1p(6.0), rel=1e-5)


def test_step_is_row_independent_and_does_not_modify_its_input() -> None:
    spec = BaselineSpec(skip_windows=1, learn_windows=3)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 3)), rng.normal(5.0, 2.0, size=(10, 3))
    state = init_state(2, 3)
    out = []
    for i in range(10):
        before = state.copy()
        y, new = step(spec, state, np.stack([a[i], b[i]]))
        np.testing.assert_array_equal(state, before)
        state = new
        out.append(y)
    both = np.stack(out, axis=1)
    np.testing.assert_array_equal(both[0], normalise_run(spec, a))
    np.testing.assert_array_equal(both[1], normalise_run(spec, b))


def test_a_reset_state_learns_a_new_baseline() -> None:
    spec = BaselineSpec(skip_windows=0, learn_windows=3)
    state = init_state(1, 1)
    for v in (1.0, 1.1, 0.9):
        _, state = step(spec, state, np.array([[v]]))
    y_old, _ = step(spec, state, np.array([[5.0]]))
    assert y_old[0, 0] > 2.0  # a new, louder bearing against the old baseline
    state = init_state(1, 1)  # maintenance: bearing replaced
    for v in (5.0, 5.1, 4.9):
        _, state = step(spec, state, np.array([[v]]))
    y_new, _ = step(spec, state, np.array([[5.0]]))
    assert abs(y_new[0, 0]) < 0.1


def test_a_baseline_above_the_ceiling_is_capped_and_flagged() -> None:
    """A sensor installed on an already failing (loud) bearing is still measured as loud."""
    spec = BaselineSpec(skip_windows=0, learn_windows=3, mean_ceiling=(1.0,))
    state = init_state(1, 1)
    for v in (3.0, 3.1, 2.9):
        _, state = step(spec, state, np.array([[v]]))
    y, state = step(spec, state, np.array([[3.0]]))
    assert y[0, 0] > 2.0
    assert suspect(spec, state).tolist() == [True]
    assert suspect(BaselineSpec(skip_windows=0, learn_windows=3), state).tolist() == [False]


def test_spec_round_trip_and_refusals() -> None:
    spec = BaselineSpec(skip_windows=3, learn_windows=7, std_floor=0.05, mean_ceiling=(1.0, 2.0))
    assert BaselineSpec.from_dict(spec.to_dict()) == spec
    full = FeatureSpec.with_geometry(None, baseline=BaselineSpec())
    assert full.version == 2
    assert FeatureSpec.from_dict(full.to_dict()) == full
    for bad in ({"learn_windows": 1}, {"skip_windows": -1}, {"std_floor": 0}, {"what": 1}):
        with pytest.raises(FeatureError):
            BaselineSpec.from_dict(bad)
    with pytest.raises(ValueError, match="baseline state must be"):
        step(spec, init_state(1, 3), np.zeros((1, 2)))
