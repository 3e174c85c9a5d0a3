"""The records the MQTT link hands out: inbound windows, publish handles, link statistics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from edge_agent.protocol import Window


@dataclass(frozen=True, slots=True)
class Inbound:
    """One decoded vibration window, not yet acknowledged to the broker (pass it to `MqttLink.ack`)."""

    machine: str
    sensor: str
    window: Window
    mid: int
    qos: int
    dup: bool  # the broker marked it a redelivery
    generation: int  # connection it arrived on; an ack only makes sense on the same connection
    received_ns: int

    @property
    def key(self) -> str:
        """The sensor key `machine/sensor` used by the store and the state table."""
        return f"{self.machine}/{self.sensor}"


@dataclass(slots=True)
class PublishHandle:
    """A message handed to paho; done once the broker acknowledged it (QoS 1) or it was written (QoS 0)."""

    mid: int
    outbox_id: int | None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def is_done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done or `timeout`; returns whether it is done."""
        return self._done.wait(timeout)


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Counters since the link was made."""

    received: int
    accepted: int
    rejected: dict[str, int]  # ProtocolError reason (and "queue_full") -> count
    acked: int
    stale_acks: int  # acks skipped because the connection changed; the broker redelivers those
    published: int
    connects: int
    connection_losses: int
    cycles: int  # deliberate reconnects to get dropped messages redelivered
    connected: bool
    last_error: str | None  # the latest refusal or loss, for status pages and logs
