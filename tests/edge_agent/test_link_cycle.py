"""MqttLink's deliberate reconnect against a real Mosquitto: it never waits on paho's network thread while
that thread waits on our own full queue, and nothing dropped on the full queue is lost.

The bug this guards against: after windows were dropped on a full queue, `get_batch` reconnected
(`_cycle` → `loop_stop`, which joins paho's thread) while paho's thread, reading one packet per message
in flight, blocked up to `queue_block_s` on each window it could not queue — the consumer that would
have drained the queue was the one waiting: minutes, a hang in practice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.mqtt_link import QUEUE_FULL, Inbound, MqttLink
from edge_agent.protocol import Window, encode_binary, vibration_topic
from edge_agent.settings import AgentSettings
from tests.conftest import Broker
from tests.edge_agent.agent_testing import close_client, mqtt_client

pytestmark = pytest.mark.mqtt

N = 40
BLOCK_S = 3.0  # how long a full queue may block paho's thread on one window (queue_block_s)


def _window(seq: int) -> Window:
    samples = np.sin(np.arange(256, dtype=np.float32) * 0.01 * (seq + 1)).astype(np.float32)
    return Window(seq=seq, ts_ns=1_700_000_000 * 10**9 + seq * 10**9, fs=25600.0, rpm=1800.0, samples=samples)


def test_reconnect_after_drops_never_waits_on_the_blocked_network_thread(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    """MQTT 3.1.1 (no Receive Maximum: with MQTT 5 the broker sends no more unacked QoS 1 windows than
    the queue holds, so they cannot overflow it)."""
    settings = AgentSettings(
        broker=broker.url,
        prefix=topic_prefix,
        agent_id="gw1",
        mqtt_client_id=f"agent-{topic_prefix}",
        model=tmp_path / "bundle",
        store=tmp_path / "agent.db",
        allow_unsigned=True,
        mqtt_protocol="3.1.1",
        mqtt_reconnect_min_s=1,
        mqtt_reconnect_max_s=2,
        queue_max_size=2,
        queue_block_s=BLOCK_S,
    )
    link = MqttLink(settings)
    link.start()
    pub = mqtt_client(broker)
    seen: set[int] = set()
    longest: list[float] = [0.0]
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            deadline = time.monotonic() + 60
            while len(seen) < N and time.monotonic() < deadline:
                t0 = time.monotonic()
                batch: list[Inbound] = link.get_batch(8, 0.05)
                longest[0] = max(longest[0], time.monotonic() - t0)
                seen.update(item.window.seq for item in batch)
                link.ack_many(batch)  # "committed" at once; acks from an old connection are skipped
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)

    try:
        assert link.wait_connected(10)
        topic = vibration_topic(topic_prefix, "m1", "s0")
        infos = [pub.publish(topic, encode_binary(_window(k)), qos=1) for k in range(N)]
        for info in infos:
            info.wait_for_publish(10)
        deadline = time.monotonic() + 10
        while link.stats().rejected.get(QUEUE_FULL, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.stats().rejected.get(QUEUE_FULL, 0) >= 1, "no window was dropped on the full queue"
        # Publishes in flight make paho read that many packets per loop before it writes anything:
        # the case where the old _cycle waited once per unread window.
        for k in range(100):
            link.publish(f"{topic_prefix}/m1/s0/health", b'{"k": %d}' % k, qos=1)
        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        worker.join(70)
        hung = worker.is_alive()
        if hung:
            link._stopping = True  # release paho's thread so the consumer (and this test) can finish
            worker.join(10)
    finally:
        link.stop(timeout=1.0)
        close_client(pub)
    assert not hung, "get_batch hung: the reconnect waited on paho's thread blocked on the full queue"
    assert not failure, failure
    stats = link.stats()
    assert stats.cycles >= 1, "the link never reconnected to have the dropped windows redelivered"
    print(f"\nFIGURE longest get_batch with a reconnect: {longest[0]:.2f} s (queue block {BLOCK_S} s)")
    # The reconnect did not wait for even one full-queue block of paho's thread.
    assert longest[0] < BLOCK_S, f"a get_batch took {longest[0]:.1f} s: it waited on the blocked thread"
    assert seen == set(range(N)), f"lost windows: {sorted(set(range(N)) - seen)}"  # all redelivered
