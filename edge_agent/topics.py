"""MQTT topics and ids: the one place that builds and parses `{prefix}/{machine}/{sensor}/{kind}`.

Ids are `[A-Za-z0-9_-]{1,64}`; `_agents` is a reserved machine level for agent topics. Bad input
raises `ProtocolError` ("bad_id" or "bad_topic"). Part of the wire format (docs/protocol.md);
`edge_agent.protocol` re-exports everything here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from edge_agent.errors import ProtocolError

ID_PATTERN: Final = r"[A-Za-z0-9_-]{1,64}"
KINDS: Final = ("vibration", "health", "alert")
AGENTS_LEVEL: Final = "_agents"  # reserved topic level; not usable as a machine id
_ID_RE: Final = re.compile(ID_PATTERN)


@dataclass(frozen=True, slots=True)
class SensorTopic:
    """A parsed `{prefix}/{machine}/{sensor}/{kind}` topic."""

    machine: str
    sensor: str
    kind: str  # "vibration" | "health" | "alert"


def validate_id(s: str) -> str:
    """Return `s` if it is a valid machine, sensor or agent id (`[A-Za-z0-9_-]{1,64}`).

    >>> validate_id("press-7_a")
    'press-7_a'
    >>> validate_id("a/b")
    Traceback (most recent call last):
        ...
    edge_agent.errors.ProtocolError: bad_id: 'a/b' does not match [A-Za-z0-9_-]{1,64}
    """
    if not isinstance(s, str) or _ID_RE.fullmatch(s) is None:
        raise ProtocolError("bad_id", f"{s!r:.80} does not match {ID_PATTERN}")
    return s


def _machine_id(machine: str) -> str:
    if validate_id(machine) == AGENTS_LEVEL:
        raise ProtocolError(
            "bad_id", f"{AGENTS_LEVEL!r} is reserved for agent topics; pick another machine id"
        )
    return machine


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not all(_ID_RE.fullmatch(level) for level in prefix.split("/")):
        raise ProtocolError(
            "bad_topic", f"prefix {prefix!r:.80} must be one or more /-separated levels of {ID_PATTERN}"
        )
    return prefix


def _sensor_topic(prefix: str, machine: str, sensor: str, kind: str) -> str:
    return f"{_check_prefix(prefix)}/{_machine_id(machine)}/{validate_id(sensor)}/{kind}"


def vibration_topic(prefix: str, machine: str, sensor: str) -> str:
    """`{prefix}/{machine}/{sensor}/vibration` (sensor → agent, QoS 1)."""
    return _sensor_topic(prefix, machine, sensor, "vibration")


def health_topic(prefix: str, machine: str, sensor: str) -> str:
    """`{prefix}/{machine}/{sensor}/health` (agent →, QoS 1)."""
    return _sensor_topic(prefix, machine, sensor, "health")


def alert_topic(prefix: str, machine: str, sensor: str) -> str:
    """`{prefix}/{machine}/{sensor}/alert` (agent →, QoS 1, retained)."""
    return _sensor_topic(prefix, machine, sensor, "alert")


def vibration_subscription(prefix: str) -> str:
    """The filter an agent subscribes to: `{prefix}/+/+/vibration`."""
    return f"{_check_prefix(prefix)}/+/+/vibration"


def agent_status_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/status` (retained; also the last will)."""
    return f"{_check_prefix(prefix)}/{AGENTS_LEVEL}/{validate_id(agent)}/status"


def agent_health_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/health` (agent →: a batch of health messages, with `health_batch`)."""
    return f"{_check_prefix(prefix)}/{AGENTS_LEVEL}/{validate_id(agent)}/health"


def model_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/model` (deployer → agent: a signed bundle)."""
    return f"{_check_prefix(prefix)}/{AGENTS_LEVEL}/{validate_id(agent)}/model"


def model_force_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/model/force` (deployer → agent: a bundle accepted even if older)."""
    return f"{model_topic(prefix, agent)}/force"


def model_result_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/model/result` (agent →: accepted or rejected, and why)."""
    return f"{model_topic(prefix, agent)}/result"


def reset_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/reset-baseline` (operator → agent: a signed reset command)."""
    return f"{_check_prefix(prefix)}/{AGENTS_LEVEL}/{validate_id(agent)}/reset-baseline"


def reset_result_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/reset-baseline/result` (agent →: done, or refused and why)."""
    return f"{reset_topic(prefix, agent)}/result"


def parse_sensor_topic(topic: str, prefix: str) -> SensorTopic:
    """Split `{prefix}/{machine}/{sensor}/{kind}`; raises ProtocolError("bad_topic" or "bad_id").

    >>> parse_sensor_topic("gruwatch/press7/s0/vibration", "gruwatch")
    SensorTopic(machine='press7', sensor='s0', kind='vibration')
    """
    _check_prefix(prefix)
    if not isinstance(topic, str) or not topic.startswith(prefix + "/"):
        raise ProtocolError("bad_topic", f"{topic!r:.120} is not under the prefix {prefix!r}")
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) != 3 or levels[2] not in KINDS:
        raise ProtocolError(
            "bad_topic", f"{topic!r:.120} is not {prefix}/<machine>/<sensor>/<{'|'.join(KINDS)}>"
        )
    machine, sensor, kind = levels
    return SensorTopic(_machine_id(machine), validate_id(sensor), kind)
