"""`simulate fleet` against a real Mosquitto: a subscriber sees exactly what was published, faults included."""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import ProtocolError
from edge_agent.protocol import decode_vibration, parse_sensor_topic, vibration_subscription
from simulator.faults import FaultConfig
from simulator.fleet_cli import FleetOptions, FleetReport, add_fleet_arguments, publish_fleet, run_fleet
from simulator.fleet_model import build_fleet
from simulator.publisher import PublishError, parse_broker_url
from tests.conftest import REPO, Broker, _wait_listening

pytestmark = pytest.mark.mqtt


@dataclass
class Subscriber:
    """A plain paho subscriber on `{prefix}/+/+/vibration` that keeps every message in arrival order."""

    broker: Broker
    prefix: str
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(vibration_subscription(self.prefix), qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def start(self) -> Subscriber:
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"
        return self

    def wait_for(self, n: int, timeout: float = 20.0, settle: float = 0.3) -> list[tuple[str, bytes]]:
        """Wait until `n` messages arrived, then a little longer to catch any extra ones."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(settle)
        with self._lock:
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker: Broker, topic_prefix: str) -> Iterator[Subscriber]:
    sub = Subscriber(broker, topic_prefix).start()
    yield sub
    sub.stop()


def _options(broker: Broker, prefix: str, **kw: object) -> FleetOptions:
    base: dict[str, object] = {
        "broker": broker.url,
        "prefix": prefix,
        "speedup": float("inf"),
        "start_ns": 1_750_000_000_000_000_000,
        "connect_timeout_s": 5.0,
    }
    base.update(kw)
    return FleetOptions(**base)  # type: ignore[arg-type]


def _by_sensor(messages: list[tuple[str, bytes]], prefix: str) -> dict[tuple[str, str], list[bytes]]:
    out: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for topic, payload in messages:
        t = parse_sensor_topic(topic, prefix)
        assert t.kind == "vibration"
        out[(t.machine, t.sensor)].append(payload)
    return out


@pytest.mark.parametrize(
    ("encoding", "dtype"), [("binary", "float32"), ("binary", "int16"), ("json", "float32")]
)
def test_subscriber_receives_exactly_the_windows_published(
    broker: Broker, topic_prefix: str, subscriber: Subscriber, encoding: str, dtype: str
) -> None:
    opts = _options(
        broker, topic_prefix, machines=2, sensors=2, seed=7, windows=12, encoding=encoding, dtype=dtype
    )
    report = publish_fleet(opts)
    assert report.stopped_by == "complete"
    assert report.flushed
    assert report.publish.published == report.faults.messages == report.faults.windows == 48
    got = _by_sensor(subscriber.wait_for(48), topic_prefix)
    runs = {(r.machine, r.sensor): r for r in build_fleet(2, 7, sensors=2)}
    assert set(got) == set(runs)
    for key, payloads in got.items():
        run = runs[key]
        windows = [decode_vibration(p) for p in payloads]
        assert [w.seq for w in windows] == list(range(12))  # one connection, QoS 1: in order
        for w in windows:
            expected, _ = run.window(w.seq)
            assert w.ts_ns == opts.start_ns + round(run.t(w.seq) * 1e9)
            assert w.fs == run.fs
            assert w.rpm == pytest.approx(run.rpm_at(w.seq), rel=1e-6)
            if dtype == "int16":  # lossless at the sensor's ADC step, up to float32 rounding
                np.testing.assert_allclose(w.samples, expected, rtol=1e-6, atol=1e-6 * run.adc_scale)
            else:
                np.testing.assert_array_equal(w.samples, expected)


def test_delivery_faults_seen_by_subscriber_match_exact_counters(
    broker: Broker, topic_prefix: str, subscriber: Subscriber
) -> None:
    p = 0.1
    faults = FaultConfig(drop=p, duplicate=p, reorder=p, clock_skew=0.5, clock_skew_max_s=10.0, silent=0.3)
    opts = _options(
        broker, topic_prefix, machines=6, sensors=2, seed=3, windows=120, faults=faults, fault_seed=1
    )
    report = publish_fleet(opts)
    f = report.faults
    assert report.unsent == 0
    assert report.flushed
    assert report.publish.published == f.messages
    assert f.silent_sensors >= 1
    assert f.skewed_sensors >= 1
    received = subscriber.wait_for(f.messages)
    assert len(received) == f.messages
    got = _by_sensor(received, topic_prefix)
    runs = {(r.machine, r.sensor): r for r in build_fleet(6, 3, sensors=2)}
    dups = inversions = missing = silent = skewed = 0
    for s in report.sensors:
        run = runs[(s.machine, s.sensor)]
        windows = [decode_vibration(pl) for pl in got.get((s.machine, s.sensor), [])]
        seen: set[int] = set()
        high = -1
        for w in windows:
            if w.seq in seen:
                dups += 1
            elif w.seq < high:
                inversions += 1
            seen.add(w.seq)
            high = max(high, w.seq)
            # clock skew: the sensor's timestamps are off by exactly its skew
            assert w.ts_ns - (report.start_ns + round(run.t(w.seq) * 1e9)) == s.skew_ns
        if s.silent_after is not None:
            silent += 1
            assert s.windows == s.silent_after
            assert max(seen) < s.silent_after
        else:
            assert s.windows == 120
        skewed += s.skew_ns != 0
        missing += s.windows - len(seen)
    assert (dups, inversions, missing) == (f.duplicated, f.reordered, f.dropped)
    assert (silent, skewed) == (f.silent_sensors, f.skewed_sensors)
    n = f.windows
    for count in (f.dropped, f.duplicated):
        assert abs(count - n * p) <= 5 * np.sqrt(n * p * (1 - p))
    assert (
        abs(f.reordered - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + n * p * p
    )  # swaps: see simulator/faults.py


@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_payload_faults_are_rejected_by_the_decoder_at_the_counted_rates(
    broker: Broker, topic_prefix: str, subscriber: Subscriber, encoding: str
) -> None:
    faults = FaultConfig(corrupt=0.1, nan_burst=0.03, nan_burst_length=3)
    opts = _options(
        broker, topic_prefix, machines=3, sensors=1, seed=5, windows=200, faults=faults, encoding=encoding
    )
    report = publish_fleet(opts)
    f = report.faults
    received = subscriber.wait_for(f.messages)
    assert len(received) == f.messages == f.windows == 600
    reasons: Counter[str] = Counter()
    decoded = 0
    for _, payload in received:
        try:
            w = decode_vibration(payload)
        except ProtocolError as exc:
            reasons[exc.reason] += 1
        else:
            decoded += 1
            assert np.isfinite(w.samples).all()
    k = f.corrupt_kinds
    if encoding == "binary":
        expected = {
            "nan": f.nan_windows,
            "bad_magic": k["magic"],
            "truncated": k["truncate"],
            "trailing": k["trailing"],
        }
    else:
        expected = {"bad_json": f.nan_windows + k["truncate"] + k["trailing"], "bad_magic": k["magic"]}
    assert reasons == {r: n for r, n in expected.items() if n}
    assert decoded == f.windows - f.corrupted - f.nan_windows
    assert abs(f.corrupted - 600 * 0.1) <= 5 * np.sqrt(600 * 0.1 * 0.9)
    assert f.nan_bursts >= 1
    assert f.nan_windows >= f.nan_bursts


def test_same_seed_gives_the_same_messages(broker: Broker, topic_prefix: str, subscriber: Subscriber) -> None:
    faults = FaultConfig(drop=0.2, duplicate=0.1, corrupt=0.1, nan_burst=0.05)
    opts = _options(broker, topic_prefix, machines=2, seed=2, windows=40, faults=faults)
    first = publish_fleet(opts)
    a = subscriber.wait_for(first.faults.messages)
    subscriber.messages.clear()
    second = publish_fleet(opts)
    b = subscriber.wait_for(second.faults.messages)
    assert first.faults == second.faults
    assert a == b


class _Proxy:
    """A TCP relay to the broker whose connections can be cut, to stand for a broker outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.server.close()
        self.cut()


def test_reconnects_after_the_connection_drops_and_loses_no_qos1_window(
    broker: Broker, topic_prefix: str, subscriber: Subscriber
) -> None:
    proxy = _Proxy((broker.host, broker.port))
    try:
        # 2 sensors, one window per 10 simulated s at 500×: 50 windows/s each, about 1.2 s in all.
        opts = _options(broker, topic_prefix, machines=2, seed=4, windows=60, speedup=500.0)
        opts.broker = f"mqtt://127.0.0.1:{proxy.port}"
        timer = threading.Timer(0.4, proxy.cut)
        timer.start()
        report = publish_fleet(opts)
        timer.join()
    finally:
        proxy.close()
    assert report.stopped_by == "complete"
    assert report.publish.disconnects >= 1
    assert report.publish.reconnects >= 1
    got = _by_sensor(subscriber.wait_for(120, settle=0.5), topic_prefix)
    for payloads in got.values():  # at least once: every window arrives, maybe twice
        assert {decode_vibration(p).seq for p in payloads} == set(range(60))
    assert len(got) == 2


def test_duration_is_wall_clock_and_stop_event_ends_the_run(broker: Broker, topic_prefix: str) -> None:
    # At 1× only window 0 (t = 0) is due within half a second.
    t = time.monotonic()
    report = publish_fleet(_options(broker, topic_prefix, machines=2, speedup=1.0, duration_s=0.5))
    assert report.stopped_by == "duration"
    assert 0.5 <= time.monotonic() - t < 5
    assert report.faults.windows == 2
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    report = publish_fleet(_options(broker, topic_prefix, machines=1, speedup=1.0), stop=stop)
    assert report.stopped_by == "signal"
    assert report.flushed


def test_unreachable_broker_fails_fast_with_advice(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    args = parser.parse_args(
        ["--broker", f"mqtt://127.0.0.1:{port}", "--connect-timeout", "1", "--windows", "1"]
    )
    assert run_fleet(args) == 1
    err = capsys.readouterr().err
    assert "could not reach an MQTT broker" in err
    assert "ensure-broker" in err


def test_broker_urls() -> None:
    assert parse_broker_url("mqtt://h:1884").url == "mqtt://h:1884"
    assert parse_broker_url("mqtts://h") == parse_broker_url("mqtts://h:8883")
    assert parse_broker_url("mqtts://h").tls
    assert not parse_broker_url("h").tls
    for bad, why in [
        ("http://h", "scheme"),
        ("mqtt://u:pw@h", "GRUWATCH_MQTT_USERNAME"),
        ("mqtt://h:99999", "port"),
    ]:
        with pytest.raises(PublishError, match=why):
            parse_broker_url(bad)


def test_cli_module_imports_cheaply_and_help_teaches() -> None:
    code = (
        "import sys, argparse, simulator.fleet_cli as f\n"
        "heavy = [m for m in ('paho', 'numpy', 'simulator.fleet_model') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "p = argparse.ArgumentParser(prog='fleet'); f.add_fleet_arguments(p); print(p.format_help())\n"
        "assert 'paho' not in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for phrase in (
        "--speedup",
        "'max'",
        "WALL-clock",
        "--windows",
        "GRUWATCH_MQTT_PASSWORD",
        "--drop",
        "--silent",
    ):
        assert phrase in out


def test_sigint_stops_cleanly_prints_summary_and_exits_0(
    broker: Broker, topic_prefix: str, subscriber: Subscriber, tmp_path: Path
) -> None:
    code = (
        "import argparse, sys\n"
        "from simulator.fleet_cli import add_fleet_arguments, run_fleet\n"
        "p = argparse.ArgumentParser(); add_fleet_arguments(p)\n"
        "sys.exit(run_fleet(p.parse_args(sys.argv[1:])))\n"
    )
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--broker", broker.url, "--prefix", topic_prefix, "--speedup", "100",
         "--machines", "2", "--progress", "--summary-json", str(summary)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    subscriber.wait_for(1, timeout=30, settle=0.2)  # publishing has begun
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped: signal" in out
    assert "windows" in err
    assert "reconnects" in err
    assert summary.exists()
    assert '"stopped_by": "signal"' in summary.read_text()


def test_report_serialises(broker: Broker, topic_prefix: str) -> None:
    report: FleetReport = publish_fleet(_options(broker, topic_prefix, machines=1, windows=3))
    d = report.to_dict()
    assert d["faults"]["windows"] == 3
    assert d["publish"]["published"] == 3
    assert d["sensors"][0]["topic"] == f"{topic_prefix}/m000/s0/vibration"
    assert "3 windows from 1 sensors" in report.summary()


def _password_line(user: str, password: str) -> str:
    """A Mosquitto 2 password-file line (PBKDF2-SHA512, as mosquitto_passwd writes it)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


def test_credentials_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    (tmp_path / "passwd").write_text(_password_line("sim", "s3cret"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
        "persistence false\nlog_type error\n" + (f"user {getpass.getuser()}\n" if os.geteuid() == 0 else "")
        # run as root (CI), Mosquitto would drop to its own user, which cannot read pytest's tmp folder
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_listening(port)
        private = Broker("127.0.0.1", port)
        parser = argparse.ArgumentParser()
        add_fleet_arguments(parser)
        args = parser.parse_args(
            ["--broker", private.url, "--machines", "1", "--windows", "2", "--speedup", "max"]
        )
        monkeypatch.delenv("GRUWATCH_MQTT_USERNAME", raising=False)
        assert run_fleet(args) == 1  # anonymous: refused
        assert "refused" in capsys.readouterr().err
        monkeypatch.setenv("GRUWATCH_MQTT_USERNAME", "sim")
        monkeypatch.setenv("GRUWATCH_MQTT_PASSWORD", "wrong")
        assert run_fleet(args) == 1
        assert "GRUWATCH_MQTT_PASSWORD" in capsys.readouterr().err
        monkeypatch.setenv("GRUWATCH_MQTT_PASSWORD", "s3cret")
        assert run_fleet(args) == 0
        assert "published 2 messages" in capsys.readouterr().out
    finally:
        proc.terminate()
        proc.wait(timeout=5)
