"""The outbox pump: stored messages to the broker, in order, deleted once the broker acknowledged them.

Every health and alert message is committed to the store's outbox with its window before it is
handed to the MQTT client. `publish_new` hands a batch's messages over at once when nothing older
waits; otherwise (after a restart or a lost connection) `pump` catches up from the store, alerts
first, `OUTBOX_CHUNK` at a time, never more than `OUTBOX_MAX_IN_FLIGHT` unacknowledged. `collect`
deletes what the broker acknowledged, in one transaction a second: a crash re-sends a few
acknowledged messages (at least once), never loses one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import structlog

from edge_agent.errors import LinkError
from edge_agent.mqtt_link import MqttLink
from edge_agent.store import OutboxMessage, Store

log = structlog.get_logger("edge_agent.outbox")

OUTBOX_CHUNK: Final = 500  # outbox messages handed to the MQTT client per loop turn while catching up
OUTBOX_MAX_IN_FLIGHT: Final = 2000
MARK_SENT_EVERY_S: Final = 1.0


class OutboxPump:
    """Moves the store's outbox to the MQTT link (daemon thread only)."""

    def __init__(self, store: Store, link: MqttLink, *, before_commit: bool = False) -> None:
        self.store = store
        self.link = link
        self.before_commit = before_commit  # the setting publish_before_commit (docs/agent.md)
        self.backlog = store.outbox_count() > 0  # the outbox may hold messages not handed over yet
        self._acked: list[int] = []
        self._next_collect = 0.0

    def publish_new(self, msgs: Sequence[OutboxMessage], ids: Sequence[int]) -> None:
        """Hand a batch's messages to the MQTT client, unless older ones are still waiting or
        OUTBOX_MAX_IN_FLIGHT are unacknowledged: then `pump` sends them from the store as acks come
        (paho would queue them in memory without bound, about 2.5 KB a message)."""
        if (
            self.backlog
            or not self.link.connected
            or len(self.link.in_flight_outbox_ids()) + len(msgs) > OUTBOX_MAX_IN_FLIGHT
        ):
            self.backlog = True
            return
        try:
            for m, oid in zip(msgs, ids, strict=True):
                self.link.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, outbox_id=oid)
        except LinkError as exc:  # the client refused: the messages wait in the outbox
            log.warning("publish_deferred", error=str(exc), reason=exc.reason)
            self.backlog = True

    def publish_early(self, msgs: Sequence[OutboxMessage]) -> list[int] | None:
        """With `before_commit`: reserve the batch's outbox ids and hand its messages over now, before
        the commit that stores them (give the ids to it); otherwise None and nothing happens."""
        if not self.before_commit:
            return None
        ids = self.store.reserve_outbox_ids(len(msgs))
        self.publish_new(msgs, ids)
        return ids

    def committed(self, msgs: Sequence[OutboxMessage], ids: Sequence[int]) -> None:
        """After the batch's commit: hand its messages over, unless `publish_early` already did."""
        if not self.before_commit:
            self.publish_new(msgs, ids)

    def pump(self) -> None:
        """Catch up with the outbox (after a restart or a lost connection): alerts first, then in order."""
        if not self.backlog or not self.link.connected:
            return
        in_flight = self.link.in_flight_outbox_ids()
        if len(in_flight) >= OUTBOX_MAX_IN_FLIGHT:
            return
        # Acknowledged since the snapshot above, or acknowledged and not yet deleted: not pending.
        self._acked.extend(self.link.take_published())
        items = self.store.outbox_pending(OUTBOX_CHUNK, exclude=in_flight.union(self._acked))
        for m in items:
            self.link.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, outbox_id=m.id)
        if len(items) < OUTBOX_CHUNK:
            self.backlog = False

    def collect(self, *, force: bool = False) -> None:
        """Delete the messages the broker acknowledged from the outbox, in one transaction per second."""
        self._acked.extend(self.link.take_published())
        now = time.monotonic()
        if self._acked and (force or now >= self._next_collect):
            self.store.mark_sent(self._acked)
            self._acked = []
            self._next_collect = now + MARK_SENT_EVERY_S
