"""Benchmark: the edge agent end to end through a local Mosquitto, against a bare paho subscriber.

Prints one table with three measurements (each agent runs as `gruwatch agent run` in its own process,
as on a gateway; the publisher is another process; this process only listens):

1. throughput: `--sensors` sensors × `--windows` windows of 2,560 float32 samples (binary, QoS 1)
   published as fast as the publisher can. The bare paho subscriber (QoS 1, counting only) and the agent
   (decode, features, one batched GRU step, alarms, SQLite commit, ack, health message) receive the same
   messages; the rate is messages (health messages, for the agent) from first to last, and the ratio
   agent / bare is the goal (≥ 70 %).
2. latency: the same sensors at a paced `--rate` windows/s; p50 / p99 from the window's timestamp (set
   when it is published) to its health message arriving here (goal p99 ≤ 50 ms).
3. memory: resident set size of an agent process holding `--tracked` sensors' states after one window
   each, published at 2,000 windows/s (goal ≤ 150 MB); then again after a second window each sent as
   fast as possible, which fills the agent's queue (queue_max_size windows) and the batch buffers.

Model: a hand-made one-step GRU bundle with H = 64 (tests/edge_agent/gru_fixtures.py), unsigned, so the
agent runs with allow_unsigned. Run: `.venv/bin/python benchmarks/bench_agent.py [--quick]`. The machine is
shared (2 cores): expect ±20-50 % between runs (PERFORMANCE-NOTES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

WINDOW = 2560
FS = 25600.0
#: The agent's batch_max_wait_ms here. Under load batches fill at once whatever this is; at 1,000
#: windows/s the default 50 ms would be a 50 ms latency floor (get_batch waits that long to fill).
BATCH_WAIT_MS = 5
MEMORY_RATE = 2000.0  # windows/s while filling the state table in the memory run

PUBLISHER = r"""
import json, sys, time
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from edge_agent.protocol import Window, encode_binary
port, prefix, sensors, windows, rate, first_seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
rng = np.random.default_rng(0)
pool = [(0.05 * rng.standard_normal(2560)).astype(np.float32) for _ in range(64)]
c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(2000)
c.connect("127.0.0.1", int(port))
c.loop_start()
topics = [f"{prefix}/m{i:05d}/s0/vibration" for i in range(sensors)]
n = 0
t_start = time.perf_counter()
infos = []
for k in range(windows):
    for i, topic in enumerate(topics):
        if rate > 0:
            due = t_start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        w = Window(first_seq + k, time.time_ns(), 25600.0, 1500.0, pool[(i + k) % 64])
        while True:
            info = c.publish(topic, encode_binary(w), qos=1)
            if info.rc == 0:
                break
            time.sleep(0.001)  # paho's queue is full: wait for acks
        n += 1
        if n % 1000 == 0:
            infos.append(info)
for info in infos[-1:]:
    info.wait_for_publish(60)
print(json.dumps({"published": n, "seconds": time.perf_counter() - t_start}))
c.disconnect()
c.loop_stop()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\nlog_type error\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start; install it (apt-get install mosquitto)")


def publish(port: int, prefix: str, sensors: int, windows: int, rate: float = 0.0, first_seq: int = 0) -> Any:
    cmd = [
        sys.executable,
        "-c",
        PUBLISHER,
        str(port),
        prefix,
        str(sensors),
        str(windows),
        str(rate),
        str(first_seq),
    ]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)


class Listener:
    """Counts messages on a topic filter (QoS 1) and keeps arrival times; health payloads give latencies."""

    def __init__(self, port: int, topic: str, *, latency: bool = False) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []
        self.latency = latency
        self.ready = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise SystemExit("subscription failed")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.last = now
        self.count += 1
        if self.latency:
            self.latencies.append((time.time_ns() - json.loads(msg.payload)["ts"]) / 1e6)

    def wait(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.count >= n

    def rate(self) -> float:
        return (self.count - 1) / max(self.last - self.first, 1e-9)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AgentProcess:
    def __init__(self, tmp: Path, port: int, prefix: str, bundle: Path, **settings: Any) -> None:
        cfg = {
            "broker": f"mqtt://127.0.0.1:{port}",
            "prefix": prefix,
            "agent_id": prefix,
            "model": str(bundle),
            "allow_unsigned": True,
            "store": str(tmp / f"{prefix}.db"),
            "metrics_port": 0,
            "batch_max_wait_ms": BATCH_WAIT_MS,
            **settings,
        }
        lines = [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
        path = tmp / f"{prefix}.toml"
        path.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRUWATCH_")}
        code = "from edge_agent.agent_cli import main; raise SystemExit(main(['run', '--config', %r, '--log-level', 'warning']))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code % str(path)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def wait_online(port: int, prefix: str) -> None:
    """Wait for the agent's retained status "online"."""
    got = threading.Event()
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-st-{time.time_ns()}")
    c.on_message = lambda cl, u, m: got.set() if b'"online"' in m.payload else None
    c.connect("127.0.0.1", port)
    c.subscribe(f"{prefix}/_agents/{prefix}/status", qos=1)
    c.loop_start()
    ok = got.wait(30)
    c.disconnect()
    c.loop_stop()
    if not ok:
        raise SystemExit("the agent did not come online")
    time.sleep(0.3)  # its vibration subscription follows the status message


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer windows and sensors (noisier)")
    p.add_argument("--sensors", type=int, default=1000)
    p.add_argument("--windows", type=int, default=10, help="windows per sensor for the throughput run")
    p.add_argument("--rate", type=float, default=1000.0, help="windows/s for the latency run")
    p.add_argument("--latency-s", type=float, default=10.0, help="seconds of paced publishing")
    p.add_argument("--tracked", type=int, default=10_000, help="sensors for the memory run")
    p.add_argument(
        "--only", choices=["throughput", "latency", "memory"], action="append", help="run only these parts"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.windows, args.latency_s, args.tracked = 3, 4.0, 3000

    from tests.edge_agent.gru_fixtures import build_bundle

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        bundle, _ = build_bundle(tmp / "bundle", hidden=64, outputs=2)
        broker, port = start_broker(tmp)
        try:
            parts = set(args.only or ["throughput", "latency", "memory"])
            if "throughput" in parts:
                rows += throughput(tmp, port, bundle, args)
            if "latency" in parts:
                rows += latency(tmp, port, bundle, args)
            if "memory" in parts:
                rows += memory(tmp, port, bundle, args)
        finally:
            broker.terminate()
            broker.wait(5)
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    print(
        f"\nedge agent, {args.sensors:,} sensors, {WINDOW}-sample float32 windows, local Mosquitto, QoS 1, "
        f"batch_max_wait_ms={BATCH_WAIT_MS}"
    )
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))
    return 0


Row = tuple[str, str, str, str]


def throughput(tmp: Path, port: int, bundle: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    n = args.sensors * args.windows
    # 1a. bare paho subscriber
    bare = Listener(port, "bare/+/+/vibration")
    pub = publish(port, "bare", args.sensors, args.windows)
    pub.communicate()
    bare.wait(n, 120)
    bare_rate = bare.rate()
    bare.close()
    # 1b. the agent
    agent = AgentProcess(tmp, port, "tput", bundle)
    wait_online(port, "tput")
    health = Listener(port, "tput/+/+/health")
    pub = publish(port, "tput", args.sensors, args.windows)
    pub.communicate()
    done = health.wait(n, 300)
    agent_rate = health.rate()
    health.close()
    agent.stop()
    rows.append(("bare paho subscriber", f"{bare_rate:,.0f} msg/s", f"{n:,} msgs", ""))
    rows.append(
        (
            "agent (health out)",
            f"{agent_rate:,.0f} win/s",
            f"{health.count:,}/{n:,} scored" + ("" if done else " (TIMEOUT)"),
            f"ratio {agent_rate / bare_rate:.0%} (goal >= 70%)",
        )
    )
    return rows


def latency(tmp: Path, port: int, bundle: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    # 2. latency at a paced rate
    agent = AgentProcess(tmp, port, "lat", bundle)
    wait_online(port, "lat")
    lat = Listener(port, "lat/+/+/health", latency=True)
    per_sensor = max(1, round(args.rate * args.latency_s / args.sensors))
    pub = publish(port, "lat", args.sensors, per_sensor, rate=args.rate)
    pub.communicate()
    lat.wait(args.sensors * per_sensor, 120)
    lat.close()
    agent.stop()
    ms = np.array(lat.latencies[len(lat.latencies) // 10 :])  # skip the warm-up tenth
    rows.append(
        (
            f"latency at {args.rate:,.0f} win/s",
            f"p50 {np.percentile(ms, 50):.1f} ms",
            f"p99 {np.percentile(ms, 99):.1f} ms",
            "goal p99 <= 50 ms",
        )
    )
    return rows


def memory(tmp: Path, port: int, bundle: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    # 3. memory with many tracked sensors: one window each, paced below the agent's capacity
    #    (steady state), then a second window each as fast as possible (a burst fills the queue).
    agent = AgentProcess(tmp, port, "mem", bundle, max_tracked_sensors=max(10_000, args.tracked))
    wait_online(port, "mem")
    idle_mb = agent.rss_mb()
    mem = Listener(port, "mem/+/+/health")
    publish(port, "mem", args.tracked, 1, rate=MEMORY_RATE).communicate()
    mem.wait(args.tracked, 300)
    time.sleep(1.0)
    steady_mb = agent.rss_mb()
    publish(port, "mem", args.tracked, 1, first_seq=1).communicate()
    mem.wait(2 * args.tracked, 300)
    mem.close()
    time.sleep(1.0)
    burst_mb = agent.rss_mb()
    agent.stop()
    rows.append(
        (
            f"RSS, {args.tracked:,} sensors tracked",
            f"{steady_mb:.0f} MB",
            f"idle {idle_mb:.0f} MB, after a burst {burst_mb:.0f} MB",
            "goal <= 150 MB",
        )
    )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
