"""The outbox pump never hands paho more than OUTBOX_MAX_IN_FLIGHT unacknowledged messages: the rest
wait in the store (bounded memory under a slow broker) and go out, in order, as acks come."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent import outbox as outbox_module
from edge_agent.outbox import OutboxPump
from edge_agent.store import OutboxMessage, Store


class _Link:
    """The MqttLink calls the pump makes (logic above the I/O layer; acks are simulated)."""

    connected = True

    def __init__(self) -> None:
        self.handed: list[int] = []
        self.acked: set[int] = set()
        self.fresh_acks: list[int] = []

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool, outbox_id: int) -> None:
        self.handed.append(outbox_id)

    def in_flight_outbox_ids(self) -> set[int]:
        return set(self.handed) - self.acked

    def take_published(self) -> list[int]:
        out, self.fresh_acks = self.fresh_acks, []
        return out

    def ack_all(self) -> None:
        new = [i for i in self.handed if i not in self.acked]
        self.acked.update(new)
        self.fresh_acks += new


def test_new_messages_wait_in_the_store_while_too_many_are_unacknowledged(tmp_path: Path) -> None:
    mp = pytest.MonkeyPatch()
    mp.setattr(outbox_module, "OUTBOX_MAX_IN_FLIGHT", 10)
    mp.setattr(outbox_module, "OUTBOX_CHUNK", 2)
    try:
        with Store.open(tmp_path / "s.db", budget_bytes=2**30) as store:
            link = _Link()
            pump = OutboxPump(store, link)  # type: ignore[arg-type]
            sent: list[int] = []
            for batch in range(4):  # 4 batches of 4 messages; nothing acknowledged yet
                msgs = [OutboxMessage(f"p/m/s{batch}/health", b"{}") for _ in range(4)]
                ids = store.enqueue_outbox(msgs)
                sent += ids
                pump.publish_new(msgs, ids)
                pump.pump()
            # two batches handed over at once, then the pump's chunks up to the limit; the rest waits
            assert link.handed == sent[:10]
            assert pump.backlog
            for _ in range(10):  # acks come: the pump catches up from the store
                link.ack_all()
                pump.collect(force=True)
                pump.pump()
                assert len(link.in_flight_outbox_ids()) <= 10
            assert link.handed == sent  # every message once, in order
            assert not pump.backlog
            assert store.outbox_count() == 0
    finally:
        mp.undo()
