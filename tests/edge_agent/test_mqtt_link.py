"""MqttLink against a real Mosquitto: decode, rejections, manual acks and redelivery, flow control, last will."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.mqtt_link import QUEUE_FULL, Inbound, MqttLink
from edge_agent.protocol import Window, encode_binary, encode_json, vibration_topic
from edge_agent.settings import AgentSettings

pytestmark = pytest.mark.mqtt

REPO = Path(__file__).resolve().parents[2]
PROTOCOLS = ["3.1.1", "5"]


def _settings(broker: Any, prefix: str, tmp_path: Path, **kw: Any) -> AgentSettings:
    base: dict[str, Any] = {
        "broker": broker.url,
        "prefix": prefix,
        "agent_id": "gw1",
        "mqtt_client_id": f"agent-{prefix}",
        "model": tmp_path / "bundle",
        "store": tmp_path / "agent.db",
        "allow_unsigned": True,
        "mqtt_reconnect_min_s": 1,
        "mqtt_reconnect_max_s": 2,
    }
    base.update(kw)
    return AgentSettings(**base)


def _window(seq: int, n: int = 256) -> Window:  # min_samples (256) by default
    samples = np.sin(np.arange(n, dtype=np.float32) * 0.1 * (seq + 1)).astype(np.float32)
    return Window(
        seq=seq, ts_ns=1_700_000_000_000_000_000 + seq * 10**9, fs=25600.0, rpm=1800.0, samples=samples
    )


class Peer:
    """A plain paho client playing the sensors' and the observers' part."""

    def __init__(self, broker: Any) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def subscribe(self, topic: str) -> None:
        got: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, rc, p: got.put(mid)
        _, mid = self.client.subscribe(topic, qos=1)
        assert got.get(timeout=5) == mid

    def next_json(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = self.messages.get(timeout=timeout)
        doc = json.loads(msg.payload)
        assert isinstance(doc, dict)
        return doc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peer(broker: Any) -> Iterator[Peer]:
    p = Peer(broker)
    yield p
    p.close()


def _collect(link: MqttLink, n: int, timeout: float = 5.0, settle: float = 0.0) -> list[Inbound]:
    """Up to `n` items within `timeout`, then whatever else arrives within `settle` seconds."""
    out: list[Inbound] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(link.get_batch(n - len(out), 0.1))
    end = time.monotonic() + settle
    while time.monotonic() < end:
        out.extend(link.get_batch(100, 0.05))
    return out


def _handled(link: MqttLink) -> int:
    """Messages the link finished with: queued or rejected."""
    stats = link.stats()
    return stats.accepted + sum(stats.rejected.values())


def _started(settings: AgentSettings, **kw: Any) -> MqttLink:
    link = MqttLink(settings, **kw)
    link.start()
    assert link.wait_connected(5), "link did not connect and subscribe within 5 s"
    return link


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_receives_and_decodes_binary_and_json(
    broker: Any, topic_prefix: str, tmp_path: Path, peer: Peer, protocol: str
) -> None:
    link = _started(_settings(broker, topic_prefix, tmp_path, mqtt_protocol=protocol))
    try:
        w0, w1 = _window(0), _window(1)
        peer.publish(vibration_topic(topic_prefix, "press7", "s0"), encode_binary(w0))
        peer.publish(vibration_topic(topic_prefix, "press7", "s-1"), encode_json(w1))
        items = _collect(link, 2)
        assert [(i.machine, i.sensor, i.key) for i in items] == [
            ("press7", "s0", "press7/s0"),
            ("press7", "s-1", "press7/s-1"),
        ]
        assert items[0].window == w0
        assert items[1].window == w1
        assert all(i.qos == 1 and not i.dup for i in items)
        assert all(link.ack(i) for i in items)
        stats = link.stats()
        assert (stats.received, stats.accepted, stats.acked, stats.rejected) == (2, 2, 2, {})
        assert stats.connects == 1
    finally:
        link.stop()


def test_corrupt_payloads_are_counted_and_not_redelivered(
    broker: Any, topic_prefix: str, tmp_path: Path, peer: Peer
) -> None:
    settings = _settings(broker, topic_prefix, tmp_path)
    link = _started(settings)
    try:
        good = vibration_topic(topic_prefix, "m1", "s0")
        peer.publish(good, b"garbage!")
        peer.publish(good, b'{"seq": 1, "ts": 5, "fs": 100.0, "rpm": 0, "samples": [1.0, NaN]}')
        peer.publish(good, encode_binary(_window(3))[:-4])  # truncated
        peer.publish(f"{topic_prefix}/bad id!/s0/vibration", encode_binary(_window(4)))
        peer.publish(f"{topic_prefix}/_agents/s0/vibration", encode_binary(_window(5)))
        peer.publish(good, encode_binary(_window(6)))
        items = _collect(link, 1)
        assert [i.window.seq for i in items] == [6]
        link.ack(items[0])
        stats = link.stats()
        assert stats.received == 6
        assert stats.rejected == {"bad_magic": 1, "bad_json": 1, "truncated": 1, "bad_id": 2}
    finally:
        link.stop()
    # Rejected messages were acknowledged: the persistent session holds nothing for us.
    again = _started(settings)
    try:
        assert _collect(again, 1, timeout=0.5) == []
    finally:
        again.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unacked_window_is_redelivered_after_reconnect(
    broker: Any, topic_prefix: str, tmp_path: Path, peer: Peer, protocol: str
) -> None:
    """The key guarantee: a window is gone from the broker only once the agent acked it."""
    settings = _settings(broker, topic_prefix, tmp_path, mqtt_protocol=protocol)
    topic = vibration_topic(topic_prefix, "m1", "s0")
    first = _started(settings)
    try:
        peer.publish(topic, encode_binary(_window(1)))
        peer.publish(topic, encode_binary(_window(2)))
        got = _collect(first, 2)
        assert [i.window.seq for i in got] == [1, 2]
        assert first.ack(got[0])  # results of seq 1 "stored"; seq 2 never acked
    finally:
        first.stop()
    peer.publish(topic, encode_binary(_window(3)))  # arrives while the agent is away
    second = _started(settings)
    try:
        # Whatever else came, nothing more arrives in the settle time: seq 1 was acked and stays gone.
        got = _collect(second, 2, settle=0.3)
        assert [i.window.seq for i in got] == [2, 3]
        assert got[0].dup  # the broker marks the redelivery
        assert got[0].window == _window(2)
        for item in got:
            assert second.ack(item)
    finally:
        second.stop()
    third = _started(settings)
    try:
        assert _collect(third, 1, timeout=0.5) == []  # all acked: nothing left in the session
    finally:
        third.stop()


def test_stale_ack_after_reconnect_is_skipped_and_redelivered(
    broker: Any, topic_prefix: str, tmp_path: Path, peer: Peer
) -> None:
    settings = _settings(
        broker, topic_prefix, tmp_path, mqtt_protocol="3.1.1", queue_max_size=2, queue_block_s=0.2
    )
    topic = vibration_topic(topic_prefix, "m1", "s0")
    link = _started(settings)
    try:
        for seq in range(5):
            peer.publish(topic, encode_binary(_window(seq)))
        deadline = time.monotonic() + 5
        while _handled(link) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = link.stats()
        assert stats.received == 5
        assert stats.rejected == {QUEUE_FULL: 3}  # queue of 2: three dropped without an ack
        batch = link.get_batch(10, 0.1)
        assert [i.window.seq for i in batch] == [0, 1]
        for item in batch:
            assert link.ack(item)
        # The queue drained: the next get_batch reconnects and the broker redelivers the dropped three.
        redelivered = _collect(link, 3)
        assert sorted(i.window.seq for i in redelivered) == [2, 3, 4]
        assert all(i.dup for i in redelivered)
        stats = link.stats()
        assert (stats.cycles, stats.connects) == (1, 2)
        assert stats.connection_losses == 0  # a deliberate reconnect is not a loss
        # An item from the old connection cannot be acked on the new one: skipped, counted.
        assert not link.ack(batch[0])
        assert link.stats().stale_acks == 1
        for item in redelivered:
            assert link.ack(item)
    finally:
        link.stop()


def test_mqtt5_receive_maximum_bounds_unacked_windows(
    broker: Any, topic_prefix: str, tmp_path: Path, peer: Peer
) -> None:
    settings = _settings(broker, topic_prefix, tmp_path, mqtt_protocol="5", queue_max_size=2)
    topic = vibration_topic(topic_prefix, "m1", "s0")
    link = _started(settings)
    try:
        for seq in range(5):
            peer.publish(topic, encode_binary(_window(seq)))
        time.sleep(0.3)
        assert link.stats().received == 2  # the broker waits for our acks
        assert link.stats().rejected == {}
        seqs: list[int] = []
        deadline = time.monotonic() + 5
        while len(seqs) < 5 and time.monotonic() < deadline:
            for item in link.get_batch(10, 0.1):
                seqs.append(item.window.seq)
                assert link.ack(item)
        assert seqs == [0, 1, 2, 3, 4]
        assert link.stats().rejected == {}
    finally:
        link.stop()


def test_publish_handle_completes_and_reports_outbox_ids(
    broker: Any, topic_prefix: str, tmp_path: Path, peer: Peer
) -> None:
    link = _started(_settings(broker, topic_prefix, tmp_path))
    try:
        topic = f"{topic_prefix}/m1/s0/alert"
        peer.subscribe(topic)
        handles = [
            link.publish(topic, json.dumps({"n": i}).encode(), qos=1, outbox_id=100 + i) for i in range(3)
        ]
        assert all(h.wait(5) for h in handles)
        assert sorted(link.take_published()) == [100, 101, 102]
        assert link.take_published() == []
        assert link.in_flight_outbox_ids() == set()
        assert [peer.next_json()["n"] for _ in range(3)] == [0, 1, 2]
        # A new model is announced on the retained status topic.
        peer.subscribe(link.status_topic)
        assert peer.next_json() == {"state": "online", "model": ""}  # the retained one
        link.set_model_version("v2")
        assert peer.next_json() == {"state": "online", "model": "v2"}
        # ... with its thresholds, as protocol.encode_status writes them (dashboards draw them)
        link.set_model_version("v3", (0.4, 0.7))
        assert peer.next_json() == {
            "state": "online",
            "model": "v3",
            "thresholds": {"warning": 0.4, "alarm": 0.7},
        }
    finally:
        link.stop()


_AGENT = textwrap.dedent(
    """
    import sys, time
    from edge_agent.logs import configure_logging
    from edge_agent.mqtt_link import MqttLink
    from edge_agent.settings import load_settings
    configure_logging("info")  # as the CLI does: log lines go to stderr, stdout is ours
    link = MqttLink(load_settings(None), model_version="v7")
    link.start()
    assert link.wait_connected(10)
    print("ready", flush=True)
    item = link.get(timeout=10)
    print("got", item.window.seq, flush=True)   # never acked: the process dies first
    time.sleep(60)
    """
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_killed_agent_leaves_last_will_and_its_unacked_window(
    broker: Any, topic_prefix: str, tmp_path: Path, peer: Peer, protocol: str
) -> None:
    settings = _settings(broker, topic_prefix, tmp_path, mqtt_protocol=protocol)
    peer.subscribe(f"{topic_prefix}/_agents/gw1/status")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRUWATCH_")}
    env.update(
        PYTHONPATH=str(REPO),
        GRUWATCH_BROKER=broker.url,
        GRUWATCH_PREFIX=topic_prefix,
        GRUWATCH_AGENT_ID="gw1",
        GRUWATCH_MQTT_CLIENT_ID=settings.client_id,
        GRUWATCH_MQTT_PROTOCOL=protocol,
        GRUWATCH_MODEL=str(tmp_path / "bundle"),
        GRUWATCH_STORE=str(tmp_path / "agent.db"),
        GRUWATCH_TRUSTED_KEYS=str(tmp_path / "k.pub"),
    )
    with subprocess.Popen([sys.executable, "-c", _AGENT], stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "ready"
            assert peer.next_json() == {"state": "online", "model": "v7"}
            peer.publish(vibration_topic(topic_prefix, "m1", "s0"), encode_binary(_window(42)))
            assert proc.stdout.readline().strip() == "got 42"
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT, no offline message of its own
            proc.wait(timeout=10)
    assert peer.next_json() == {"state": "offline", "model": "v7"}  # the broker's last will
    # The same agent (client id) coming back gets the window the dead one never acknowledged.
    link = _started(settings, model_version="v8")
    try:
        assert peer.next_json() == {"state": "online", "model": "v8"}
        got = _collect(link, 1)
        assert [i.window.seq for i in got] == [42]
        assert link.ack(got[0])
    finally:
        link.stop()
    assert peer.next_json() == {"state": "offline", "model": "v8"}  # a clean stop says so itself


def test_lost_connection_is_counted_and_reconnected(broker: Any, topic_prefix: str, tmp_path: Path) -> None:
    settings = _settings(broker, topic_prefix, tmp_path, mqtt_protocol="3.1.1")
    link = _started(settings)
    intruder = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=settings.client_id, clean_session=False
    )
    try:
        intruder.connect(broker.host, broker.port)  # same client id: the broker drops the link's connection
        intruder.loop(1.0)
        intruder.disconnect()
        deadline = time.monotonic() + 10
        while link.stats().connects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.wait_connected(5)
        stats = link.stats()
        assert stats.connection_losses == 1
        assert stats.connects == 2  # paho reconnected by itself (reconnect_delay_set backoff)
        assert stats.last_error is not None
        assert stats.last_error.startswith("connection lost")
    finally:
        link.stop()


# --- mqtts with a user and password, against a private TLS Mosquitto ------------------------------


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A Mosquitto with a TLS listener signed by a throwaway CA and one user (agent / s3cret)."""
    import datetime
    import shutil
    import socket

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.conftest import _free_port, _wait_listening

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd")
    if not Path(binary).exists() or passwd is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed for the TLS test (apt install mosquitto)")
    d = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    srv_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("gruwatch test CA", ca_key, "gruwatch test CA", ca_key, ca=True)
    srv_cert = cert("localhost", srv_key, "gruwatch test CA", ca_key, ca=False)
    (d / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(
        srv_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    subprocess.run(
        [passwd, "-b", "-c", str(d / "passwd"), "agent", "s3cret"], check=True, capture_output=True
    )
    port = _free_port()
    (d / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\nkeyfile {d / 'server.key'}\n"
        f"allow_anonymous false\npassword_file {d / 'passwd'}\n"
        "persistence false\nlog_type error\n"
        # Stay the user we are: as root Mosquitto would switch to "mosquitto" and then fail
        # to read the files in this private temporary folder (ignored when not root).
        "user root\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(d / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        if not _wait_listening(port):
            proc.kill()
            _, err = proc.communicate(timeout=5)
            pytest.fail(f"TLS mosquitto did not start: {err.decode(errors='replace')}")
        with socket.create_connection(("127.0.0.1", port)):
            pass
        yield SimpleNamespace(host="localhost", port=port, url=f"mqtts://localhost:{port}"), d / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        assert proc.stderr is not None
        proc.stderr.close()


def test_mqtts_with_ca_file_and_password(
    tls_broker: tuple[Any, Path], topic_prefix: str, tmp_path: Path
) -> None:
    broker, ca = tls_broker
    good = _settings(
        broker,
        topic_prefix,
        tmp_path,
        mqtt_ca_file=ca,
        mqtt_username="agent",
        mqtt_password="s3cret",
    )
    link = _started(good)
    sender = MqttLink(
        _settings(
            broker,
            topic_prefix,
            tmp_path,
            mqtt_ca_file=ca,
            mqtt_username="agent",
            mqtt_password="s3cret",
            agent_id="sender",
            mqtt_client_id=f"sender-{topic_prefix}",
        )
    )
    sender.start()
    try:
        assert sender.wait_connected(5)
        assert sender.publish(vibration_topic(topic_prefix, "m1", "s0"), encode_binary(_window(9))).wait(5)
        got = _collect(link, 1)
        assert [i.window.seq for i in got] == [9]
        assert link.ack(got[0])
    finally:
        sender.stop()
        link.stop()
    bad = MqttLink(
        _settings(
            broker,
            topic_prefix,
            tmp_path,
            mqtt_ca_file=ca,
            mqtt_username="agent",
            mqtt_password="wrong",
            mqtt_client_id=f"bad-{topic_prefix}",
        )
    )
    bad.start()
    try:
        assert not bad.wait_connected(1.0)
        stats = bad.stats()
        assert stats.connects == 0
        assert stats.last_error is not None
        assert "refused" in stats.last_error
    finally:
        bad.stop()


def test_only_mqtt_link_imports_paho() -> None:
    """Rule: in edge_agent only mqtt_link.py talks to paho (one place for the MQTT client's quirks)."""
    import re

    pattern = re.compile(r"^\s*(import\s+paho|from\s+paho[\s.])", re.MULTILINE)
    offenders = [
        p.name
        for p in sorted((REPO / "edge_agent").glob("*.py"))
        if p.name != "mqtt_link.py" and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert pattern.search((REPO / "edge_agent" / "mqtt_link.py").read_text(encoding="utf-8"))


def test_get_batch_returns_what_is_there_without_waiting_to_fill(
    broker: Any, topic_prefix: str, peer: Peer, tmp_path: Path
) -> None:
    link = MqttLink(_settings(broker, topic_prefix, tmp_path))
    link.start()
    try:
        assert link.wait_connected(10)
        topic = vibration_topic(topic_prefix, "m1", "s0")
        for seq in range(3):
            peer.publish(topic, encode_binary(_window(seq)))
        deadline = time.monotonic() + 5
        while link.qsize() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        batch = link.get_batch(100, 5.0)  # three waiting, nothing more coming
        took = time.monotonic() - t0
        assert [it.window.seq for it in batch] == [0, 1, 2]
        assert took < 2.5, f"get_batch waited {took:.2f} s for a batch that could not fill"
        assert link.get_batch(100, 0.05) == []
        for it in batch:
            link.ack(it)
    finally:
        link.stop()


def test_extra_subscription_hands_payloads_to_its_callback(
    broker: Any, topic_prefix: str, peer: Peer, tmp_path: Path
) -> None:
    link = MqttLink(_settings(broker, topic_prefix, tmp_path))
    got: queue.Queue[bytes] = queue.Queue()
    control = f"{topic_prefix}/_agents/gw1/control"
    link.add_subscription(control, got.put)
    late: queue.Queue[bytes] = queue.Queue()
    link.start()
    try:
        assert link.wait_connected(10)
        time.sleep(0.2)  # the extra subscription follows the vibration one
        peer.publish(control, b"hello")
        assert got.get(timeout=5) == b"hello"
        link.add_subscription(f"{topic_prefix}/_agents/gw1/later", late.put)  # after start: at once
        time.sleep(0.3)
        peer.publish(f"{topic_prefix}/_agents/gw1/later", b"again")
        assert late.get(timeout=5) == b"again"
        assert link.received_on(control) == 1
        assert link.stats().received == 0  # not vibration windows
        with pytest.raises(ValueError, match="exact topic"):
            link.add_subscription(f"{topic_prefix}/+/x", got.put)
    finally:
        link.stop()


def test_request_reply_returns_the_first_accepted_answer(broker: Any, topic_prefix: str, peer: Peer) -> None:
    from edge_agent.mqtt_request import RequestError, request_reply

    ask, answer = f"{topic_prefix}/ask", f"{topic_prefix}/answer"

    def respond(c: Any, u: Any, m: Any) -> None:
        if m.topic == ask:
            c.publish(answer, b"not json")
            c.publish(answer, json.dumps({"echo": m.payload.decode()}).encode())

    peer.client.on_message = respond
    peer.subscribe(ask)
    got = request_reply(broker.url, ask, b"ping", answer, timeout_s=10, accept=lambda b: b.startswith(b"{"))
    assert json.loads(got) == {"echo": "ping"}
    with pytest.raises(RequestError) as err:
        request_reply(broker.url, f"{topic_prefix}/nobody", b"x", f"{topic_prefix}/silence", timeout_s=0.5)
    assert err.value.stage == "answer"
    with pytest.raises(RequestError) as err:
        request_reply("http://localhost", ask, b"x", answer)
    assert err.value.stage == "connect"
