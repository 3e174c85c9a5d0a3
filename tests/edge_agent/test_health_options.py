"""The agent's health publishing options against a real Mosquitto: `health_batch` and `health_qos`.

With the defaults every window gets its own QoS 1 health message on its sensor's topic (the other e2e
tests); with `health_batch` a scored batch becomes one message on `{prefix}/_agents/{agent}/health`
holding exactly the per-window messages, and `health_qos = 0` drops the PUBACK round trips.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest

from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    Health,
    Window,
    agent_health_topic,
    decode_health,
    decode_health_batch,
    encode_binary,
    encode_health,
    vibration_topic,
)
from edge_agent.scorer import Scorer
from tests.conftest import Broker
from tests.edge_agent.agent_testing import Models, agent_settings, close_client, mqtt_client, publish, running

T0_NS = 1_700_000_000_000_000_000


def _windows(n: int, seed: int) -> list[Window]:
    rng = np.random.default_rng(seed)
    return [
        Window(
            k,
            T0_NS + k * 10**10,
            25_600.0,
            1_500.0,
            (0.02 * (k + 1) * rng.standard_normal(2560)).astype(np.float32),
        )
        for k in range(n)
    ]


class _Collector:
    def __init__(self, broker: Broker, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self.lock = threading.Lock()
        self.client = mqtt_client(broker)
        self.client.on_message = self._on_message
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        time.sleep(0.3)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos))

    def wait(self, pred: Any, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred(self.messages):
                    return True
            time.sleep(0.02)
        return False


@pytest.mark.mqtt
def test_batched_health_holds_every_window_once_and_nothing_goes_per_sensor(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path
) -> None:
    agent_id = f"agent-{topic_prefix[-12:]}"
    batch_topic = agent_health_topic(topic_prefix, agent_id)
    sensors = {("m1", "s0"): _windows(6, 1), ("m2", "s1"): _windows(6, 2)}
    seen = _Collector(broker, [f"{topic_prefix}/+/+/health", batch_topic])
    pub = mqtt_client(broker)
    try:
        settings = agent_settings(
            broker, topic_prefix, models, tmp_path / "a.db", health_batch=True, health_qos=0
        )
        with running(settings) as agent:
            for k in range(6):
                for (machine, sensor), ws in sensors.items():
                    publish(pub, vibration_topic(topic_prefix, machine, sensor), encode_binary(ws[k]))
            assert seen.wait(lambda m: sum(len(decode_health_batch(p)[1]) for _, p, _ in m) >= 12)
            assert agent.windows_scored == 12
    finally:
        close_client(pub)
        seen.client.loop_stop()
        seen.client.disconnect()
    assert all(topic == batch_topic for topic, _, _ in seen.messages), "no per-sensor health message"
    assert all(qos == 0 for _, _, qos in seen.messages)  # published at QoS 0: delivered at QoS 0
    healths: list[Health] = []
    for _, payload, _ in seen.messages:
        agent, items = decode_health_batch(payload)
        assert agent == agent_id
        healths += items
    for (machine, sensor), ws in sensors.items():
        mine = [h for h in healths if (h.machine, h.sensor) == (machine, sensor)]
        assert [h.seq for h in mine] == list(range(6))
        assert [h.extra["step"] for h in mine] == list(range(1, 7))
        scorer = Scorer.from_bundle(models.v1, trusted_keys=[models.pub])
        want = [scorer.score_one("ref", w).health for w in ws]
        np.testing.assert_allclose([h.score for h in mine], want, atol=1e-5)


@pytest.mark.mqtt
def test_health_qos_0_keeps_one_message_per_window_on_its_sensor_topic(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path
) -> None:
    ws = _windows(4, 3)
    seen = _Collector(broker, [f"{topic_prefix}/+/+/health"])
    pub = mqtt_client(broker)
    try:
        with running(agent_settings(broker, topic_prefix, models, tmp_path / "b.db", health_qos=0)):
            for w in ws:
                publish(pub, vibration_topic(topic_prefix, "m1", "s0"), encode_binary(w))
            assert seen.wait(lambda m: len(m) >= 4)
    finally:
        close_client(pub)
        seen.client.loop_stop()
        seen.client.disconnect()
    assert [decode_health(p).seq for _, p, _ in seen.messages] == [0, 1, 2, 3]
    assert {qos for _, _, qos in seen.messages} == {0}


def test_health_batch_round_trips_and_refuses_what_it_is_not() -> None:
    a = Health("m1", "s0", 4, 99, 0.25, "ok", "v3", {"step": 2})
    b = Health("m2", "s1", 5, 100, 0.75, "warning", "v3", {"step": 1, "state_reset": "gap"})
    payload = b'{"agent":"a1","health":[' + encode_health(a) + b"," + encode_health(b) + b"]}"
    assert decode_health_batch(payload) == ("a1", [a, b])
    assert decode_health_batch(b'{"agent":"a1","health":[]}') == ("a1", [])
    for bad in (b"[]", b'{"agent":"a1"}', b'{"agent":"a1","health":{}}', b'{"agent":"a1","health":[1]}',
                b'{"agent":"a1","health":[{"machine":"m1"}]}', b'{"agent":"bad id","health":[]}'):  # fmt: skip
        with pytest.raises(ProtocolError):
            decode_health_batch(bad)
