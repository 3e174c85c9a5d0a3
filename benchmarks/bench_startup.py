"""Benchmark: the edge agent's start, from process start to its first health message (issue 14).

The scenario of the agent-kill soak (tests/edge_agent/test_reliability_soak.py): windows wait at the
broker for an agent that is down; the agent starts as `gruwatch agent run --config FILE` in its own
process (a signed bundle, as on a gateway); the clock runs from `Popen` to the first health message
arriving here. Once every waiting window is scored the agent is killed with SIGKILL, so the next
start also recovers the store's WAL. Printed per checkout and bytecode condition: median / p90 / max
of the time to the first health message, and the median time to `agent_started` (its log line:
imports, settings, store, bundle verification) and to its "online" status (connected).

`--before DIR` starts the agent of another checkout (e.g. /work/main) with the same Python and
packages, interleaved start by start with this one, so both see the same load; the table gives this
checkout's figures as ratios of the other's. Bytecode conditions (`--bytecode`):

- `cached`: each checkout's compiled bytecode is cached (PYTHONPYCACHEPREFIX, filled by a first
  start), as in an installed wheel;
- `source`: PYTHONDONTWRITEBYTECODE=1 without a cache, as in a development checkout on a machine that
  sets it: every module of the checkout is compiled from source at each start.

`--importtime` also prints, per checkout, where one start's imports go (`python -X importtime`, own
time summed by top-level package). The machine is shared: compare ratios within one run, and note
the load printed with the table. Run: `.venv/bin/python benchmarks/bench_startup.py [--quick]
[--before /work/main]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import start_broker  # noqa: E402

#: The agent's program: `gruwatch agent run --config FILE`, as tests/edge_agent/agent_testing.py runs it.
RUN_CHILD = (
    "import sys; from edge_agent.agent_cli import main; sys.exit(main(['run', '--config', sys.argv[1]]))"
)
SENSORS = ("s0", "s1")
T0 = 1_800_000_000 * 10**9  # the first window's timestamp (ns)


class Listener:
    """Health messages and the agent's "online" status, with their arrival times (monotonic)."""

    def __init__(self, port: int, prefixes: list[str]) -> None:
        self.lock = threading.Lock()
        self.health: dict[str, list[float]] = {p: [] for p in prefixes}
        self.online: dict[str, list[float]] = {p: [] for p in prefixes}
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bs-{os.getpid()}"
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        for p in prefixes:
            self.client.subscribe(f"{p}/+/+/health", qos=1)
            self.client.subscribe(f"{p}/_agents/+/status", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        prefix, _, rest = msg.topic.partition("/")
        with self.lock:
            if rest.endswith("/health"):
                self.health[prefix].append(now)
            elif rest.endswith("/status") and b'"online"' in msg.payload:
                self.online[prefix].append(now)

    def first_after(self, what: dict[str, list[float]], prefix: str, t0: float) -> float | None:
        with self.lock:
            later = [t for t in what[prefix] if t >= t0]
        return min(later) - t0 if later else None

    def count_after(self, prefix: str, t0: float) -> int:
        with self.lock:
            return sum(1 for t in self.health[prefix] if t >= t0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Tree:
    """One checkout's agent: its config, store, topic prefix and the windows it was sent."""

    def __init__(self, name: str, path: Path, tmp: Path, port: int, models: Any) -> None:
        self.name, self.path, self.prefix = name, path, f"bs{name}"
        self.seq = 0
        self.config = tmp / f"{name}.toml"
        values = {
            "broker": f"mqtt://127.0.0.1:{port}",
            "prefix": self.prefix,
            "agent_id": f"bench-{name}",
            "model": str(models.v1),
            "trusted_keys": [str(models.pub)],
            "store": str(tmp / f"{name}.db"),
            "metrics_port": 0,
            "batch_max_wait_ms": 5,
            "batch_max_size": 16,
            "states_save_interval_s": 3600,
        }
        self.config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        self.pyc = tmp / f"pyc-{name}"

    def env(self, bytecode: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRUWATCH_", "PYTHONPYCACHEPREFIX"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if bytecode == "cached":
            env["PYTHONPYCACHEPREFIX"] = str(self.pyc)
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def check_imports_from_itself(self) -> None:
        out = subprocess.run(
            [sys.executable, "-c", "import edge_agent; print(edge_agent.__file__)"],
            cwd=self.path,
            env=self.env("source"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(out).resolve().is_relative_to(self.path.resolve()):
            raise SystemExit(f"{self.name}: the agent imports {out}, not the checkout {self.path}")
        if (self.path / "edge_agent" / "__pycache__").is_dir():
            print(
                f"note: {self.path}/edge_agent/__pycache__ exists: `source` reads it there", file=sys.stderr
            )


def _publish_waiting(pub: paho.Client, tree: Tree, per_sensor: int) -> int:
    """`per_sensor` new windows (2,560 samples, seq going on from the last start) per sensor, QoS 1."""
    import numpy as np

    from edge_agent.protocol import Window, encode_binary, vibration_topic

    rng = np.random.default_rng(tree.seq)
    infos = []
    for _ in range(per_sensor):
        for s in SENSORS:
            samples = (0.05 * rng.standard_normal(2560)).astype(np.float32)
            w = Window(tree.seq, T0 + tree.seq * 10 * 10**9, 25600.0, 1500.0, samples)
            infos.append(pub.publish(vibration_topic(tree.prefix, "m", s), encode_binary(w), qos=1))
        tree.seq += 1
    for info in infos:
        info.wait_for_publish(30)
    return len(infos)


def _started_s(stderr: str, wall0: float) -> float | None:
    """Seconds from `wall0` (time.time() at Popen) to the agent's `agent_started` log line."""
    for line in stderr.splitlines():
        if '"agent_started"' in line:
            ts = json.loads(line)["timestamp"]
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - wall0
    return None


def one_start(
    tree: Tree,
    bytecode: str,
    listener: Listener,
    pub: paho.Client,
    waiting: int,
    *,
    first: bool = False,
    flags: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Start the agent with `waiting` windows per sensor queued for it; SIGKILL once all are scored.
    The `first` start of a checkout makes its broker session: the windows are sent once it is online.
    `flags` go to the agent's Python; "stderr" in the result is what the agent wrote there."""
    n = 0 if first else _publish_waiting(pub, tree, waiting)
    log = tree.pyc.parent / f"{tree.name}.stderr"
    wall0, t0 = time.time(), time.monotonic()
    with log.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, *flags, "-c", RUN_CHILD, str(tree.config)],
            cwd=tree.path,
            env=tree.env(bytecode),
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
    deadline = t0 + 60
    if first:
        while time.monotonic() < deadline and listener.first_after(listener.online, tree.prefix, t0) is None:
            time.sleep(0.01)
        time.sleep(0.3)  # the vibration subscription follows the status message
        n = _publish_waiting(pub, tree, waiting)
    while time.monotonic() < deadline and listener.count_after(tree.prefix, t0) < n and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, _, usage = os.wait4(proc.pid, 0)  # the CPU it used, from start to the kill
    proc.returncode = -signal.SIGKILL
    err = log.read_text(errors="replace")
    first = listener.first_after(listener.health, tree.prefix, t0)
    if first is None:
        raise SystemExit(f"{tree.name}: no health message within 60 s; agent stderr:\n{err[-3000:]}")
    return {
        "first": first,
        "online": listener.first_after(listener.online, tree.prefix, t0),
        "started": _started_s(err, wall0),
        "cpu": usage.ru_utime + usage.ru_stime,
        "stderr": err,
    }


def import_profile(tree: Tree, bytecode: str, listener: Listener, pub: paho.Client, waiting: int) -> str:
    """One more start under `python -X importtime`: the modules it loaded and their own import time,
    summed by top-level package (one start: noisy; the shares are what to read)."""
    r = one_start(tree, bytecode, listener, pub, waiting, flags=("-X", "importtime"))
    by_package: Counter[str] = Counter()
    modules = 0
    for line in r["stderr"].splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, _, name = line[len("import time:") :].split("|")
            by_package[name.strip().split(".")[0]] += int(own)
            modules += 1
    total = sum(by_package.values()) / 1e3
    top = ", ".join(f"{k} {v / 1e3:.0f}" for k, v in by_package.most_common(12))
    return (
        f"{tree.name} ({bytecode}): {modules} modules imported, "
        f"imports {total:.0f} ms of {r['first']:.2f} s to the first health message; by package (ms): {top}"
    )


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="4 starts per checkout and condition")
    p.add_argument("--starts", type=int, default=20, help="starts per checkout and condition (default 20)")
    p.add_argument("--before", type=Path, help="another checkout to compare with (e.g. /work/main)")
    p.add_argument("--bytecode", choices=["cached", "source", "both"], default="both")
    p.add_argument("--waiting", type=int, default=3, help="windows per sensor waiting at each start")
    p.add_argument("--importtime", action="store_true", help="also print where the imports go")
    args = p.parse_args(argv)
    starts = 4 if args.quick else args.starts
    conditions = ["cached", "source"] if args.bytecode == "both" else [args.bytecode]

    from edge_agent.signing import generate_keypair
    from tests.edge_agent.agent_testing import Models, make_bundle

    load0 = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp_s:
        tmp = Path(tmp_s)
        key, pub_key = generate_keypair(tmp / "keys")
        models = Models(key, pub_key, make_bundle(tmp / "v1", key, version="rms-v1"))
        broker, port = start_broker(tmp)
        trees = [Tree("this", REPO, tmp, port, models)]
        if args.before is not None:
            trees.insert(0, Tree("before", args.before.resolve(), tmp, port, models))
        for t in trees:
            t.check_imports_from_itself()
        listener = Listener(port, [t.prefix for t in trees])
        pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bs-pub-{os.getpid()}")
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        try:
            runs = [(t, c) for c in conditions for t in trees]
            for t, c in runs:  # first start: the broker session, the store, the bytecode cache
                one_start(t, c, listener, pub, args.waiting, first=c == conditions[0])
            for r in range(starts):
                order = runs if r % 2 == 0 else runs[::-1]
                for t, c in order:
                    results.setdefault((t.name, c), []).append(one_start(t, c, listener, pub, args.waiting))
                print(f"round {r + 1}/{starts} done", file=sys.stderr, flush=True)
            profiles = (
                [import_profile(t, c, listener, pub, args.waiting) for c in conditions for t in trees]
                if args.importtime
                else []
            )
        finally:
            listener.close()
            pub.disconnect()
            pub.loop_stop()
            broker.kill()
            broker.wait()
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    _print_table(results, trees, conditions, starts, args.waiting, load0, load1)
    for line in profiles:
        print(line)
    return 0


def _print_table(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    trees: list[Any],
    conditions: list[str],
    starts: int,
    waiting: int,
    load0: list[str],
    load1: list[str],
) -> None:
    med = statistics.median
    print(
        f"\nagent start to first health message: {starts} starts per row, {waiting} windows per sensor "
        f"(2 sensors) waiting, SIGKILL after each; load {' '.join(load0)} -> {' '.join(load1)}"
    )
    print(
        "| checkout | bytecode | first health median / p90 / max (s) | agent_started median (s) "
        "| online median (s) | agent CPU to the kill, median (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for c in conditions:
        for t in trees:
            rs = results[(t.name, c)]
            first = [r["first"] for r in rs]
            started = [r["started"] for r in rs if r["started"] is not None]
            online = [r["online"] for r in rs if r["online"] is not None]
            print(
                f"| {t.name} ({t.path}) | {c} | {med(first):.2f} / {_pct(first, 0.9):.2f} / {max(first):.2f} | "
                f"{med(started):.2f} | {med(online):.2f} | {med(r['cpu'] for r in rs):.2f} |"
            )
        if len(trees) == 2:
            b = [r["first"] for r in results[("before", c)]]
            a = [r["first"] for r in results[("this", c)]]
            cpu = med(r["cpu"] for r in results[("this", c)]) / med(r["cpu"] for r in results[("before", c)])
            print(
                f"| this / before | {c} | {med(a) / med(b):.2f} / {_pct(a, 0.9) / _pct(b, 0.9):.2f} / "
                f"{max(a) / max(b):.2f} | | | {cpu:.2f} |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
