"""Helpers for the emulated aarch64 checks (tests/arm) and benchmarks/bench_arm.py.

`ArmEnv` finds the environment built by scripts/build-arm-env.sh; `train_tiny_bundle` makes a
signed bundle with the real trainer through the public command line (`gruwatch simulate dataset`,
`gruwatch train`) on the host, as a user would before copying it to a gateway; `sim_inputs` draws
simulated windows for the probe (tests/arm/probe.py), which runs the same code on both machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parent / "probe.py"
FORBIDDEN = ("torch", "pandas", "scipy", "sklearn", "pyarrow")
ENV_VAR = "GRUWATCH_ARM_ENV"


@dataclass(frozen=True)
class ArmEnv:
    root: Path

    @property
    def python(self) -> Path:
        """Runs Debian's arm64 python3.11 under qemu with gruwatch[agent] on its path."""
        return self.root / "python"

    @property
    def site(self) -> Path:
        """Where pip installed gruwatch[agent]'s aarch64 wheels (--target)."""
        return self.root / "site"

    def problem(self) -> str | None:
        """Why this environment cannot run, or None."""
        if not self.python.is_file() or not os.access(self.python, os.X_OK):
            return f"{self.python} is missing; run scripts/build-arm-env.sh {self.root}"
        if not (self.site / "edge_agent").is_dir():
            return f"{self.site} holds no gruwatch install; run scripts/build-arm-env.sh {self.root}"
        return None


def host_env() -> dict[str, str]:
    """The environment for child processes: no GRUWATCH_* settings leak in from the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GRUWATCH_")}


def run_probe(python: Path | str, job: dict[str, Any], cwd: Path, timeout: float = 900.0) -> dict[str, Any]:
    """Run tests/arm/probe.py with `python` on `job`; returns the JSON it prints last."""
    job_file = cwd / f"job-{abs(hash(str(python))) % 10**8}.json"
    job_file.write_text(json.dumps(job))
    proc = subprocess.run(
        [str(python), str(PROBE), str(job_file)],
        cwd=cwd,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"probe with {python} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def train_tiny_bundle(root: Path, signing_key: Path, *, hidden: int = 16, epochs: int = 3) -> Path:
    """A signed bundle from the real trainer on a small simulated fleet (host, x86; seconds)."""
    data = root / "sim"
    bundle = root / "bundle"
    gruwatch = [sys.executable, "-m", "gruwatch"]
    simulate = ["simulate", "dataset", "--out", str(data), "--machines", "8", "--seed", "3", "--no-progress"]
    simulate += ["--horizon", "3600", "--faults", "outer"]
    train = ["train", "--data", str(data), "--out", str(bundle), "--signing-key", str(signing_key)]
    train += ["--hidden", str(hidden), "--epochs", str(epochs), "--seed", "0"]
    steps = [[*gruwatch, *simulate], [*gruwatch, *train]]
    for cmd in steps:
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=host_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[2:4])} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return bundle


def sim_windows(n: int, *, seed: int = 5) -> list[Any]:
    """`n` simulated windows (edge_agent.protocol.Window) of machines with outer-race faults running to
    failure, one run after the other (host side)."""
    from edge_agent.protocol import Window
    from simulator.fleet_model import build_fleet

    runs = build_fleet(8, seed, horizon_s=3600.0, interval_s=10.0, faults=("outer",), healthy_fraction=0.0)
    out: list[Window] = []
    for r in runs:
        for k in range(min(r.n_windows, n - len(out))):
            out.append(Window(k, 10**18 + int(r.t(k) * 1e9), r.fs, r.rpm_at(k), r.window(k)[0]))
    if len(out) < n:
        raise AssertionError(f"the simulated fleet gave {len(out)} windows, fewer than {n}")
    return out


def write_inputs(out: Path, bundle: Path, trusted: Path, *, steps: int = 1000, windows: int = 24) -> Path:
    """The probe's inputs (.npz): features of `steps` simulated windows, computed here, and the first
    `windows` raw windows, whose features the probe computes itself."""
    from edge_agent.bundle import load_bundle
    from edge_agent.scorer import Scorer

    raw = sim_windows(steps)
    scorer = Scorer.from_loaded(load_bundle(bundle, trusted_keys=[trusted]))
    np.savez(
        out,
        features=scorer.features_of(raw),
        samples=np.stack([np.asarray(w.samples, np.float32) for w in raw[:windows]]),
        fs=np.array([w.fs for w in raw[:windows]], np.float64),
        rpm=np.array([w.rpm for w in raw[:windows]], np.float64),
    )
    return out
