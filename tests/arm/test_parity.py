"""A bundle trained on x86 scores the same on aarch64: test vectors, features and 1,000 carried steps.

The bundle comes from `gruwatch train` on the host and is signed there; the emulated probe loads
it with the agent's own checks (signature by the trusted key, digests, test vectors replayed).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.arm.conftest import ProbeRuns

pytestmark = pytest.mark.arm


def test_the_x86_bundle_loads_verified_on_aarch64(probe_runs: ProbeRuns) -> None:
    # load_bundle raises on a failed test-vector replay; getting here means they passed on aarch64.
    assert probe_runs.arm["verified"] is True
    assert probe_runs.arm["model_version"] == probe_runs.host["model_version"]
    assert probe_runs.arm["state_shape"] == probe_runs.host["state_shape"]


def test_1000_steps_score_as_on_x86(probe_runs: ProbeRuns) -> None:
    host, arm = probe_runs.host_out, probe_runs.arm_out
    assert probe_runs.arm["steps"] == 1000
    assert host["scores"].shape == arm["scores"].shape == (1000, host["scores"].shape[1])
    diff = np.abs(host["scores"].astype(np.float64) - arm["scores"])
    assert diff.max() <= 1e-5, (
        f"max |x86 - aarch64| = {diff.max():.2e} at step {int(diff.argmax()) // diff.shape[1]}"
    )
    assert np.abs(host["raw_scores"].astype(np.float64) - arm["raw_scores"]).max() <= 1e-5
    # The Scorer around the bare session changes nothing, on either machine.
    np.testing.assert_array_equal(arm["scores"], arm["raw_scores"])
    # Same alarm decisions, and the stream is not trivially flat: the health score moves.
    assert probe_runs.arm["states"] == probe_runs.host["states"]
    assert np.ptp(host["scores"][:, 0]) > 0.1


def test_features_of_raw_windows_match(probe_runs: ProbeRuns) -> None:
    host, arm = probe_runs.host_out["window_features"], probe_runs.arm_out["window_features"]
    assert host.shape == arm.shape
    assert host.shape[0] > 0
    np.testing.assert_allclose(arm, host, rtol=1e-4, atol=1e-5)
