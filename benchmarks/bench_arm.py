"""Benchmark: the agent's hot path natively (x86 host) and on aarch64 under qemu emulation, same script.

Trains a signed bundle on the host with `gruwatch train` (default hidden size 64), then runs
tests/arm/probe.py on the same inputs with the host's Python and with the emulated one built by
scripts/build-arm-env.sh (`make test-arm` builds it), and prints one table: import time, bundle
load (signature, digests, test-vector replay), features per 2,560-sample window, one GRU step of
one sensor through the Scorer and as a bare onnxruntime call, and the emulated/native ratio.

Emulation numbers say what qemu costs on this host; they are NOT Raspberry Pi speed.

Run: `.venv/bin/python benchmarks/bench_arm.py [--quick] [--arm-env .arm]`. Prints a note and exits 0
when the emulated environment is not built.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the helpers live with the tests
    sys.path.insert(0, str(REPO))

from tests.arm.helpers import ArmEnv, run_probe, train_tiny_bundle, write_inputs  # noqa: E402

ROWS = (
    ("import numpy + onnxruntime + edge_agent", "import_s", "s"),
    ("load bundle (verify, replay test vectors)", "load_s", "s"),
    ("features, one 2,560-sample window", "features_us_per_window", "µs"),
    ("GRU step, one sensor, Scorer", "scorer_us_per_step", "µs"),
    ("GRU step, one sensor, bare session.run", "run_us_per_step", "µs"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm-env", type=Path, default=REPO / ".arm", help="built by scripts/build-arm-env.sh")
    p.add_argument(
        "--hidden", type=int, default=64, help="GRU hidden size of the trained bundle (default 64)"
    )
    p.add_argument("--steps", type=int, default=1000, help="GRU steps per side (default 1000)")
    p.add_argument("--quick", action="store_true", help="hidden 16, 300 steps")
    args = p.parse_args(argv)
    env = ArmEnv(args.arm_env.resolve())
    problem = env.problem()
    if problem:
        print(f"bench_arm: not run: {problem} (or `make test-arm`)")
        return 0
    hidden, steps = (16, 300) if args.quick else (args.hidden, args.steps)
    with tempfile.TemporaryDirectory(prefix="bench-arm-") as tmp:
        root = Path(tmp)
        from edge_agent.signing import generate_keypair

        key, pub = generate_keypair(root / "keys")
        bundle = train_tiny_bundle(root, key, hidden=hidden, epochs=1)
        inputs = write_inputs(root / "inputs.npz", bundle, pub, steps=steps, windows=24)
        res = {}
        for side, python in (("x86", sys.executable), ("arm", str(env.python))):
            job = {"bundle": str(bundle), "trusted_key": str(pub), "inputs": str(inputs)}
            res[side] = run_probe(python, {**job, "out": str(root / f"{side}.npz")}, root)
    load = os.getloadavg()[0]
    print(
        f"hidden {hidden}, {steps} steps of one sensor, 24 windows; load average {load:.1f} on "
        f"{os.cpu_count()} cores; onnxruntime {res['arm']['onnxruntime']}, numpy {res['arm']['numpy']}"
    )
    print(f"{'':44} {'x86 native':>12} {'aarch64 qemu':>13} {'qemu/native':>12}")
    for label, name, unit in ROWS:
        a, b = res["x86"][name], res["arm"][name]
        print(f"{label:44} {a:>9.1f} {unit:<2} {b:>10.1f} {unit:<2} {b / a:>11.1f}×")
    print("qemu-aarch64-static, QEMU_CPU=cortex-a72; emulation cost on this host, NOT Raspberry Pi speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
