"""The per-sensor healthy baseline on the gateway: reset over MQTT after maintenance, kept otherwise.

The agent runs against the tests' private Mosquitto with a bundle whose feature spec declares a
baseline (1 run-in window, 3 learned). A reset command signed by the trusted key clears the sensor's
baseline (its next windows learn it again, the first says `state_reset: maintenance`); unsigned,
forged, tampered and replayed commands are refused with their reason and counted; a restart resumes
the baseline and still refuses the executed command. Without MQTT: a gap reset and a model swap
keep the baseline unless the new bundle's feature spec differs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest

from edge_agent.agent_cli import main as agent_main
from edge_agent.baseline import BaselineSpec
from edge_agent.baseline_command import sign_reset
from edge_agent.baseline_reset import send_reset
from edge_agent.daemon import Agent
from edge_agent.features import DEFAULT_SPEC, V2
from edge_agent.model_swap import carry_states
from edge_agent.mqtt_request import request_reply
from edge_agent.protocol import Window, encode_binary, vibration_topic
from edge_agent.scorer import Scorer
from edge_agent.settings import AgentSettings
from edge_agent.signing import generate_keypair, load_private_key
from edge_agent.topics import reset_result_topic, reset_topic
from tests.conftest import Broker
from tests.edge_agent.agent_testing import Models, Subscriber, agent_settings, make_bundle, publish, running

T0_NS = 1_767_225_600 * 10**9
LEARN = BaselineSpec(skip_windows=1, learn_windows=3)
SPEC = dataclasses.replace(DEFAULT_SPEC, version=V2, baseline=LEARN)


def _window(k: int) -> Window:
    rng = np.random.default_rng(k)
    amp = 0.05 * (1 + k % 4)  # windows differ, so two baselines learned on different windows differ
    return Window(
        k, T0_NS + k * 10**10, 25_600.0, 1_500.0, (amp * rng.standard_normal(2560)).astype(np.float32)
    )


def _baseline(agent: Agent, key: str = "m/s") -> np.ndarray:
    table = agent.scorer.table
    return np.asarray(table.data["baseline"][table.row(key)]).copy()


def _send(broker: Broker, prefix: str, agent_id: str, payload: bytes) -> dict[str, object]:
    """Publish a raw command payload and return the agent's answer to it (matched by nonce)."""
    try:
        nonce = json.loads(payload).get("nonce", "")
    except ValueError:
        nonce = ""  # the agent answers a payload it cannot read with nonce ""
    answer = request_reply(
        broker.url,
        reset_topic(prefix, agent_id),
        payload,
        reset_result_topic(prefix, agent_id),
        timeout_s=30.0,
        accept=lambda p: json.loads(p).get("nonce") == nonce,
    )
    doc: dict[str, object] = json.loads(answer)
    return doc


@pytest.fixture
def settings(broker: Broker, topic_prefix: str, models: Models, tmp_path: Path) -> AgentSettings:
    """An agent serving a signed bundle whose feature spec declares the baseline."""
    based = make_bundle(tmp_path / "based", models.key, version="rms-based", spec=SPEC.to_dict())
    return agent_settings(broker, topic_prefix, models, tmp_path / "agent.db", model=based)


@pytest.mark.mqtt
def test_a_signed_reset_clears_the_baseline_and_forged_ones_are_refused(
    broker: Broker,
    topic_prefix: str,
    models: Models,
    settings: AgentSettings,
    subscriber: Subscriber,
    publisher: paho.Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aid, topic = settings.agent_id, vibration_topic(topic_prefix, "m", "s")
    other_key, _ = generate_keypair(tmp_path / "other")
    with running(settings) as agent:
        for k in range(6):
            publish(publisher, topic, encode_binary(_window(k)))
        assert subscriber.wait(lambda: len(subscriber.health) == 6, 30)
        learned = _baseline(agent)
        assert learned[0] == LEARN.ready_after  # complete: 1 run-in + 3 learned windows

        # Refused, each with its reason, and the baseline untouched.
        body = json.loads(sign_reset("m", "s", load_private_key(models.key)))
        unsigned = {k: v for k, v in body.items() if k not in ("key_id", "signature")}
        assert _send(broker, topic_prefix, aid, json.dumps(unsigned).encode())["reason"] == "untrusted_key"
        forged = sign_reset("m", "s", load_private_key(other_key))
        assert _send(broker, topic_prefix, aid, forged)["reason"] == "untrusted_key"
        tampered = json.dumps({**body, "sensor": "t"}).encode()  # the signature covers the sensor
        assert _send(broker, topic_prefix, aid, tampered)["reason"] == "bad_signature"
        assert _send(broker, topic_prefix, aid, b"not json")["reason"] == "malformed"
        np.testing.assert_array_equal(_baseline(agent), learned)
        assert dict(agent.commands.refused) == {"untrusted_key": 2, "bad_signature": 1, "malformed": 1}
        refused = agent.metrics.value(
            "gruwatch_agent_commands_total", command="reset-baseline", result="untrusted_key"
        )
        assert refused == 2.0

        assert agent.scorer.state_of("m/s") == "alarm"  # the old bearing alarmed (its retained alert says so)

        # Signed by the trusted key, through the command line: the sensor forgets its baseline.
        cli = ["reset-baseline", "--machine", "m", "--sensor", "s", "--broker", broker.url]
        cli += [
            "--agent",
            aid,
            "--prefix",
            topic_prefix,
            "--signing-key",
            str(models.key),
            "--timeout",
            "30s",
        ]
        assert agent_main(cli) == 0
        out = capsys.readouterr().out  # the agent's log lines share stdout in this process
        answer, _ = json.JSONDecoder().raw_decode(out, out.index('{\n  "accepted"'))
        assert answer["accepted"] is True
        assert answer["tracked"] is True
        assert (answer["machine"], answer["sensor"]) == ("m", "s")
        assert "m/s" not in agent.scorer.table
        assert agent.resets["maintenance"] == 1
        # ... and its retained alert says "ok" again: the old bearing's alarm does not stay on the new one.
        assert subscriber.wait(lambda: len(subscriber.alerts) == 2, 10)
        alert, _ = subscriber.alerts[1]
        assert (alert.state, alert.previous_state, alert.seq) == ("ok", "alarm", 5)
        assert alert.reason.startswith("baseline reset")
        late = Subscriber(broker, topic_prefix)  # a dashboard that connects later gets the retained one
        try:
            assert late.wait(lambda: len(late.alerts) == 1, 10)
            assert late.alerts[0][0].state == "ok"
            assert late.alerts[0][1] is True
        finally:
            late.close()

        # The next windows learn it again; the first says why its state started afresh.
        for k in range(6, 8):
            publish(publisher, topic, encode_binary(_window(k)))
        assert subscriber.wait(lambda: len(subscriber.health) == 8, 30)
        assert subscriber.health[6].extra.get("state_reset") == "maintenance"
        assert subscriber.health[6].extra["step"] == 1
        assert "state_reset" not in subscriber.health[7].extra
        assert _baseline(agent)[0] == 2  # relearning: the run-in window and one learned
        for k in range(8, 12):
            publish(publisher, topic, encode_binary(_window(k)))
        assert subscriber.wait(lambda: len(subscriber.health) == 12, 30)
        relearned = _baseline(agent)
        assert relearned[0] == LEARN.ready_after
        assert not np.array_equal(relearned, learned)

        # The same signed command again is a replay.
        good = sign_reset("m", "s", load_private_key(models.key))
        assert _send(broker, topic_prefix, aid, good)["accepted"] is True
        assert _send(broker, topic_prefix, aid, good)["reason"] == "replayed"

    # After a restart the last reset still holds (stored with the sensor's state), and so does its nonce.
    with running(settings) as again:
        assert "m/s" not in again.scorer.table  # the second reset was stored with the sensor's state
        assert _send(broker, topic_prefix, aid, good)["reason"] == "replayed"  # nonces outlive a restart


@pytest.mark.mqtt
def test_a_restart_resumes_the_baseline(
    topic_prefix: str, settings: AgentSettings, subscriber: Subscriber, publisher: paho.Client
) -> None:
    topic = vibration_topic(topic_prefix, "m", "s")
    with running(settings) as agent:
        for k in range(5):
            publish(publisher, topic, encode_binary(_window(k)))
        assert subscriber.wait(lambda: len(subscriber.health) == 5, 30)
        learned = _baseline(agent)
        assert learned[0] == LEARN.ready_after
    with running(settings) as again:
        np.testing.assert_array_equal(_baseline(again), learned)
        publish(publisher, topic, encode_binary(_window(5)))
        assert subscriber.wait(lambda: len(subscriber.health) == 6, 30)
        assert "state_reset" not in subscriber.health[5].extra  # resumed, not started afresh
        np.testing.assert_array_equal(_baseline(again), learned)  # complete: no longer learning


@pytest.mark.mqtt
def test_no_answer_is_an_error_that_says_what_to_check(
    broker: Broker, topic_prefix: str, models: Models
) -> None:
    from edge_agent.baseline_command import CommandError

    with pytest.raises(CommandError, match="is agent 'nobody' running"):
        send_reset(
            broker=broker.url,
            agent="nobody",
            machine="m",
            sensor="s",
            signing_key=models.key,
            prefix=topic_prefix,
            timeout_s=1.0,
        )


def _learn(s: Scorer, key: str = "m/s", n: int = 6) -> np.ndarray:
    from edge_agent.features import extract_batch

    raw = extract_batch(np.stack([_window(k).samples for k in range(n)]), 25_600.0, 1_500.0, s.spec)
    for k in range(n):
        s.score_features([key], raw[k : k + 1])
    return np.asarray(s.table.data["baseline"][s.table.row(key)]).copy()


def _unsigned(tmp_path: Path, name: str, spec: dict[str, object] | None = None, hidden: int = 2) -> Scorer:
    bundle = make_bundle(tmp_path / name, None, version=name, hidden=hidden, spec=spec or SPEC.to_dict())
    return Scorer.from_bundle(bundle, allow_unsigned=True)


def test_a_gap_reset_keeps_the_baseline(tmp_path: Path) -> None:
    s = _unsigned(tmp_path, "based")
    learned = _learn(s)
    assert s.reset("m/s")  # what the sequence tracker asks after a gap or a restarted sequence
    row = s.table.row("m/s")
    np.testing.assert_array_equal(s.table.data["baseline"][row], learned)
    assert s.table.data["steps"][row] == 0
    assert not s.table.data["h"][row].any()


def test_a_model_swap_keeps_the_baseline_unless_the_feature_spec_differs(tmp_path: Path) -> None:
    old = _unsigned(tmp_path, "based")
    learned = _learn(old)
    wider = _unsigned(tmp_path, "wider", hidden=3)
    assert carry_states(old, wider) == {"m/s"}  # the hidden state cannot carry: it starts afresh...
    np.testing.assert_array_equal(
        wider.table.data["baseline"][wider.table.row("m/s")], learned
    )  # ...not this
    same = _unsigned(tmp_path, "same")
    assert carry_states(old, same) == set()
    np.testing.assert_array_equal(same.table.data["baseline"][same.table.row("m/s")], learned)
    other_spec = dataclasses.replace(SPEC, baseline=BaselineSpec(skip_windows=2, learn_windows=5))
    other = _unsigned(tmp_path, "other", spec=other_spec.to_dict())
    assert carry_states(old, other) == set()  # hidden states carry (same shape)...
    assert not other.table.data["baseline"][other.table.row("m/s")].any()  # ...the baseline is relearned


def test_a_baseline_learned_above_the_healthy_ceiling_is_said(tmp_path: Path) -> None:
    """A sensor installed on an already failing bearing: its baseline completes capped, and the agent says so."""
    from structlog.testing import capture_logs

    low = dataclasses.replace(
        SPEC, baseline=dataclasses.replace(LEARN, mean_ceiling=(-50.0,) * SPEC.n_features)
    )
    s = _unsigned(tmp_path, "capped", spec=low.to_dict())
    fine = _unsigned(tmp_path, "fine")
    with capture_logs() as logs:
        _learn(s, n=LEARN.ready_after + 2)
        _learn(fine, n=LEARN.ready_after + 2)
    said = [e for e in logs if e["event"] == "baseline_suspect"]
    assert [(e["sensor"], e["model"]) for e in said] == [("m/s", "capped")]  # once, when it completed
