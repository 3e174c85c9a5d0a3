"""The agent daemon on emulated aarch64 against the host's Mosquitto: a short stream scored end to end.

`gruwatch agent run --config FILE` runs under qemu exactly as systemd would start it on a gateway
(deploy/gruwatch-agent.service), talking TCP to a private Mosquitto on the host (tests/conftest.py).
The host publishes simulated windows of a failing machine and checks every health message against
the x86 Scorer on the same windows, then stops the agent with SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.bundle import load_bundle
from edge_agent.protocol import Window, decode_health, encode_binary, vibration_topic
from edge_agent.scorer import Scorer
from tests.arm.conftest import Signed
from tests.arm.helpers import ArmEnv, host_env, sim_windows
from tests.conftest import Broker

pytestmark = [pytest.mark.arm, pytest.mark.mqtt]

N_WINDOWS = 12
START_TIMEOUT_S = 300.0  # emulated imports take seconds, many more on a busy machine


class Peer:
    """One paho client on the host that records what arrives on its subscriptions."""

    def __init__(self, broker: Broker, topics: list[str]) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []
        subscribed = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"arm-{uuid.uuid4().hex[:10]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(10), "no SUBACK from the test broker"

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def received(self, suffix: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _states(peer: Peer) -> list[str]:
    return [json.loads(p).get("state", "") for p in peer.received("/status")]


def test_emulated_agent_scores_a_stream_and_stops_on_sigterm(
    arm_env: ArmEnv, signed_bundle: Signed, broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    agent_id = f"arm-{topic_prefix[-12:]}"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'broker = "{broker.url}"\nprefix = "{topic_prefix}"\nagent_id = "{agent_id}"\n'
        f'model = "{signed_bundle.bundle}"\ntrusted_keys = ["{signed_bundle.pub}"]\n'
        f'store = "{tmp_path / "agent.db"}"\nmetrics_port = 0\n'
    )
    windows = [
        Window(k, 10**18 + k * 10**10, w.fs, w.rpm, w.samples) for k, w in enumerate(sim_windows(N_WINDOWS))
    ]
    expected = Scorer.from_loaded(load_bundle(signed_bundle.bundle, trusted_keys=[signed_bundle.pub]))
    want = expected.score_windows(["press1/s0"] * len(windows), windows).health

    log = tmp_path / "agent.log"
    peer = Peer(broker, [f"{topic_prefix}/+/+/health", f"{topic_prefix}/_agents/{agent_id}/status"])
    with log.open("w") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(arm_env.python), "-m", "gruwatch", "agent", "run", "--config", str(config)],
            cwd=tmp_path,
            env=host_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        t0 = time.monotonic()
        online = peer.wait(lambda: "online" in _states(peer) or proc.poll() is not None, START_TIMEOUT_S)
        if proc.poll() is not None:
            pytest.fail(f"the emulated agent exited with {proc.poll()}:\n{log.read_text()[-4000:]}")
        assert online, f"the emulated agent did not come online within {START_TIMEOUT_S:.0f} s"
        start_s = time.monotonic() - t0
        topic = vibration_topic(topic_prefix, "press1", "s0")
        for w in windows:
            peer.client.publish(topic, encode_binary(w), qos=1).wait_for_publish(10)
        assert peer.wait(lambda: len(peer.received("/health")) >= N_WINDOWS, 120), (
            f"{len(peer.received('/health'))} of {N_WINDOWS} health messages"
        )
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        stop_s = time.monotonic() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        peer.close()
    err = log.read_text()
    assert proc.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    health = sorted((decode_health(p) for p in peer.received("/health")), key=lambda h: h.seq)
    assert [h.seq for h in health] == list(range(N_WINDOWS))
    assert all(h.machine == "press1" and h.sensor == "s0" for h in health)
    got = [h.score for h in health]
    worst = max(abs(float(a) - float(b)) for a, b in zip(got, want, strict=True))
    assert worst <= 1e-5, f"aarch64 agent vs x86 Scorer: max |diff| = {worst:.2e}\n{got}\n{want.tolist()}"
    assert _states(peer)[-1] == "offline", "the retained status should say offline after a clean stop"
    print(f"emulated agent: online after {start_s:.1f} s, stopped {stop_s:.1f} s after SIGTERM")
