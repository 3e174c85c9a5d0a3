"""Fixtures for the emulated aarch64 checks: the environment, a signed trained bundle, the probe runs.

These tests run with `make test-arm`, which builds .arm/ (scripts/build-arm-env.sh) and sets
GRUWATCH_ARM_ENV. Plain `make test` skips them, saying so; with GRUWATCH_ARM_ENV set, an
environment that is missing or broken is a failure, not a skip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.arm.helpers import ENV_VAR, ArmEnv, run_probe, train_tiny_bundle, write_inputs


@pytest.fixture(scope="session")
def arm_env() -> ArmEnv:
    root = os.environ.get(ENV_VAR)
    if not root:
        pytest.skip(
            f"emulated aarch64 checks run with `make test-arm` (builds .arm/ with "
            f"scripts/build-arm-env.sh and sets {ENV_VAR})"
        )
    env = ArmEnv(Path(root).resolve())
    problem = env.problem()
    if problem:
        pytest.fail(f"{ENV_VAR}={root}: {problem}")
    return env


@dataclass(frozen=True)
class Signed:
    bundle: Path
    key: Path  # private, stays on the host
    pub: Path  # what the gateway trusts


@pytest.fixture(scope="session")
def signed_bundle(arm_env: ArmEnv, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    """A bundle trained on the host (x86) by `gruwatch train`, signed with a key made here."""
    from edge_agent.signing import generate_keypair

    root = tmp_path_factory.mktemp("arm-bundle")
    key, pub = generate_keypair(root / "keys")
    return Signed(train_tiny_bundle(root, key), key, pub)


@dataclass(frozen=True)
class ProbeRuns:
    host: dict[str, Any]
    arm: dict[str, Any]
    host_out: Any  # np.lib.npyio.NpzFile
    arm_out: Any


@pytest.fixture(scope="session")
def probe_runs(arm_env: ArmEnv, signed_bundle: Signed, tmp_path_factory: pytest.TempPathFactory) -> ProbeRuns:
    """tests/arm/probe.py on the same inputs, natively and under emulation (once per session)."""
    import sys

    root = tmp_path_factory.mktemp("arm-probe")
    inputs = write_inputs(root / "inputs.npz", signed_bundle.bundle, signed_bundle.pub)
    results = {}
    for side, python in (("host", sys.executable), ("arm", str(arm_env.python))):
        job = {
            "bundle": str(signed_bundle.bundle),
            "trusted_key": str(signed_bundle.pub),
            "inputs": str(inputs),
            "out": str(root / f"{side}.npz"),
        }
        results[side] = run_probe(python, job, root)
    return ProbeRuns(results["host"], results["arm"], np.load(root / "host.npz"), np.load(root / "arm.npz"))
