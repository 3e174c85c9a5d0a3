"""Benchmark: the edge agent end to end through a local Mosquitto, against a bare paho subscriber.

Prints one table with three measurements (each agent runs as `gruwatch agent run` in its own process,
as on a gateway; the publisher is another process; this process only listens):

1. throughput: `--sensors` sensors × `--windows` windows of 2,560 float32 samples (binary, QoS 1)
   published as fast as the publisher can. The bare paho subscriber (QoS 1, counting only: the ceiling
   of a Python subscriber on this broker link) and the agent (decode, features, one batched GRU step,
   alarms, SQLite commit, ack, health message) receive the same messages; the rate is messages (health
   messages, for the agent) from first to last. Goals (issue 12): agent / bare ≥ 100 % and ≥ 10,000
   windows/s on 2 cores.
2. latency: the same sensors at a paced `--rate` windows/s; p50 / p99 from the window's timestamp (set
   when it is published) to its health message arriving here (goal p99 ≤ 10 ms at 1,000 windows/s),
   beside the same windows' transit to a bare paho subscriber (publish → broker → subscriber).
3. memory: resident set size of an agent process holding `--tracked` sensors' states after one window
   each, published at 2,000 windows/s, beside the same process idle; goal ≤ 2 KB per tracked sensor
   beyond the idle process (100,000 sensors in ≤ 300 MB: `--tracked 100000`); then again after a
   second window each sent as fast as possible, which fills the agent's queue and the batch buffers.

`--variant NAME:KEY=JSON,...` compares agent settings with the defaults in interleaved rounds
(throughput; with `--compare-latency`, window -> health p50 / p99 at `--rate` beside the bare transit).

`--json FILE` writes {"windows_per_s", "paho_ceiling_per_s", "p50_ms", "p99_ms", "rss_mb_10k_sensors"}
(plus the ratios, the references, the settings and the machine) to compare runs.

`--gateway-cpus 0,1` pins the agent (and the bare subscriber) to those CPUs and the publisher, broker
and listeners to the others, as on a dedicated gateway (`--broker-on-gateway`: the broker too).

`--profile` runs the throughput agent under cProfile (every thread: the scoring loop and paho's
network thread) and prints where its time goes: a table by stage (features, model step, store
commit, health encoding, publishing, acks, waiting for windows, decoding on the network thread) and
the top functions by own time. cProfile slows Python-heavy code more than numpy/onnxruntime/SQLite
calls, so read the shares, not the absolute rate, from a profiled run.

Model: a hand-made one-step GRU bundle with H = 64 and the default feature spec (no bearing geometry)
(tests/edge_agent/gru_fixtures.py), unsigned, so the agent runs with allow_unsigned. Run: `.venv/bin/python benchmarks/bench_agent.py [--quick]`. The machine is
shared (2 cores): expect ±20-50 % between runs (PERFORMANCE-NOTES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
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

from gruwatch.bench import describe, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_compare import compare, compare_latency  # noqa: E402
from agent_cpu import BROKER_PID, budget_figures, budget_rows, others_cpu  # noqa: E402
from agent_profile import PROFILED_RUN, print_profile  # noqa: E402
from gateway_cpus import configure, gateway_preexec, on_gateway  # noqa: E402

WINDOW = 2560
FS = 25600.0
#: The agent's batch_max_wait_ms here (--batch-wait-ms). get_batch waits this long for the FIRST window
#: only and then takes what is queued, so it no longer sets a latency floor; the setting's default is 50.
BATCH_WAIT_MS = 50
MEMORY_RATE = 2000.0  # windows/s while filling the state table in the memory run

PUBLISHER = r"""
import json, sys, time
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from edge_agent.protocol import Window, encode_binary
port, prefix, sensors, windows, rate, first_seq, first_sensor = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
rng = np.random.default_rng(0)
pool = [(0.05 * rng.standard_normal(2560)).astype(np.float32) for _ in range(64)]
c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(2000)
c.connect("127.0.0.1", int(port))
c.loop_start()
topics = [f"{prefix}/m{i:05d}/s0/vibration" for i in range(first_sensor, first_sensor + sensors)]
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


def start_broker(tmp: Path, *, on_gateway_cpus: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\nlog_type error\n"
    )
    pin = gateway_preexec() if on_gateway_cpus else None
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start; install it (apt-get install mosquitto)")


def publish(
    port: int,
    prefix: str,
    sensors: int,
    windows: int,
    rate: float = 0.0,
    first_seq: int = 0,
    first_sensor: int = 0,
) -> Any:
    params = (port, prefix, sensors, windows, rate, first_seq, first_sensor)
    cmd = [sys.executable, "-c", PUBLISHER, *map(str, params)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)


def _timestamp_ns(payload: bytes) -> int:
    """The window timestamp of a health message (JSON "ts") or of a binary window (int64 at byte 8)."""
    if payload[:1] == b"{":
        return int(json.loads(payload)["ts"])
    return int(struct.unpack_from("<q", payload, 8)[0])


class Listener:
    """Counts messages on a topic filter (QoS 1) and keeps arrival times; health payloads give latencies."""

    def __init__(self, port: int, topic: str, *, latency: bool = False, batched: bool = False) -> None:
        self.batched = batched  # health_batch: each message holds many windows' health
        self.messages = 0
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
        self.messages += 1
        if self.batched:
            items = json.loads(msg.payload)["health"]
            self.count += len(items)
            if self.latency:
                now_ns = time.time_ns()
                self.latencies.extend((now_ns - int(h["ts"])) / 1e6 for h in items)
            return
        self.count += 1
        if self.latency:
            self.latencies.append((time.time_ns() - _timestamp_ns(msg.payload)) / 1e6)

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
    def __init__(
        self,
        tmp: Path,
        port: int,
        prefix: str,
        bundle: Path,
        *,
        profile_dir: Path | None = None,
        **settings: Any,
    ) -> None:
        cfg = {
            "broker": f"mqtt://127.0.0.1:{port}",
            "prefix": prefix,
            "agent_id": prefix,
            "model": str(bundle),
            "allow_unsigned": True,
            "store": str(tmp / f"{prefix}.db"),
            "metrics_port": 0,
            "batch_max_wait_ms": settings.pop("batch_max_wait_ms", BATCH_WAIT_MS),
            **settings,
        }
        lines = [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
        path = tmp / f"{prefix}.toml"
        path.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRUWATCH_")}
        code = "from edge_agent.agent_cli import main; raise SystemExit(main(['run', '--config', %r, '--log-level', 'warning']))"
        cmd = [sys.executable, "-c", code % str(path)]

        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-c", PROFILED_RUN, str(profile_dir), str(path)]
        # stderr to a file, not a pipe: a pipe nobody reads blocks the agent once 64 KB of logs wait
        self.stderr_path = tmp / f"{prefix}.stderr"
        self._stderr = self.stderr_path.open("w")
        pin = gateway_preexec()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=self._stderr, text=True, preexec_fn=pin)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the agent process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
        return self.stderr_path.read_text()


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
        "--only",
        choices=["throughput", "latency", "memory", "compare"],
        action="append",
        help="run only these parts (compare: only with --variant)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=JSON,...",
        help="compare agent settings with the defaults in interleaved rounds, e.g. "
        "--variant batch:health_batch=true,mqtt_protocol=3.1.1 (runs only the comparison)",
    )
    p.add_argument(
        "--no-burst", action="store_true", help="memory: skip the second, unpaced window per sensor"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds of the --variant comparison (default 3)")
    p.add_argument(
        "--compare-latency",
        action="store_true",
        help="with --variant: compare window -> health p50 / p99 at --rate instead of throughput",
    )
    p.add_argument("--batch-wait-ms", type=int, default=BATCH_WAIT_MS, help="the agent's batch_max_wait_ms")
    p.add_argument(
        "--store-synchronous", choices=["FULL", "NORMAL"], default=None, help="the agent's store_synchronous"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any other agent setting, e.g. --set raw_ring_bytes=0 (value parsed as JSON, else a string)",
    )
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1"], default=None, help="the agent's mqtt_protocol")
    p.add_argument(
        "--profile", action="store_true", help="profile the throughput agent and print where time goes"
    )
    p.add_argument(
        "--gateway-cpus",
        metavar="LIST",
        help="pin the agent (and the bare subscriber) to these CPUs, e.g. 0,1, and the publisher, "
        "broker and listeners to the others: a dedicated gateway on a machine with more cores",
    )
    p.add_argument("--broker-on-gateway", action="store_true", help="with --gateway-cpus: the broker too")
    p.add_argument("--json", metavar="FILE", help="also write the figures (and the machine) to FILE as JSON")
    args = p.parse_args(argv)
    if args.broker_on_gateway and not args.gateway_cpus:
        p.error("--broker-on-gateway needs --gateway-cpus")
    if args.quick:
        args.windows, args.latency_s = 5, 5.0
    # Stopped by `gruwatch bench` (over its time share): still stop the broker and remove the files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(describe(), flush=True)
    placement = configure(args.gateway_cpus)
    if placement:
        print(placement + (", broker on the gateway" if args.broker_on_gateway else ""), flush=True)
    figures: dict[str, Any] = {"placement": placement} if placement else {}
    args.figures = figures

    from tests.edge_agent.gru_fixtures import build_bundle

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        bundle, _ = build_bundle(tmp / "bundle", hidden=64, outputs=2)
        broker, port = start_broker(tmp, on_gateway_cpus=args.broker_on_gateway)
        BROKER_PID[:] = [broker.pid]
        try:
            parts = set(args.only or (["compare"] if args.variant else ["throughput", "latency", "memory"]))
            if "compare" in parts and args.compare_latency:
                rows += compare_latency(
                    tmp, port, bundle, args, paced_latencies, transit_latencies, _agent_settings
                )
            elif "compare" in parts:
                rows += compare(tmp, port, bundle, args, bare_run, agent_run, _agent_settings)
            if "throughput" in parts:
                rows += throughput(tmp, port, bundle, args)
            if "latency" in parts:
                rows += latency(tmp, port, bundle, args)
            if "memory" in parts:
                rows += memory(tmp, port, bundle, args)
            if args.profile and "throughput" in parts:
                print_profile(args.profile_dir)
        finally:
            broker.terminate()
            broker.wait(5)
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    print(
        f"\nedge agent, {args.sensors:,} sensors, {WINDOW}-sample float32 windows, local Mosquitto, QoS 1, "
        f"batch_max_wait_ms={args.batch_wait_ms}, store_synchronous={args.store_synchronous or 'FULL (default)'}, "
        f"mqtt_protocol={args.mqtt_protocol or '5 (default)'}" + "".join(f", {x}" for x in args.set)
    )
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))
    if args.json:
        figures["settings"] = {
            "sensors": args.sensors,
            "windows": args.windows,
            "rate": args.rate,
            "tracked": args.tracked,
            "agent": _agent_settings(args),
        }
        write_json(args.json, figures)
        print(f"\nfigures written to {args.json}")
    return 0


def _agent_settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_max_wait_ms": args.batch_wait_ms}
    if args.store_synchronous:
        out["store_synchronous"] = args.store_synchronous
    if args.mqtt_protocol:
        out["mqtt_protocol"] = args.mqtt_protocol
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


Row = tuple[str, str, str, str]


def health_listener(
    port: int, prefix: str, args: argparse.Namespace, *, latency: bool = False, batched: bool | None = None
) -> Listener:
    """Listens to an agent's health messages: per sensor, or its batch topic with health_batch."""
    if _agent_settings(args).get("health_batch") if batched is None else batched:
        return Listener(port, f"{prefix}/_agents/{prefix}/health", latency=latency, batched=True)
    return Listener(port, f"{prefix}/+/+/health", latency=latency)


def bare_run(port: int, prefix: str, sensors: int, windows: int) -> tuple[float, float]:
    """The bare paho subscriber: (messages/s, CPU ms per message of this process while it received)."""
    n = sensors * windows
    with on_gateway():
        bare = Listener(port, f"{prefix}/+/+/vibration")
    cpu0 = time.process_time()
    with others_cpu("bare", n):
        publish(port, prefix, sensors, windows).communicate()
        bare.wait(n, 120)
    cpu = time.process_time() - cpu0
    bare.close()
    return bare.rate(), cpu / max(bare.count, 1) * 1e3


def agent_run(
    tmp: Path, port: int, bundle: Path, args: argparse.Namespace, prefix: str, settings: dict[str, Any]
) -> tuple[float, float, int]:
    """One agent process fed sensors × windows as fast as possible: (windows/s, agent CPU ms per
    window, windows scored)."""
    n = args.sensors * args.windows
    profile_dir = args.profile_dir if args.profile else None
    agent = AgentProcess(tmp, port, prefix, bundle, profile_dir=profile_dir, **settings)
    wait_online(port, prefix)
    batched = bool(settings.get("health_batch"))
    topic = f"{prefix}/_agents/{prefix}/health" if batched else f"{prefix}/+/+/health"
    health = Listener(port, topic, batched=batched)
    cpu0 = agent.cpu_s()
    with others_cpu("agent", n):
        publish(port, prefix, args.sensors, args.windows).communicate()
        health.wait(n, 300)
    cpu = agent.cpu_s() - cpu0
    health.close()
    agent.stop()
    return health.rate(), cpu / max(health.count, 1) * 1e3, health.count


def throughput(tmp: Path, port: int, bundle: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    n = args.sensors * args.windows
    args.profile_dir = tmp / "profile"
    bare_rate, bare_cpu = bare_run(port, "bare", args.sensors, args.windows)
    agent_rate, agent_cpu, scored = agent_run(tmp, port, bundle, args, "tput", _agent_settings(args))
    rows.append(
        (
            "bare paho subscriber (reference)",
            f"{bare_rate:,.0f} msg/s",
            f"{n:,} msgs",
            f"{bare_cpu:.3f} CPU ms/msg",
        )
    )
    rows.append(
        (
            "agent (health out)",
            f"{agent_rate:,.0f} win/s",
            f"{scored:,}/{n:,} scored" + ("" if scored >= n else " (TIMEOUT)"),
            f"{agent_rate / bare_rate:.0%} of bare (goal >= 100% and >= 10,000 win/s); "
            f"{agent_cpu:.3f} CPU ms/win = {agent_cpu / bare_cpu:.1f}x bare",
        )
    )
    if not args.gateway_cpus:  # the CPU budget assumes every process shares the same cores
        rows += budget_rows(bare_cpu, agent_cpu)
    args.figures.update(
        windows_per_s=round(agent_rate, 1),
        paho_ceiling_per_s=round(bare_rate, 1),
        ratio_to_ceiling=round(agent_rate / bare_rate, 4),
        agent_cpu_ms_per_window=round(agent_cpu, 4),
        bare_cpu_ms_per_message=round(bare_cpu, 4),
        scored=scored,
        published=n,
        **budget_figures(),
    )
    return rows


def paced_latencies(
    tmp: Path, port: int, bundle: Path, args: argparse.Namespace, prefix: str, settings: dict[str, Any]
) -> tuple[np.ndarray, int]:
    """Window -> health latencies (ms, the warm-up tenth left out) of an agent with `settings` at the
    paced `--rate` for `--latency-s`, and how many windows were timed."""
    agent = AgentProcess(tmp, port, prefix, bundle, **settings)
    wait_online(port, prefix)
    lat = health_listener(port, prefix, args, latency=True, batched=bool(settings.get("health_batch")))
    per_sensor = max(1, round(args.rate * args.latency_s / args.sensors))
    publish(port, prefix, args.sensors, per_sensor, rate=args.rate).communicate()
    lat.wait(args.sensors * per_sensor, 120)
    lat.close()
    agent.stop()
    return np.array(lat.latencies[len(lat.latencies) // 10 :]), len(lat.latencies)


def transit_latencies(port: int, args: argparse.Namespace, prefix: str) -> tuple[np.ndarray, int]:
    """The reference: the same paced windows' transit to a bare paho subscriber (no agent between)."""
    with on_gateway():
        bare = Listener(port, f"{prefix}/+/+/vibration", latency=True)
    per_sensor = max(1, round(args.rate * args.latency_s / args.sensors))
    publish(port, prefix, args.sensors, per_sensor, rate=args.rate).communicate()
    bare.wait(args.sensors * per_sensor, 120)
    bare.close()
    return np.array(bare.latencies[len(bare.latencies) // 10 :]), len(bare.latencies)


def latency(tmp: Path, port: int, bundle: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    # 2. latency at a paced rate
    ms, n = paced_latencies(tmp, port, bundle, args, "lat", _agent_settings(args))
    ref, n_ref = transit_latencies(port, args, "latbare")
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    r50, r99 = float(np.percentile(ref, 50)), float(np.percentile(ref, 99))
    rows.append(
        (
            f"transit to a bare subscriber at {args.rate:,.0f} win/s (reference)",
            f"p50 {r50:.1f} ms",
            f"p99 {r99:.1f} ms",
            f"{n_ref:,} windows",
        )
    )
    rows.append(
        (
            f"agent, window -> health at {args.rate:,.0f} win/s",
            f"p50 {p50:.1f} ms",
            f"p99 {p99:.1f} ms",
            f"goal p99 <= 10 ms; {n:,} windows",
        )
    )
    args.figures.update(
        p50_ms=round(p50, 2),
        p99_ms=round(p99, 2),
        latency_rate_per_s=args.rate,
        transit_p50_ms=round(r50, 2),
        transit_p99_ms=round(r99, 2),
    )
    return rows


def paced_first_windows(port: int, health: Listener, first: int, stop: int, chunk: int = 2000) -> None:
    """One window each for sensors first..stop-1 at MEMORY_RATE, in chunks, never more than one chunk
    ahead of the agent's health messages (a busy machine must not turn this into a queue overflow)."""
    for start in range(first, stop, chunk):
        n = min(chunk, stop - start)
        health.wait(start - chunk, 600)
        publish(port, "mem", n, 1, rate=MEMORY_RATE, first_sensor=start).communicate()
    health.wait(stop, 600)


def memory(tmp: Path, port: int, bundle: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    # 3. memory with many tracked sensors: one window each, paced below the agent's capacity
    #    (steady state), then a second window each as fast as possible (a burst fills the queue).
    agent = AgentProcess(
        tmp, port, "mem", bundle, max_tracked_sensors=max(10_000, args.tracked), **_agent_settings(args)
    )
    wait_online(port, "mem")
    idle_mb = agent.rss_mb()
    mem = health_listener(port, "mem", args)
    half = args.tracked // 2
    paced_first_windows(port, mem, 0, half)
    time.sleep(1.0)
    half_mb = agent.rss_mb()
    paced_first_windows(port, mem, half, args.tracked)
    time.sleep(1.0)
    steady_mb = agent.rss_mb()
    # The marginal cost of a sensor: the second half's growth (fixed costs such as the raw-sample
    # ring, the SQLite cache and allocator pools are already paid by the first half).
    marginal_kb = (steady_mb - half_mb) * 1024 / max(1, args.tracked - half)
    burst_mb = float("nan")
    if not args.no_burst:
        publish(port, "mem", args.tracked, 1, first_seq=1).communicate()
        mem.wait(2 * args.tracked, 300)
        time.sleep(1.0)
        burst_mb = agent.rss_mb()
    mem.close()
    agent.stop()
    per_sensor_kb = (steady_mb - idle_mb) * 1024 / args.tracked
    rows.append(("RSS, idle agent (reference)", f"{idle_mb:.0f} MB", "", ""))
    rows.append(
        (
            f"RSS, {args.tracked:,} sensors tracked",
            f"{steady_mb:.0f} MB",
            f"{per_sensor_kb:.2f} KB/sensor beyond idle ({marginal_kb:.2f} KB marginal); "
            f"after a burst {burst_mb:.0f} MB",
            "goal <= 2 KB/sensor; 100,000 sensors <= 300 MB",
        )
    )
    key = "rss_mb_10k_sensors" if args.tracked == 10_000 else f"rss_mb_{args.tracked}_sensors"
    args.figures.update(
        {
            key: round(steady_mb, 1),
            "rss_mb_idle": round(idle_mb, 1),
            "kb_per_sensor_beyond_idle": round(per_sensor_kb, 3),
            "kb_per_sensor_marginal": round(marginal_kb, 3),
            "rss_mb_after_burst": None if args.no_burst else round(burst_mb, 1),
        }
    )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
