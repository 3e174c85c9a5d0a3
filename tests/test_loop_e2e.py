"""The user's loop end to end, on a private Mosquitto: collect → export → events → retrain → deploy → swap.

A simulated fleet runs to failure through a real agent (real paho, onnxruntime, SQLite) serving the
demo's shipped model; `gruwatch agent export` takes the store out, `gruwatch simulate fleet
--events-out` wrote the failures as a plant would record them, `gruwatch retrain` fine-tunes the
model on the collected features, compares champion and challenger on held-out machines and deploys
the winner over MQTT to the running agent while a second fleet keeps publishing. Every window the
broker acknowledged is scored exactly once across the swap, and later health messages carry the new
model version.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent_cli import main as agent_main
from edge_agent.bundle import sign_bundle
from edge_agent.daemon import Agent
from edge_agent.protocol import decode_health
from edge_agent.settings import load_settings
from edge_agent.signing import generate_keypair
from gruwatch.demo_model import BUNDLE_FILES, FLEET, SHIPPED
from simulator.cli import main as simulate
from simulator.fleet_cli import FleetOptions, publish_fleet
from tests.conftest import Broker
from trainer.data.events import load_events_csv
from trainer.retrain_cli import main as retrain_main

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

MACHINES, SEED = 10, 3
FLEET_ARGS = ["--horizon", str(int(FLEET["horizon_s"])), "--interval", str(FLEET["interval_s"])]


class Health:
    """Every health message under a prefix: (machine, sensor, seq, ts) -> model versions seen."""

    def __init__(self, broker: Broker, prefix: str) -> None:
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, str, int, int], list[str]] = {}
        self.arrivals: list[tuple[float, str]] = []
        ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"e2e-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._on
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{prefix}/+/+/health", qos=1)
        self.client.loop_start()
        assert ready.wait(10)

    def _on(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        h = decode_health(msg.payload)
        with self.lock:
            self.seen.setdefault((h.machine, h.sensor, h.seq, h.ts_ns), []).append(h.model)
            self.arrivals.append((time.monotonic(), h.model))

    def scored_by(self, model: str) -> int:
        with self.lock:
            return sum(1 for _, m in self.arrivals if m == model)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def wait_for(self, n: int, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.count() < n:
            time.sleep(0.1)
        return self.count()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_collect_export_retrain_deploy_swap(broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    key, pub = generate_keypair(tmp_path / "keys")
    v1 = tmp_path / "v1"
    v1.mkdir()
    for name in BUNDLE_FILES:
        shutil.copy2(SHIPPED / name, v1 / name)
    sign_bundle(v1, key)
    v1_version = json.loads((v1 / "card.json").read_text())["model_version"]
    settings = load_settings(
        None,
        broker=broker.url,
        prefix=topic_prefix,
        agent_id="e2e-gw",
        model=v1,
        trusted_keys=[pub],
        store=tmp_path / "agent.sqlite",
        metrics_port=0,
        batch_max_wait_ms=20,
    )
    health = Health(broker, topic_prefix)
    agent = Agent.from_settings(settings)
    thread = threading.Thread(target=agent.run, name="e2e-agent")
    thread.start()
    try:
        assert agent.link.wait_connected(15)
        # 1. A fleet runs to failure through the agent; the plant's log records the failures.
        events = tmp_path / "events.csv"
        summary = tmp_path / "fleet1.json"
        fleet_argv = [
            "fleet", "--broker", broker.url, "--prefix", topic_prefix, "--machines", str(MACHINES),
            "--seed", str(SEED), "--healthy-fraction", "0.4", "--speedup", "max", *FLEET_ARGS,
            "--start-time", "2026-01-01T00:00:00Z", "--events-out", str(events), "--summary-json", str(summary),
        ]  # fmt: skip
        rc = simulate(fleet_argv)
        assert rc == 0
        published_1 = json.loads(summary.read_text())["publish"]["acked"]
        assert health.wait_for(published_1) == published_1
        failures = [e for e in load_events_csv(events) if e.event == "failure"]
        assert len(failures) >= 3, "the fleet must give the retraining failures to learn from"

        # 2. Export while the agent keeps running (SQLite WAL: a reader beside the writer).
        collected = tmp_path / "collected"
        assert agent_main(["export", "--store", str(settings.store), "--out", str(collected)]) == 0
        manifest = json.loads((collected / "manifest.json").read_text())
        assert sum(f["windows"] for f in manifest["files"]) == published_1
        raw = sum(f["raw_windows"] for f in manifest["files"])
        assert raw < published_1 / 2, "raw samples are kept for a share of the windows only"

        # 3. A second fleet publishes while the retrained model is deployed: nothing may be lost.
        stop = threading.Event()
        reports: list[Any] = []
        options = FleetOptions(
            broker=broker.url,
            machines=4,
            seed=SEED + 100,
            speedup=40.0,  # 3 simulated hours in ~4.5 min: still publishing after the swap
            prefix=topic_prefix,
            model=dict(FLEET),
            start_ns=1_800_000_000 * 10**9,
        )
        fleet2 = threading.Thread(target=lambda: reports.append(publish_fleet(options, stop=stop)))
        fleet2.start()
        try:
            out = tmp_path / "retrain"
            retrain_argv = [
                "--collected", str(collected), "--events", str(events), "--current", str(v1),
                "--out", str(out), "--signing-key", str(key), "--trusted-keys", str(pub),
                "--horizon", "30m", "--epochs", "4", "--no-progress",
                # Promote whatever comes out (the comparison is still computed and recorded): this
                # test is about the loop, not about which model wins on a small fleet.
                "--min-improvement", "-1", "--allow-more-false-alarms",
                "--deploy", "--broker", broker.url, "--agent", "e2e-gw", "--prefix", topic_prefix,
            ]  # fmt: skip
            rc = retrain_main(retrain_argv)
            assert rc == 0
            comparison = json.loads((out / "comparison.json").read_text())
            assert comparison["winner"] == "challenger"
            v2_version = comparison["challenger"]["model_version"]
            assert v2_version != v1_version
            assert comparison["champion"]["model_version"] == v1_version
            for side in ("champion", "challenger"):
                assert comparison[side]["failing_runs"] >= 1
                assert comparison[side]["auroc"] is not None
            v2_card = json.loads((out / "bundle" / "card.json").read_text())
            assert v2_card["parent_version"] == v1_version
            # trained on the windows the champion accepted: the same rates, lengths and speeds
            v1_on = json.loads((v1 / "card.json").read_text())["trained_on"]
            assert {k: v for k, v in v2_card["trained_on"].items() if k != "windows"} == {
                k: v for k, v in v1_on.items() if k != "windows"
            }
            assert 0 < v2_card["trained_on"]["windows"] != v1_on["windows"]  # its own count
            assert agent.model_version == v2_version
            swapped_at = time.monotonic()
            deadline = swapped_at + 60
            while time.monotonic() < deadline and health.scored_by(v2_version) < 50:
                time.sleep(0.1)  # the second fleet goes on publishing under the new model
            assert fleet2.is_alive(), "the second fleet must still be publishing after the swap"
        finally:
            stop.set()
            fleet2.join(60)
        published_2 = reports[0].publish.acked
        total = published_1 + published_2
        assert health.wait_for(total) == total
        # Exactly once: no window lost or scored twice across the swap (health may be redelivered
        # at least once, but every (sensor, seq, ts) was scored by one model only).
        with health.lock:
            assert all(len(set(models)) == 1 for models in health.seen.values())
            later = {m for t, m in health.arrivals if t > swapped_at + 0.5}
            models = {m[0] for m in health.seen.values()}
        assert agent.windows_scored == total
        assert later == {v2_version}
        assert models == {v1_version, v2_version}
    finally:
        agent.stop()
        thread.join(15)
        health.close()
    assert not thread.is_alive()
