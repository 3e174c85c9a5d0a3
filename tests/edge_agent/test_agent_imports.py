"""Whole `gruwatch agent run` processes: light imports, SIGTERM within 5 s, no window lost to SIGKILL.

The agent runs in a child process exactly as on a gateway (`edge_agent.agent_cli.main(["run", "--config",
FILE])`); the tests publish windows to it and read its health messages. The first sends SIGTERM and
reads the list of modules the child had loaded when it exited (no torch, pandas, scikit-learn, scipy or
pyarrow); the second kills it mid-stream and restarts it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable

import numpy as np
import pytest

from edge_agent.protocol import Window, encode_binary, vibration_topic
from tests.conftest import Broker
from tests.edge_agent.agent_testing import (
    AgentProcess,
    Models,
    StatusWatcher,
    Subscriber,
    close_client,
    mqtt_client,
    publish,
)

FORBIDDEN = ("torch", "pandas", "sklearn", "scipy", "pyarrow")
#: Not needed to serve and slow to import on a loaded gateway (docs/performance.md, "Agent start").
NOT_AT_START = ("rich", "pydantic_settings")

CHILD = """
import json, sys
from edge_agent.agent_cli import main
rc = main(["run", "--config", sys.argv[1], "--log-format", "json"])
loaded = sorted(m for m in sys.modules if m.split(".", 1)[0] in {forbidden})
print(json.dumps({{"rc": rc, "forbidden": loaded}}))
"""


@pytest.mark.mqtt
def test_agent_process_scores_stops_on_sigterm_and_stays_light(
    broker: Broker, topic_prefix: str, agent_process: Callable[..., AgentProcess], models: Models
) -> None:
    agent = agent_process("proc", batch_max_wait_ms=10)
    store = agent.store
    sub = Subscriber(broker, topic_prefix)
    watcher = StatusWatcher(broker, topic_prefix, agent.agent_id)
    status = watcher.status
    proc = agent.start(CHILD.format(forbidden=repr(set(FORBIDDEN + NOT_AT_START))), stdout=subprocess.PIPE)
    pub = mqtt_client(broker)
    try:
        assert sub.wait(watcher.online, 30), "agent never came online"
        rng = np.random.default_rng(0)
        topic = vibration_topic(topic_prefix, "press1", "s0")
        for k in range(20):
            w = Window(
                k, 10**18 + k * 10**10, 25600.0, 1500.0, (0.1 * rng.standard_normal(2560)).astype(np.float32)
            )
            publish(pub, topic, encode_binary(w))
        assert sub.wait(lambda: len(sub.health) >= 20), f"{len(sub.health)} of 20 health messages"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        agent.kill_all()
        close_client(pub)
        watcher.close()
        sub.close()
    assert proc.returncode == 0, err[-3000:]
    assert elapsed < 5.0, f"SIGTERM to exit took {elapsed:.1f} s"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rc"] == 0
    assert result["forbidden"] == [], f"the agent imported {result['forbidden']}"
    assert [h.seq for h in sub.health] == list(range(20))
    # The logs are JSON lines, and the retained status says offline after a clean stop.
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "agent_started" in events
    assert "agent_stopped" in events
    assert status[-1]["state"] == "offline"
    # The status announces the served model and its thresholds (what dashboards draw).
    card = json.loads((models.v1 / "card.json").read_text())
    online = [st for st in status if st["state"] == "online"]
    assert online[-1]["model"] == card["model_version"]
    assert online[-1]["thresholds"] == {k: card["thresholds"][k] for k in ("warning", "alarm")}
    # States were flushed on shutdown.
    from edge_agent.store import Store

    with Store.open(store, budget_bytes=1 << 30) as s:
        assert s.counts()["states"] == 1
        assert s.counts()["windows"] == 20
        assert s.load_states()["press1/s0"].last_seq == 19


@pytest.mark.mqtt
def test_a_killed_agent_loses_no_window(
    broker: Broker, topic_prefix: str, agent_process: Callable[..., AgentProcess]
) -> None:
    """SIGKILL mid-stream, restart: every window still gets its health message (at least once).

    Windows are acked only after their results are committed, so the broker redelivers whatever the
    killed agent had not finished; nothing published is lost.
    """
    agent = agent_process("kill", batch_max_wait_ms=10, states_save_interval_s=0.5)
    start = agent.start
    sub = Subscriber(broker, topic_prefix)
    watcher = StatusWatcher(broker, topic_prefix, agent.agent_id)
    pub = mqtt_client(broker)
    rng = np.random.default_rng(1)
    sensors = ("s0", "s1", "s2")
    n = 60

    def send(k: int) -> None:
        for s in sensors:
            x = (0.1 * rng.standard_normal(2560)).astype(np.float32)
            w = Window(k, 10**18 + k * 10**10, 25600.0, 1500.0, x)
            pub.publish(vibration_topic(topic_prefix, "press1", s), encode_binary(w), qos=1)

    proc = start()
    try:
        assert sub.wait(watcher.online, 30)
        for k in range(n // 2):
            send(k)
        assert sub.wait(lambda: len(sub.health) >= 20)
        proc.kill()  # mid-stream: some windows scored, some committed but not acked, some queued
        proc.communicate(timeout=10)
        for k in range(n // 2, n):  # the broker keeps these for the dead agent's session
            send(k)
        time.sleep(0.5)
        before = len(sub.health)
        proc = start()
        assert sub.wait(
            lambda: {(h.sensor, h.seq) for h in sub.health} >= {(s, k) for s in sensors for k in range(n)}
        )
        AgentProcess.stop_cleanly(proc)
    finally:
        agent.kill_all()
        close_client(pub)
        watcher.close()
        sub.close()
    assert before < n * len(sensors), "the kill came too late to test anything"
    seen = [(h.sensor, h.seq) for h in sub.health]
    assert set(seen) == {(s, k) for s in sensors for k in range(n)}
    # At least once, not many times: only windows in flight at the kill and health messages the
    # broker had acknowledged but the outbox had not yet forgotten (it deletes once a second) repeat.
    assert len(seen) - len(set(seen)) <= 3 * 256
