"""The live view's server side over a real Mosquitto, without a browser: feed decoding, counting, serving."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from dashboards.app import serve
from dashboards.cli import main as dashboard_main
from edge_agent.protocol import (
    AgentStatus,
    Alert,
    Health,
    agent_health_topic,
    agent_status_topic,
    alert_topic,
    encode_alert,
    encode_health,
    encode_status,
    health_topic,
)

pytestmark = pytest.mark.mqtt


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_feed_decodes_health_alerts_status_and_counts_bad_messages(broker: Any, topic_prefix: str) -> None:
    handle = serve(broker.url, topic_prefix, port=0)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"feed-pub-{topic_prefix}")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        assert handle.feed.wait_subscribed(15), "the feed subscribes"
        p = topic_prefix
        pub.publish(
            health_topic(p, "m1", "s0"),
            encode_health(Health("m1", "s0", 1, 10**18, 0.9, "alarm", "v", {})),
            qos=1,
        )
        pub.publish(
            alert_topic(p, "m1", "s0"),
            encode_alert(Alert("m1", "s0", 1, 10**18, "alarm", "ok", 0.9, "v", "r")),
            qos=1,
            retain=True,
        )
        pub.publish(
            agent_status_topic(p, "edge-1"),
            encode_status(AgentStatus("online", "v", 0.5, 0.8)),
            qos=1,
            retain=True,
        )
        pub.publish(health_topic(p, "m2", "s0"), b"{not json", qos=1)
        pub.publish(
            health_topic(p, "m3", "s0"), encode_health(Health("other", "s0", 1, 1, 0.1, "ok", "v", {})), qos=1
        )
        pub.publish(f"{p}/_agents/edge-1/status", b"", qos=1, retain=True).wait_for_publish(
            5
        )  # cleared: ignored
        _wait(lambda: handle.model.counters.get("rejected_bad_topic") == 1, 10, "every message handled")
        snap = handle.model.snapshot()
        assert [t[:2] for t in snap["tiles"]] == [["m1/s0", "alarm"]]
        assert snap["feed"][0]["reason"] == "r"
        assert snap["agents"][0]["agent"] == "edge-1"
        assert handle.model.thresholds_for("v") == (0.5, 0.8)
        assert snap["counters"]["rejected_bad_json"] == 1
        with urllib.request.urlopen(handle.url, timeout=10) as r:
            assert "gruwatch fleet" in r.read().decode()
    finally:
        pub.loop_stop()
        pub.disconnect()
        handle.stop()
    assert not handle.thread.is_alive()


def test_health_batches_and_the_pages_poll(broker: Any, topic_prefix: str) -> None:
    """An agent run with health_batch is shown like one publishing per sensor; the poll sends deltas."""
    handle = serve(broker.url, topic_prefix, port=0)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"feed-batch-{topic_prefix}")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        assert handle.feed.wait_subscribed(15), "the feed subscribes"
        p = topic_prefix
        batch = [Health(f"m{k}", "s0", 1, 10**18, 0.2, "ok", "v", {}) for k in range(3)]
        body = b'{"agent":"gw-7","health":[' + b",".join(encode_health(h) for h in batch) + b"]}"
        pub.publish(agent_health_topic(p, "gw-7"), body, qos=1)
        pub.publish(agent_health_topic(p, "gw-8"), body, qos=1)  # names another agent: refused
        _wait(lambda: handle.model.counters.get("rejected_bad_topic") == 1, 10, "both batches handled")

        def poll(query: str = "") -> dict[str, Any]:
            with urllib.request.urlopen(f"{handle.url}gruwatch/fleet{query}", timeout=10) as r:
                assert r.headers["Content-Type"] == "application/json"
                return json.loads(r.read())  # type: ignore[no-any-return]

        first = poll()
        assert first["full"]
        assert sorted(t[0] for t in first["tiles"]) == ["m0/s0", "m1/s0", "m2/s0"]
        assert "gw-7" in first["html"]["agents"]
        assert "unannounced" in first["html"]["agents"]
        assert first["banner"] is None
        since = f"?epoch={first['epoch']}&version={first['version']}&at={first['now']}"
        assert poll(since)["tiles"] == []
        h = Health("m1", "s0", 2, 10**18 + 10**9, 0.95, "alarm", "v", {"agent": "gw-7"})
        pub.publish(health_topic(p, "m1", "s0"), encode_health(h), qos=1)
        _wait(lambda: poll(since)["tiles"], 10, "the delta")
        delta = poll(since)
        assert [t[:2] for t in delta["tiles"]] == [["m1/s0", "alarm"]]
        assert "1 alarm" in delta["html"]["chips"]
        assert poll("?epoch=x&version=oops")["full"]  # a malformed query: everything
    finally:
        pub.loop_stop()
        pub.disconnect()
        handle.stop()


def test_cli_refuses_bad_arguments_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dashboard_main(["--broker", "ftp://host"]) == 2
    assert "mqtt://" in capsys.readouterr().err
    assert dashboard_main(["--prefix", "a/+/b"]) == 2
    assert "prefix" in capsys.readouterr().err
    assert dashboard_main(["--port", "70000"]) == 2
    assert "0–65535" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot read thresholds"):
        dashboard_main(["--bundle", str(tmp_path)])
    card = tmp_path / "card.json"
    card.write_text(
        json.dumps({"thresholds": {"warning": 0.9, "alarm": 0.5, "raise_windows": 1, "clear_windows": 1}})
    )
    with pytest.raises(SystemExit, match="warning"):
        dashboard_main(["--bundle", str(tmp_path)])
