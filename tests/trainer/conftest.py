"""Fixtures shared by the trainer's end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated run-to-failure dataset on disk (10 machines, 12.8 kHz, 1,024-sample windows
    every 10 s; 9 fail within the 900 s horizon). Read-only for the tests that share it."""
    from simulator.cli import main as simulate

    out = tmp_path_factory.mktemp("sim") / "dataset"
    args = ["dataset", "--out", str(out), "--machines", "10", "--seed", "3", "--horizon", "900"]
    args += ["--fs", "12800", "--window", "1024", "--interval", "10", "--no-progress"]
    assert simulate(args) == 0
    return out
