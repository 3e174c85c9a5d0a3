"""The agent end to end against a real Mosquitto: simulated sensors → agent → a subscriber.

Every test runs a real `Agent` (real paho, real onnxruntime, real SQLite) on a unique topic prefix and
checks what a subscriber receives and what the store holds.

Two models, both signed with a key made here:

- `trained`: a real GRU bundle from the trainer (trainer/train.py + trainer/export.py) fitted in a few
  seconds on a small simulated fleet (seed 11, outer-race faults and healthy machines), cached for the
  session. The fleet the agent sees is another seed (7), so the alarm it raises is the model's.
- `models.v1`..: hand-made one-step GRU ONNX bundles (tests/edge_agent/gru_fixtures.py) whose health
  rises with the window's RMS (`log_rms`), smoothed by the GRU state; fast and exact, for the tests of
  gaps, swaps, metrics and the outbox.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
import structlog
import structlog.testing

from edge_agent.daemon import Agent
from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    HEADER,
    MAGIC,
    VERSION,
    Window,
    decode_health,
    encode_binary,
    encode_json,
    vibration_topic,
)
from edge_agent.scorer import Scorer
from edge_agent.settings import load_settings
from simulator.fleet_model import SensorRun, build_fleet
from tests.conftest import Broker
from tests.edge_agent.agent_testing import (
    AgentProcess,
    Models,
    StatusWatcher,
    Subscriber,
    agent_settings,
    close_client,
    make_bundle,
    mqtt_client,
    publish,
    running,
)

pytestmark = pytest.mark.mqtt

T0_NS = 1_800_000_000 * 10**9
FIRST = 6  # first window published by the main end-to-end test


# ----------------------------------------------------------------------------------------- model


@pytest.fixture(scope="session")
def trained(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed bundle trained by the trainer on 32 simulated machines (about 5 s)."""
    import torch

    from trainer.data.runs import split_by_machine
    from trainer.data.sim import run_from_sensor
    from trainer.export import write_model_bundle
    from trainer.sequences import build_sequences, fault_classes, spec_for_runs
    from trainer.train import TrainConfig, train

    torch.set_num_threads(1)
    fleet = build_fleet(32, 11, horizon_s=400.0, interval_s=10.0, faults=("outer",), healthy_fraction=0.4)
    runs = [run_from_sensor(r, f"{r.machine}-{r.sensor}") for r in fleet]
    tr, va = split_by_machine(runs, val_fraction=0.25, seed=0)
    spec = spec_for_runs(runs)
    classes = fault_classes(tr)
    tr_seqs = build_sequences(tr, spec, classes=classes, progress=False)
    va_seqs = build_sequences(va, spec, classes=classes, progress=False)
    cfg = TrainConfig(hidden=16, epochs=60, batch_size=16, progress=False, seed=0)
    result = train(tr_seqs, va_seqs, cfg, classes=classes)
    assert result.validation["auroc"] > 0.9, result.validation
    return write_model_bundle(
        tmp_path_factory.mktemp("trained") / "bundle",
        result.model,
        held_out=[q.features for q in va_seqs],
        feature_spec=spec.to_dict(),
        thresholds=result.thresholds,
        validation=result.validation,
        training_data={"fingerprint": "0" * 64, "runs": len(runs), "sources": ["sim"]},
        signing_key=models.key,
    )


# ----------------------------------------------------------------------------------------- fleet


@dataclass(frozen=True)
class Fleet:
    healthy: SensorRun
    outer: SensorRun
    windows: dict[tuple[str, int], np.ndarray]  # (machine, k) -> samples

    def window(self, run: SensorRun, k: int) -> Window:
        return Window(k, T0_NS + int(run.t(k) * 1e9), run.fs, run.rpm_at(k), self.windows[(run.machine, k)])


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    """One healthy machine and one with an outer-race fault that fails within 10 minutes."""
    runs = build_fleet(6, 7, horizon_s=400.0, interval_s=10.0, faults=("outer",), healthy_fraction=0.5)
    healthy = next(r for r in runs if r.fault == "healthy")
    outer = next(r for r in runs if r.fault == "outer")
    windows = {(r.machine, k): r.window(k)[0] for r in (healthy, outer) for k in range(r.n_windows)}
    return Fleet(healthy, outer, windows)


# ------------------------------------------------------------------------------------ MQTT peers


def nan_payload(w: Window) -> bytes:
    samples = np.array(w.samples, dtype="<f4")
    samples[5:40] = np.nan
    head = HEADER.pack(MAGIC, VERSION, 2, w.seq, w.ts_ns, w.fs, 1.0, w.rpm, samples.size)
    return head + samples.tobytes()


# ------------------------------------------------------------------------------------------ agent


def reference_scores(bundle: Path, pub: Path, windows: list[Window]) -> np.ndarray:
    """Health scores of one sensor's windows, stepped one by one by a fresh Scorer (no agent)."""
    scorer = Scorer.from_bundle(bundle, trusted_keys=[pub])
    return np.array([scorer.score_one("ref", w).health for w in windows])


def seqs_of(health: list[Any], machine: str) -> list[int]:
    return [h.seq for h in health if h.machine == machine]


# ------------------------------------------------------------------------------------------ tests


def test_fleet_through_agent_with_injected_faults(
    broker: Broker,
    topic_prefix: str,
    models: Models,
    trained: Path,
    fleet: Fleet,
    subscriber: Subscriber,
    publisher: paho.Client,
    tmp_path: Path,
) -> None:
    settings = agent_settings(broker, topic_prefix, models, tmp_path / "agent.db", model=trained)
    model_version = json.loads((trained / "card.json").read_text())["model_version"]
    healthy, outer = fleet.healthy, fleet.outer
    expected: dict[str, list[int]] = {healthy.machine: [], outer.machine: []}
    injected = {"duplicate": 0, "stale": 0, "nan": 0, "bad_magic": 0, "truncated": 0, "bad_json": 0}
    with running(settings) as agent, structlog.testing.capture_logs() as logs:
        for run in (healthy, outer):
            topic = vibration_topic(topic_prefix, run.machine, run.sensor)
            k = FIRST  # the sensors join after the machines' run-in (their first minute)
            while k < run.n_windows:
                w = fleet.window(run, k)
                if run is healthy and k == FIRST + 2:  # a NaN burst of three windows: never scored
                    for j in range(3):
                        publish(publisher, topic, nan_payload(fleet.window(run, k + j)))
                    injected["nan"] += 3
                    k += 3
                    continue
                if run is healthy and k == FIRST + 8:  # reorder: k+1 arrives before k, so k is stale
                    publish(publisher, topic, encode_binary(fleet.window(run, k + 1), dtype="int16"))
                    publish(publisher, topic, encode_binary(w))
                    expected[run.machine].append(k + 1)
                    injected["stale"] += 1
                    k += 2
                    continue
                publish(publisher, topic, encode_json(w) if k % 7 == 3 else encode_binary(w))
                expected[run.machine].append(k)
                if k % 9 == 4:  # a duplicate right after the original
                    publish(publisher, topic, encode_binary(w))
                    injected["duplicate"] += 1
                if k % 11 == 6:  # corrupt payloads of every kind
                    payload = encode_binary(w)
                    publish(publisher, topic, b"XX" + payload[2:])
                    publish(publisher, topic, payload[: len(payload) // 2])
                    publish(publisher, topic, b'{"seq": 1, "ts": ')
                    injected["bad_magic"] += 1
                    injected["truncated"] += 1
                    injected["bad_json"] += 1
                k += 1
        total = sum(len(v) for v in expected.values())
        assert subscriber.wait(lambda: len(subscriber.health) >= total), (
            f"got {len(subscriber.health)} of {total} health messages"
        )
        assert subscriber.wait(lambda: agent.rejections().get("bad_json", 0) >= injected["bad_json"], 5)
        time.sleep(0.3)  # anything extra (a duplicate scored twice) would arrive now
        rejections = agent.rejections()
        scored = agent.windows_scored

    health = list(subscriber.health)
    # Exactly one health message per accepted window, in order, with the right sequence numbers.
    for machine, seqs in expected.items():
        assert seqs_of(health, machine) == seqs, machine
    assert len(health) == total == scored
    assert {k: rejections.get(k, 0) for k in injected} == injected

    # Scores are exactly what a fresh scorer gives for the accepted windows, in order.
    for run in (healthy, outer):
        windows = [fleet.window(run, k) for k in expected[run.machine]]
        got = np.array([h.score for h in health if h.machine == run.machine])
        np.testing.assert_allclose(got, reference_scores(trained, models.pub, windows), atol=1e-5)
        assert all(h.model == model_version for h in health)
        assert all(0.0 <= h.extra["p_outer"] <= 1.0 for h in health)

    # The outer-race machine ends in alarm, announced by retained alerts; the healthy one never leaves ok.
    outer_states = [h.state for h in health if h.machine == outer.machine]
    assert outer_states[0] == "ok"
    assert outer_states[-5:] == ["alarm"] * 5
    assert outer_states[-1] == "alarm"
    assert {h.state for h in health if h.machine == healthy.machine} == {"ok"}
    alerts = [a for a, _ in subscriber.alerts]
    assert alerts
    assert {a.machine for a in alerts} == {outer.machine}
    assert alerts[-1].state == "alarm"
    assert [a.previous_state for a in alerts[1:]] == [a.state for a in alerts[:-1]]
    assert all(retained is False for _, retained in subscriber.alerts)  # live delivery; retained below
    transitions_logged = [e for e in logs if e["event"] == "alarm_transition"]
    assert [(e["machine"], e["state"]) for e in transitions_logged] == [(a.machine, a.state) for a in alerts]
    late = Subscriber(broker, topic_prefix)  # a newcomer gets the last alert, retained
    try:
        assert late.wait(lambda: len(late.alerts) == 1, 5)
        assert late.alerts[0][1] is True
        assert late.alerts[0][0] == alerts[-1]
    finally:
        late.close()

    # The store has every window, raw samples for a share plus those around the alarm, an empty outbox.
    from edge_agent.agent_cli import main as agent_main
    from edge_agent.store import Store

    with Store.open(settings.store, budget_bytes=settings.store_budget_bytes) as store:
        counts = store.counts()
        assert counts["windows"] == total
        assert counts["outbox"] == 0
        assert counts["transitions"] == len(alerts)
        assert 0 < counts["raw_windows"] < total
        assert store.window_seqs(f"{healthy.machine}/{healthy.sensor}") == expected[healthy.machine]
    out = tmp_path / "export"
    assert agent_main(["export", "--store", str(settings.store), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(f["windows"] for f in manifest["files"]) == total
    assert len(manifest["transitions"]) == len(alerts)


def _publish_run(client: paho.Client, prefix: str, fleet: Fleet, run: SensorRun, ks: range) -> None:
    topic = vibration_topic(prefix, run.machine, run.sensor)
    for k in ks:
        publish(client, topic, encode_binary(fleet.window(run, k)))


def test_restart_resumes_every_sensor_where_it_stopped(
    broker: Broker,
    topic_prefix: str,
    models: Models,
    trained: Path,
    fleet: Fleet,
    subscriber: Subscriber,
    publisher: paho.Client,
    tmp_path: Path,
) -> None:
    """First half, stop (as on SIGTERM), a few windows while down, restart, the rest: same scores as one run."""
    settings = agent_settings(broker, topic_prefix, models, tmp_path / "agent.db", model=trained)
    runs = (fleet.healthy, fleet.outer)
    n = {r.machine: r.n_windows for r in runs}
    half = {m: v // 2 for m, v in n.items()}
    with running(settings):
        for r in runs:
            _publish_run(publisher, topic_prefix, fleet, r, range(half[r.machine]))
        assert subscriber.wait(lambda: len(subscriber.health) >= sum(half.values()))
    for r in runs:  # the broker keeps these for the agent's session while it is away
        _publish_run(publisher, topic_prefix, fleet, r, range(half[r.machine], half[r.machine] + 3))
    with running(settings) as agent:
        assert agent.scorer.n_tracked == 2
        for r in runs:
            _publish_run(publisher, topic_prefix, fleet, r, range(half[r.machine] + 3, n[r.machine]))
        assert subscriber.wait(lambda: len(subscriber.health) >= sum(n.values()))
        time.sleep(0.2)
    health = list(subscriber.health)
    for r in runs:
        assert seqs_of(health, r.machine) == list(range(n[r.machine]))
        mine = [h for h in health if h.machine == r.machine]
        scorer = Scorer.from_bundle(trained, trusted_keys=[models.pub])
        ref = [scorer.score_one("ref", fleet.window(r, k)) for k in range(n[r.machine])]
        np.testing.assert_allclose([h.score for h in mine], [x.health for x in ref], atol=1e-5)
        # Alarm states and hysteresis counters survived the restart too.
        assert [h.state for h in mine] == [x.state for x in ref]
        assert not any("state_reset" in h.extra for h in mine)
    outer_alerts = [a for a, _ in subscriber.alerts if a.machine == fleet.outer.machine]
    assert outer_alerts
    assert outer_alerts[-1].state == "alarm"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_long_gap_resets_the_state_and_says_so(
    broker: Broker,
    topic_prefix: str,
    models: Models,
    fleet: Fleet,
    subscriber: Subscriber,
    publisher: paho.Client,
    tmp_path: Path,
    protocol: str,
) -> None:
    settings = agent_settings(
        broker, topic_prefix, models, tmp_path / "agent.db", gap_reset_s=30.0, mqtt_protocol=protocol
    )
    run = fleet.outer
    topic = vibration_topic(topic_prefix, run.machine, run.sensor)
    ks = [0, 1, 2, 3, 10, 11]  # 70 s of silence between 3 and 10 (limit 30 s)
    with running(settings) as agent:
        for k in ks:
            publish(publisher, topic, encode_binary(fleet.window(run, k)))
        assert subscriber.wait(lambda: len(subscriber.health) >= len(ks))
        assert agent.resets["gap"] == 1
    health = list(subscriber.health)
    assert [h.seq for h in health] == ks
    assert health[4].extra["state_reset"] == "gap"
    assert health[4].extra["gap_s"] == 70.0
    assert health[4].extra["step"] == 1
    assert health[5].extra["step"] == 2
    assert "state_reset" not in health[3].extra
    want = reference_scores(models.v1, models.pub, [fleet.window(run, k) for k in ks[4:]])
    np.testing.assert_allclose([h.score for h in health[4:]], want, atol=1e-5)


def test_deploy_swaps_models_and_refuses_a_tampered_bundle(
    broker: Broker,
    topic_prefix: str,
    models: Models,
    fleet: Fleet,
    subscriber: Subscriber,
    publisher: paho.Client,
    tmp_path: Path,
) -> None:
    from edge_agent.agent_cli import main as agent_main
    from edge_agent.model_swap import deploy_bundle

    settings = agent_settings(broker, topic_prefix, models, tmp_path / "agent.db")
    v2 = make_bundle(tmp_path / "v2", models.key, version="rms-v2", gain=6.0)
    v3 = make_bundle(tmp_path / "v3", models.key, version="rms-v3", hidden=3)
    tampered = make_bundle(tmp_path / "bad", models.key, version="rms-bad")
    card = json.loads((tampered / "card.json").read_text())
    card["thresholds"]["alarm"] = 0.99  # changed after signing
    (tampered / "card.json").write_text(json.dumps(card))
    run = fleet.outer
    topic = vibration_topic(topic_prefix, run.machine, run.sensor)
    agent_id = settings.agent_id
    with running(settings) as agent:
        for k in range(4):
            publish(publisher, topic, encode_binary(fleet.window(run, k)))
        assert subscriber.wait(lambda: len(subscriber.health) >= 4)

        answer = deploy_bundle(v2, broker=broker.url, agent=agent_id, prefix=topic_prefix, timeout_s=20)
        assert answer["accepted"] is True
        assert answer["model"] == "rms-v2"
        assert answer["states"] == "kept"
        assert agent.model_version == "rms-v2"
        for k in range(4, 6):
            publish(publisher, topic, encode_binary(fleet.window(run, k)))
        assert subscriber.wait(lambda: len(subscriber.health) >= 6)

        bad = deploy_bundle(tampered, broker=broker.url, agent=agent_id, prefix=topic_prefix, timeout_s=20)
        assert bad["accepted"] is False
        assert bad["reason"] == "digest_mismatch"
        assert bad["serving"] == "rms-v2"
        assert agent.model_version == "rms-v2"

        # A different state shape: accepted, states start afresh (and the health message says so).
        rc = agent_main(
            [
                "deploy",
                "--bundle",
                str(v3),
                "--broker",
                broker.url,
                "--agent",
                agent_id,
                "--prefix",
                topic_prefix,
            ]
        )
        assert rc == 0
        assert agent.model_version == "rms-v3"
        for k in range(6, 8):
            publish(publisher, topic, encode_binary(fleet.window(run, k)))
        assert subscriber.wait(lambda: len(subscriber.health) >= 8)
        assert agent.models_refused == 1
    health = list(subscriber.health)
    assert [h.model for h in health] == ["rms-v1"] * 4 + ["rms-v2"] * 2 + ["rms-v3"] * 2
    assert health[6].extra["state_reset"] == "model"
    assert "state_reset" not in health[7].extra
    # v2 kept v1's hidden states: its scores continue the same sequence.
    scorer = Scorer.from_bundle(models.v1, trusted_keys=[models.pub])
    first = [scorer.score_one("x", fleet.window(run, k)).health for k in range(4)]
    swapped = Scorer.from_bundle(v2, trusted_keys=[models.pub])
    exported = scorer.export_states().with_model("rms-v2")
    swapped.import_states(exported)
    then = [swapped.score_one("x", fleet.window(run, k)).health for k in range(4, 6)]
    np.testing.assert_allclose([h.score for h in health[:6]], first + then, atol=1e-5)
    assert [r["accepted"] for r in subscriber.results] == [True, False, True]

    # A restart serves the last deployed model.
    with running(settings) as agent:
        assert agent.model_version == "rms-v3"


def test_outbox_left_by_a_previous_run_goes_out_first_alerts_first(
    broker: Broker, topic_prefix: str, models: Models, subscriber: Subscriber, tmp_path: Path
) -> None:
    from edge_agent.protocol import Alert, Health, alert_topic, encode_alert, encode_health, health_topic
    from edge_agent.store import PRIORITY_ALERT, OutboxMessage, Store

    settings = agent_settings(broker, topic_prefix, models, tmp_path / "agent.db")

    def health(seq: int) -> OutboxMessage:
        h = Health("m9", "s0", seq, seq, 0.1, "ok", "rms-v1", {})
        return OutboxMessage(health_topic(topic_prefix, "m9", "s0"), encode_health(h))

    alert = Alert("m9", "s0", 2, 2, "warning", "ok", 0.6, "rms-v1", "test")
    with Store.open(settings.store, budget_bytes=settings.store_budget_bytes) as store:
        store.enqueue_outbox(
            [
                health(1),
                OutboxMessage(
                    alert_topic(topic_prefix, "m9", "s0"),
                    encode_alert(alert),
                    retain=True,
                    priority=PRIORITY_ALERT,
                ),
                health(2),
            ]
        )
    with running(settings):
        assert subscriber.wait(lambda: len(subscriber.health) == 2 and len(subscriber.alerts) == 1)
    assert subscriber.order == ["alert", "health", "health"]
    with Store.open(settings.store, budget_bytes=settings.store_budget_bytes) as store:
        assert store.outbox_count() == 0  # the broker acknowledged them: gone from the outbox
    assert [h.seq for h in subscriber.health] == [1, 2]


def test_metrics_endpoint_counts_what_happened(
    broker: Broker,
    topic_prefix: str,
    models: Models,
    fleet: Fleet,
    subscriber: Subscriber,
    publisher: paho.Client,
    tmp_path: Path,
) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = agent_settings(broker, topic_prefix, models, tmp_path / "agent.db", metrics_port=port)
    run = fleet.outer
    topic = vibration_topic(topic_prefix, run.machine, run.sensor)
    with running(settings) as agent:
        for k in range(5):
            publish(publisher, topic, encode_binary(fleet.window(run, k)))
        publish(publisher, topic, encode_binary(fleet.window(run, 4)))  # duplicate
        publish(publisher, topic, b"nonsense")
        assert subscriber.wait(lambda: len(subscriber.health) == 5)
        assert subscriber.wait(lambda: agent.rejections().get("bad_magic") == 1, 5)
        time.sleep(1.2)  # gauges refresh every second
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["gruwatch_agent_windows_scored_total"] == 5
    assert values["gruwatch_agent_messages_total"] == 7
    assert values['gruwatch_agent_rejected_total{reason="duplicate"}'] == 1
    assert values['gruwatch_agent_rejected_total{reason="bad_magic"}'] == 1
    assert values["gruwatch_agent_tracked_sensors"] == 1
    assert values['gruwatch_agent_model_info{version="rms-v1"}'] == 1
    assert values["gruwatch_agent_step_seconds_count"] >= 1
    assert values["gruwatch_agent_end_to_end_seconds_count"] == 5
    assert values["gruwatch_agent_store_bytes"] > 0


def test_a_changed_model_folder_is_verified_and_swapped(
    broker: Broker, topic_prefix: str, models: Models, subscriber: Subscriber, tmp_path: Path
) -> None:
    import shutil

    served = tmp_path / "served"
    shutil.copytree(models.v1, served)
    v2 = make_bundle(tmp_path / "v2", models.key, version="rms-v2")
    unsigned = tmp_path / "unsigned"
    shutil.copytree(v2, unsigned)
    (unsigned / "signature.json").unlink()
    settings = agent_settings(broker, topic_prefix, models, tmp_path / "agent.db", model=served)
    # Each change lands at once (renames), so the watch never verifies a half-copied folder however
    # slowly this process runs; the waits are bounds on the agent's answer, not sleeps.
    with running(settings, poll_s=0.3) as agent:
        served.rename(tmp_path / "v1-old")
        unsigned.rename(served)
        assert subscriber.wait(lambda: len(subscriber.results) >= 1, 60)
        assert subscriber.results[0]["accepted"] is False
        assert subscriber.results[0]["reason"] == "unsigned"
        assert agent.model_version == "rms-v1"
        shutil.copy2(v2 / "signature.json", tmp_path / "signature.json")
        (tmp_path / "signature.json").replace(served / "signature.json")
        assert subscriber.wait(lambda: len(subscriber.results) >= 2, 60)
        assert len(subscriber.results) == 2
        assert subscriber.results[1]["accepted"] is True
        assert subscriber.results[1]["source"] == "file"
        assert agent.model_version == "rms-v2"


def test_simulator_fleet_with_its_fault_injection(
    broker: Broker, topic_prefix: str, models: Models, subscriber: Subscriber, tmp_path: Path
) -> None:
    """`simulate fleet` with duplicates, reorders, corruption, NaN bursts and clock skew → the agent.

    A tap subscriber records every vibration message as the broker delivered it; decoding those with
    the protocol and judging them with a fresh SequenceTracker says what the agent must score, and
    the agent must score exactly that: one health message per accepted window, rejections by reason.
    """
    import math

    from edge_agent.errors import ProtocolError
    from edge_agent.protocol import decode_vibration, parse_sensor_topic
    from edge_agent.sequencing import SequenceTracker
    from simulator.faults import FaultConfig
    from simulator.fleet_cli import FleetOptions, publish_fleet

    settings = agent_settings(broker, topic_prefix, models, tmp_path / "agent.db")
    tap: list[tuple[str, bytes]] = []
    tap_client = mqtt_client(broker)
    tap_client.on_message = lambda c, u, m: tap.append((m.topic, bytes(m.payload)))
    tap_client.subscribe(f"{topic_prefix}/+/+/vibration", qos=1)
    time.sleep(0.2)
    faults = FaultConfig(duplicate=0.1, reorder=0.1, corrupt=0.08, nan_burst=0.05, clock_skew=0.5)
    options = FleetOptions(
        broker=broker.url,
        machines=4,
        seed=3,
        speedup=math.inf,
        prefix=topic_prefix,
        windows=25,
        faults=faults,
        fault_seed=5,
    )
    try:
        with running(settings) as agent:
            report = publish_fleet(options)
            assert report.flushed
            published = report.publish.published
            assert subscriber.wait(lambda: len(tap) >= published)
            expected: dict[tuple[str, str], list[int]] = {}
            reasons: dict[str, int] = {}
            judge = SequenceTracker(gap_reset_s=settings.gap_reset_s, max_sensors=100)
            for topic, payload in tap:
                t = parse_sensor_topic(topic, topic_prefix)
                try:
                    w = decode_vibration(payload)
                except ProtocolError as exc:
                    reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
                    continue
                v = judge.check(f"{t.machine}/{t.sensor}", w.seq, w.ts_ns)
                if v.accept:
                    expected.setdefault((t.machine, t.sensor), []).append(w.seq)
                else:
                    reasons[v.outcome] = reasons.get(v.outcome, 0) + 1
            total = sum(len(v) for v in expected.values())
            assert subscriber.wait(lambda: len(subscriber.health) >= total)
            assert subscriber.wait(lambda: sum(agent.rejections().values()) >= sum(reasons.values()), 5)
            time.sleep(0.3)
            rejections = agent.rejections()
    finally:
        tap_client.disconnect()
        tap_client.loop_stop()
    f = report.faults
    assert f.duplicated > 0
    assert f.reordered > 0
    assert f.corrupted > 0
    assert f.nan_windows > 0
    assert rejections == reasons
    assert reasons["duplicate"] > 0
    assert reasons.get("nan", 0) >= f.nan_windows  # each NaN window went out at least once
    got: dict[tuple[str, str], list[int]] = {}
    for h in subscriber.health:
        got.setdefault((h.machine, h.sensor), []).append(h.seq)
    assert got == expected
    # Every window that was neither dropped, corrupted, NaN nor overtaken by a later one is scored once.
    assert 0 < reasons["stale"] <= f.reordered
    assert len(subscriber.health) == total
    assert total == f.windows - f.dropped - f.corrupted - f.nan_windows - reasons["stale"]


def test_process_reports_every_kind_of_state_reset(models: Models, fleet: Fleet, tmp_path: Path) -> None:
    """`Agent.process` on its own (no broker): resets for new, gap, restart and evicted sensors.

    The link is not started, so nothing is published: health messages stay in the outbox, where this
    test reads them.
    """
    from edge_agent.mqtt_link import Inbound
    from edge_agent.store import Store

    settings = load_settings(
        None,
        broker="mqtt://127.0.0.1:1",
        prefix="t",
        agent_id="t",
        model=models.v1,
        trusted_keys=[models.pub],
        store=tmp_path / "agent.db",
        metrics_port=0,
        gap_reset_s=30.0,
    )
    agent = Agent.from_settings(settings)
    agent._store = Store.open(settings.store, budget_bytes=settings.store_budget_bytes)
    run = fleet.outer

    def item(sensor: str, k: int, ts_k: int | None = None) -> Inbound:
        w = fleet.window(run, k)
        if ts_k is not None:
            w = Window(w.seq, T0_NS + ts_k * 10**10, w.fs, w.rpm, w.samples)
        return Inbound("m", sensor, w, mid=1, qos=1, dup=False, generation=0, received_ns=time.time_ns())

    try:
        agent.process([item("a", 0), item("b", 0), item("c", 5)])  # new
        agent.process([item("a", 1), item("b", 5, ts_k=20), item("c", 0, ts_k=6)])  # ok, gap, restart
        agent.scorer.forget("m/a")  # as if evicted for lack of room
        agent.process([item("a", 2), item("a", 3)])
        health = [
            decode_health(m.payload) for m in agent.store.outbox_pending(100) if m.topic.endswith("/health")
        ]
    finally:
        agent.store.close()
    resets = {(h.sensor, h.seq): h.extra.get("state_reset") for h in health}
    assert resets == {
        ("a", 0): None,
        ("b", 0): None,
        ("c", 5): None,
        ("a", 1): None,
        ("b", 5): "gap",
        ("c", 0): "restart",
        ("a", 2): "evicted",
        ("a", 3): None,
    }
    assert dict(agent.resets) == {"new": 3, "gap": 1, "restart": 1, "evicted": 1}
    assert [h.extra["step"] for h in health if h.sensor == "a"] == [1, 2, 1, 2]
    assert [h.extra["step"] for h in health if h.sensor != "a"] == [1, 1, 1, 1]


def _kill_test_windows(n: int, sensors: tuple[str, ...]) -> dict[str, list[Window]]:
    """Per sensor, `n` windows whose RMS swings up and down: ok → warning → alarm → ok, twice."""
    rng = np.random.default_rng(5)
    out: dict[str, list[Window]] = {}
    for j, s in enumerate(sensors):
        amps = 0.3 * np.exp(1.6 * np.sin(np.arange(n) / (5 + j)))
        out[s] = [
            Window(
                k,
                10**18 + k * 10**10,
                25600.0,
                1500.0,
                (amps[k] * rng.standard_normal(2560)).astype(np.float32),
            )
            for k in range(n)
        ]
    return out


@pytest.mark.parametrize("early", [False, True], ids=["publish-after-commit", "publish-before-commit"])
def test_a_killed_agent_resumes_with_exactly_the_scores_of_an_uninterrupted_run(
    early: bool,
    broker: Broker,
    topic_prefix: str,
    models: Models,
    agent_process: Callable[..., AgentProcess],
) -> None:
    """SIGKILL mid-stream, restart: every health message (redeliveries included) carries the score,
    alarm state and step count a single uninterrupted run gives.

    Each batch commits its sensors' states with its windows and is acked only after, so a kill at
    any moment leaves committed states that match exactly the windows the broker will not resend.
    The periodic full save is set to an hour: exactness cannot come from it. With
    `publish_before_commit` a kill between a batch's publish and its commit repeats that batch's
    health after the restart: the same messages, so the same check holds.
    """

    agent = agent_process(
        "exact",
        batch_max_wait_ms=5,
        batch_max_size=16,
        states_save_interval_s=3600,
        publish_before_commit=early,
    )
    agent_id, start = agent.agent_id, agent.start

    sensors = ("s0", "s1", "s2")
    n = 60
    windows = _kill_test_windows(n, sensors)
    scorer = Scorer.from_bundle(models.v1, trusted_keys=[models.pub])
    ref: dict[tuple[str, int], tuple[float, str, int]] = {}
    for s in sensors:
        for w in windows[s]:
            r = scorer.score_one(s, w)
            ref[(s, w.seq)] = (r.health, r.state, r.step)
    assert {v[1] for v in ref.values()} == {"ok", "warning", "alarm"}

    sub = Subscriber(broker, topic_prefix)
    watcher = StatusWatcher(broker, topic_prefix, agent_id)
    pub = mqtt_client(broker)

    def send(ks: range) -> None:
        for k in ks:
            for s in sensors:
                pub.publish(vibration_topic(topic_prefix, "press1", s), encode_binary(windows[s][k]), qos=1)

    proc = start()
    try:
        assert sub.wait(watcher.online, 30)
        send(range(n // 2))
        assert sub.wait(lambda: len(sub.health) >= 24)
        proc.kill()  # mid-stream: batches committed and acked, committed not acked, queued, in flight
        proc.communicate(timeout=10)
        send(range(n // 2, n))
        time.sleep(0.3)
        before = len(sub.health)
        proc = start()
        assert sub.wait(lambda: {(h.sensor, h.seq) for h in sub.health} >= set(ref), 30), (
            f"{len({(h.sensor, h.seq) for h in sub.health})} of {len(ref)} windows scored"
        )
        AgentProcess.stop_cleanly(proc)
    finally:
        agent.kill_all()
        close_client(pub)
        watcher.close()
        sub.close()
    assert before < len(ref), "the kill came too late to test anything"
    health = list(sub.health)
    assert {(h.sensor, h.seq) for h in health} == set(ref)
    for h in health:  # redelivered health messages included: each is the uninterrupted run's
        score, state, step = ref[(h.sensor, h.seq)]
        assert h.score == pytest.approx(score, abs=1e-6), (h.sensor, h.seq)
        assert (h.state, h.extra["step"]) == (state, step), (h.sensor, h.seq)
        assert "state_reset" not in h.extra, (h.sensor, h.seq, h.extra)


def test_raw_samples_before_an_alarm_change_are_kept(models: Models, tmp_path: Path) -> None:
    """The `raw_before_transition` windows before a state change get their raw samples, whether they
    came in earlier batches (held in memory) or earlier in the same batch; older ones do not."""
    from edge_agent.mqtt_link import Inbound
    from edge_agent.store import Store

    settings = load_settings(
        None,
        broker="mqtt://127.0.0.1:1",
        prefix="t",
        agent_id="t",
        model=models.v1,
        trusted_keys=[models.pub],
        store=tmp_path / "agent.db",
        metrics_port=0,
        raw_sample_fraction=0.0,
        raw_before_transition=3,
    )
    agent = Agent.from_settings(settings)
    agent._store = Store.open(settings.store, budget_bytes=settings.store_budget_bytes)
    rng = np.random.default_rng(0)

    def item(sensor: str, k: int) -> Inbound:
        amp = 0.05 if k < 8 else 3.0
        w = Window(
            k, T0_NS + k * 10**10, 25600.0, 1500.0, (amp * rng.standard_normal(2560)).astype(np.float32)
        )
        return Inbound("m", sensor, w, mid=1, qos=1, dup=False, generation=0, received_ns=time.time_ns())

    try:
        for k in range(12):  # one window per batch: the ring carries them over
            agent.process([item("a", k)])
        agent.process([item("b", k) for k in range(12)])  # all in one batch
        conn = agent.store._conn
        raw = {
            s: [
                r[0]
                for r in conn.execute(
                    "SELECT seq FROM windows WHERE sensor = ? AND raw IS NOT NULL ORDER BY seq", (f"m/{s}",)
                )
            ]
            for s in ("a", "b")
        }
        first_change = {t.sensor: t.seq for t in reversed(agent.store.transitions())}
        assert agent.raw_ring.nbytes <= settings.raw_ring_bytes
    finally:
        agent.store.close()
    for s in ("a", "b"):
        k_t = first_change[f"m/{s}"]
        assert k_t > 8  # the change came a few high windows after k = 8
        assert raw[s] == list(range(k_t - 3, 12)), s  # 3 before, the change, and every one after


def test_health_encoder_writes_what_encode_health_writes() -> None:
    from edge_agent.messages import HealthEncoder
    from edge_agent.protocol import Health, encode_health

    rng = np.random.default_rng(3)
    models = ["rms-v1", 'odd "model" \u00e9 name']
    for i in range(300):
        model = models[i % 2]
        agent = "gw-1_b" if i % 4 < 2 else None  # the agent's own id leads the extra fields
        enc = HealthEncoder(model, agent)
        score = float(rng.choice([0.0, 1.0, rng.random(), float(np.float32(rng.random()))]))
        extra: dict[str, Any] = {
            "p_outer": round(float(rng.random()), 6),
            "out_step": 1e-7,
            "step": int(rng.integers(1, 10**9)),
        }
        if i % 3 == 0:
            extra["state_reset"] = ["gap", "restart", "evicted", "model"][i % 4]
            extra["gap_s"] = round(float(rng.random() * 1e4), 3)
        state = ["ok", "warning", "alarm"][i % 3]
        seq, ts = int(rng.integers(0, 2**32)), int(rng.integers(-(2**63), 2**63))
        fields = extra if agent is None else {"agent": agent, **extra}
        want = encode_health(Health("m-1_A", "s0", seq, ts, score, state, model, fields))  # type: ignore[arg-type]
        assert HealthEncoder.head("m-1_A", "s0") + enc.encode(seq, ts, score, state, extra) == want
    with pytest.raises(ProtocolError):
        HealthEncoder.head("bad id", "s0")
    with pytest.raises(ProtocolError):
        HealthEncoder("v", "bad agent")
    with pytest.raises(ProtocolError):
        HealthEncoder("v").encode(1, 1, 1.5, "ok", {})
    with pytest.raises(ProtocolError):
        HealthEncoder("v").encode(1, 1, 0.5, "ok", {"x": float("nan")})


def test_a_snapshot_left_by_an_older_agent_is_restored_once(
    models: Models, fleet: Fleet, tmp_path: Path
) -> None:
    """Schema-1 agents saved all states as one blob in meta; the first start moves it into the table."""
    from edge_agent.states import states_to_bytes
    from edge_agent.store import Store

    settings = load_settings(
        None,
        broker="mqtt://127.0.0.1:1",
        prefix="t",
        agent_id="t",
        model=models.v1,
        trusted_keys=[models.pub],
        store=tmp_path / "agent.db",
        metrics_port=0,
    )
    old = Scorer.from_bundle(models.v1, trusted_keys=[models.pub])
    run = fleet.outer
    for k in range(3):
        old.score_one("m/a", fleet.window(run, k))
    snap = old.export_states().to_dict()
    snap["tracker_keys"] = ["m/a"]
    snap["tracker_seq"] = np.array([2], np.int64)
    snap["tracker_ts"] = np.array([fleet.window(run, 2).ts_ns], np.int64)
    with Store.open(settings.store, budget_bytes=settings.store_budget_bytes) as st:
        st.set_meta("agent_states", states_to_bytes(snap))
    agent = Agent.from_settings(settings)
    agent._store = Store.open(settings.store, budget_bytes=settings.store_budget_bytes)
    try:
        agent._restore_states()
        assert agent.store.get_meta("agent_states") is None
        saved = agent.store.load_states()
        assert saved["m/a"].last_seq == 2
        assert saved["m/a"].steps == 3
        assert agent.tracker.last("m/a") == (2, fleet.window(run, 2).ts_ns)
        want = old.score_one("m/a", fleet.window(run, 3)).health
        assert agent.scorer.score_one("m/a", fleet.window(run, 3)).health == pytest.approx(want, abs=1e-7)
    finally:
        agent.store.close()
