"""Helpers for testing and showing the live view: a synthetic fleet's health, alert and status messages.

`SyntheticFleet` plays what a fleet of agents publishes (not vibration: the scores themselves), with
machines that degrade at different times, so the browser tests, the screenshot in docs/img/ and the
1,000-sensor load benchmark all drive the real dashboard through a real broker with the one wire
format. `publish_step` sends one step of every sensor with a paho client the caller owns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.protocol import (
    AgentStatus,
    Alert,
    Health,
    agent_status_topic,
    alert_topic,
    encode_alert,
    encode_health,
    encode_status,
    health_topic,
)

STATE_NAMES = ("ok", "warning", "alarm")


@dataclass
class SyntheticFleet:
    """`machines` × `sensors` health streams; a share of machines degrade towards failure.

    A degrading machine's score rises exponentially from its onset step; the state follows the
    thresholds with `raise_windows` consecutive windows to raise a level and to clear it, as the agent
    does. One agent per `machines_per_agent` machines announces itself (with the thresholds) and, as
    the agent does, names itself in each health message's `agent` field.
    """

    machines: int = 20
    sensors: int = 1
    seed: int = 0
    warning: float = 0.5
    alarm: float = 0.8
    degrading: float = 0.35  # share of machines that degrade
    horizon: int = 600  # steps over which the degrading ones reach failure
    period_s: float = 1.0  # sensor time between windows
    t0_ns: int = 1_764_000_000 * 10**9
    model: str = "2026.12.01-1"
    raise_windows: int = 3
    machines_per_agent: int = 10
    step: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)
    _onset: np.ndarray = field(init=False, repr=False)
    _rate: np.ndarray = field(init=False, repr=False)
    _level: np.ndarray = field(init=False, repr=False)
    _run: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        n = self.machines * self.sensors
        degrade = self._rng.random(self.machines) < self.degrading
        onset = np.where(degrade, self._rng.uniform(0.0, 0.7, self.machines) * self.horizon, math.inf)
        self._onset = np.repeat(onset, self.sensors)
        self._rate = np.repeat(self._rng.uniform(2.5, 6.0, self.machines) / self.horizon, self.sensors)
        self._level = np.zeros(n, np.int8)
        self._run = np.zeros(n, np.int32)

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(f"machine-{m:03d}", f"s{s}") for m in range(self.machines) for s in range(self.sensors)]

    def agent_of(self, machine: int) -> str:
        return f"edge-{machine // self.machines_per_agent:02d}"

    def agents(self) -> list[tuple[str, AgentStatus]]:
        count = max(1, math.ceil(self.machines / self.machines_per_agent))
        return [
            (
                self.agent_of(i * self.machines_per_agent),
                AgentStatus("online", self.model, self.warning, self.alarm),
            )
            for i in range(count)
        ]

    def next(self) -> tuple[list[Health], list[Alert]]:
        """One window of every sensor: its health message, and an alert where the state changed."""
        k = self.step
        self.step += 1
        base = 0.12 + 0.04 * self._rng.standard_normal(len(self._onset))
        age = np.maximum(0.0, k - self._onset)
        score = np.clip(base + 0.05 * (np.exp(self._rate * age) - 1.0), 0.0, 1.0)
        target = (score >= self.warning).astype(np.int8) + (score >= self.alarm).astype(np.int8)
        self._run = np.where(target != self._level, self._run + 1, 0)
        change = self._run >= self.raise_windows
        previous = self._level.copy()
        self._level = np.where(change, target, self._level)
        self._run[change] = 0
        ts = self.t0_ns + int(k * self.period_s * 1e9)
        healths, alerts = [], []
        for i, (machine, sensor) in enumerate(self.keys):
            state = STATE_NAMES[self._level[i]]
            agent = {"agent": self.agent_of(i // self.sensors)}
            healths.append(
                Health(machine, sensor, k, ts, round(float(score[i]), 4), state, self.model, agent)
            )  # type: ignore[arg-type]
            if change[i] and previous[i] != self._level[i]:
                alerts.append(
                    Alert(
                        machine,
                        sensor,
                        k,
                        ts,
                        state,  # type: ignore[arg-type]
                        STATE_NAMES[previous[i]],  # type: ignore[arg-type]
                        round(float(score[i]), 4),
                        self.model,
                        f"health {score[i]:.3f} (warning {self.warning:g}, alarm {self.alarm:g}) "
                        f"for {self.raise_windows} windows",
                    )
                )
        return healths, alerts


def publish_step(client: Any, prefix: str, healths: list[Health], alerts: list[Alert], qos: int = 0) -> None:
    """Publish one step's health (and retained alert) messages with a connected paho client."""
    for h in healths:
        client.publish(health_topic(prefix, h.machine, h.sensor), encode_health(h), qos=qos)
    for a in alerts:
        client.publish(alert_topic(prefix, a.machine, a.sensor), encode_alert(a), qos=1, retain=True)


def publish_agents(client: Any, prefix: str, fleet: SyntheticFleet) -> None:
    for agent, status in fleet.agents():
        client.publish(agent_status_topic(prefix, agent), encode_status(status), qos=1, retain=True)
