"""What the agent publishes for a scored window, composed by pure functions: health and alert messages.

The fields of a health message live here and in `protocol.HEALTH_FIELDS` only: the wire's fixed
fields (protocol), the ones the agent adds itself (`AGENT_FIELDS`: step, state_reset, gap_s), and
the model's extra outputs, renamed `out_<name>` when they would clash (`RESERVED_FIELDS`).
`HealthEncoder` writes exactly what `protocol.encode_health` writes, faster (the agent's hot path).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final, cast

import structlog

from edge_agent.alarms import STATE_NAMES, State, Transition
from edge_agent.errors import ProtocolError
from edge_agent.protocol import HEALTH_FIELDS, Alert, encode_alert, validate_id
from edge_agent.store import PRIORITY_ALERT, PRIORITY_HEALTH, OutboxMessage
from edge_agent.topics import alert_topic, health_topic

log = structlog.get_logger("edge_agent.daemon")

#: Health fields the agent sets itself, beside the wire's fixed ones and the model's outputs
#: (`agent`: its own id, so a dashboard can tell each agent's message rate).
AGENT_FIELDS: Final = ("agent", "step", "state_reset", "gap_s", "missed")
#: A model output with one of these names is published as "out_<name>".
RESERVED_FIELDS: Final = frozenset(HEALTH_FIELDS) | frozenset(AGENT_FIELDS)
_STATES: Final = frozenset(STATE_NAMES)


def extra_name(output: str) -> str:
    """The health field of a model output."""
    return f"out_{output}" if output in RESERVED_FIELDS else output


def health_extra(
    outputs: Sequence[str],
    values: Sequence[float] | None,
    *,
    step: int,
    reset_cause: str | None,
    gap_s: float | None,
    missed: int = 0,
) -> dict[str, Any]:
    """The health fields after the fixed ones: the model's extra outputs (`values` of `outputs[1:]`),
    `step`, `missed` (windows never received just before this one) when there were any, and for a
    state that started afresh (not a first sight) `state_reset` and `gap_s`."""
    extra: dict[str, Any] = (
        {extra_name(name): round(values[k], 6) for k, name in enumerate(outputs[1:])}
        if values is not None
        else {}
    )
    extra["step"] = step
    if missed:
        extra["missed"] = missed
    if reset_cause is not None and reset_cause != "new":
        extra["state_reset"] = reset_cause
        if gap_s is not None:
            extra["gap_s"] = round(gap_s, 3)
    return extra


class SensorTopics:
    """(health topic, alert topic, health JSON head) per sensor, cached for at most `_CACHE_MAX` sensors
    (~440 B each; a miss costs ~4 µs): beyond that, memory per tracked sensor matters more."""

    _CACHE_MAX = 16_384

    def __init__(self, prefix: str, max_sensors: int) -> None:
        self.prefix = prefix
        self.max_sensors = min(max_sensors, self._CACHE_MAX)
        self._cache: dict[str, tuple[str, str, bytes]] = {}

    def of(self, key: str, machine: str, sensor: str) -> tuple[str, str, bytes]:
        topics = self._cache.get(key)
        if topics is None:
            if len(self._cache) >= self.max_sensors:
                self._cache.clear()
            topics = (
                health_topic(self.prefix, machine, sensor),
                alert_topic(self.prefix, machine, sensor),
                HealthEncoder.head(machine, sensor),
            )
            self._cache[key] = topics
        return topics


def health_message(
    topics: tuple[str, str, bytes],
    encoder: HealthEncoder,
    seq: int,
    ts_ns: int,
    health: float,
    state: str,
    extra: dict[str, Any],
    *,
    qos: int = 1,
) -> OutboxMessage:
    """The health message of one window (QoS 1 unless the `health_qos` setting says 0; not retained)."""
    payload = topics[2] + encoder.encode(seq, ts_ns, health, state, extra)
    return OutboxMessage(topics[0], payload, qos=qos, retain=False, priority=PRIORITY_HEALTH)


def health_batch_message(
    topic: str, agent_id: str, healths: Sequence[OutboxMessage], *, qos: int = 1
) -> OutboxMessage:
    """The batch's health messages as one (the `health_batch` setting): `{"agent": id, "health": [...]}`
    with each element byte for byte the per-window message (`protocol.decode_health_batch` reads it)."""
    payload = b"".join(
        (b'{"agent":"', agent_id.encode(), b'","health":[', b",".join(m.payload for m in healths), b"]}")
    )
    return OutboxMessage(topic, payload, qos=qos, retain=False, priority=PRIORITY_HEALTH)


def alert_message(topic: str, machine: str, sensor: str, tr: Transition) -> OutboxMessage:
    """The retained alert of one alarm-state change (sent before health messages)."""
    alert = Alert(
        machine,
        sensor,
        tr.seq,
        tr.ts_ns,
        cast(State, tr.state),
        cast(State, tr.previous_state),
        tr.score,
        tr.model,
        tr.reason,
    )
    return OutboxMessage(topic, encode_alert(alert), qos=1, retain=True, priority=PRIORITY_ALERT)


def log_transition(machine: str, sensor: str, tr: Transition) -> None:
    """The one log line per alarm-state change (CONVENTIONS 10)."""
    log.warning(
        "alarm_transition",
        machine=machine,
        sensor=sensor,
        seq=tr.seq,
        previous=tr.previous_state,
        state=tr.state,
        score=round(tr.score, 4),
        model=tr.model,
        reason=tr.reason,
    )


class HealthEncoder:
    """Health messages as `protocol.encode_health` writes them, byte for byte, without its generality.

    The fixed part is pre-built: `head(machine, sensor)` once per sensor (ids validated when the
    topic was parsed), the model's JSON string and the `agent` field once per model, each extra
    field's JSON key once. With `agent`, the message is encode_health's with extra {"agent": agent, ...}.
    Values are formatted as `json.dumps` does (ints with str, floats with float.__repr__).
    tests/edge_agent/test_daemon_e2e.py checks the bytes against encode_health.
    """

    def __init__(self, model: str, agent: str | None = None) -> None:
        self.model = model
        self._tail = f',"model":{json.dumps(model)}'
        if agent is not None:
            self._tail += f',"agent":"{validate_id(agent)}"'
        self._keys: dict[str, str] = {}

    @staticmethod
    def head(machine: str, sensor: str) -> bytes:
        validate_id(machine)
        validate_id(sensor)
        return f'{{"machine":"{machine}","sensor":"{sensor}","seq":'.encode()

    def encode(self, seq: int, ts_ns: int, score: float, state: str, extra: dict[str, Any]) -> bytes:
        """Everything after the head; `score` finite in [0, 1], `state` one of ok/warning/alarm."""
        if state not in _STATES or not 0.0 <= score <= 1.0:
            raise ProtocolError("bad_field", f"score {score!r} or state {state!r} out of range")
        parts = [f'{seq},"ts":{ts_ns},"score":{score!r},"state":"{state}"', self._tail]
        keys = self._keys
        for name, value in extra.items():
            key = keys.get(name)
            if key is None:
                key = keys[name] = f",{json.dumps(name)}:"
            parts.append(key)
            parts.append(_json_scalar(value))
        parts.append("}")
        return "".join(parts).encode()


def _json_scalar(value: object) -> str:
    """A value as json.dumps writes it (finite floats, ints, strings)."""
    if type(value) is float:
        if not math.isfinite(value):
            raise ProtocolError("nan", f"health field value {value!r} is not finite")
        return repr(value)
    if type(value) is int:
        return str(value)
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
