"""The agent's one MQTT client: the only module in edge_agent that imports paho.

`MqttLink` connects with a persistent session, subscribes at QoS 1 to `{prefix}/+/+/vibration` and
turns each message into a typed `Inbound` on a bounded queue or a counted rejection; the daemon acks
a window only once its results are committed. Flow control (Receive Maximum, `queue_full` and the
deliberate reconnect), control topics, the retained status topic and its last will: docs/agent.md,
"MQTT link". Connects, losses and rejections are structlog events ("edge_agent.mqtt").
"""

from __future__ import annotations

import contextlib
import queue
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import LinkError, ProtocolError
from edge_agent.link_diagnostics import ConnectFailures
from edge_agent.link_records import Inbound, LinkStats, PublishHandle
from edge_agent.protocol import (
    AgentStatus,
    agent_status_topic,
    encode_status,
    parse_sensor_topic,
    vibration_subscription,
)
from edge_agent.settings import AgentSettings
from edge_agent.window_rules import WindowRules

log = structlog.get_logger("edge_agent.mqtt")

__all__ = ["QUEUE_FULL", "Inbound", "LinkStats", "MqttLink", "PublishHandle", "link_error", "one_shot_client"]

QUEUE_FULL = "queue_full"
_RELEASE_CYCLE_S = 5.0  # windows given back (store failing) are asked for again this often at most
_EARLY_S = 5.0  # an ack waits this long for its handle; older ones are strays (paho's ids wrap)
_STOP_POLL_S = 0.05  # a full queue is retried this often, so stop() never waits on the network thread
_TOPIC_CACHE_MAX = 16_384  # topics remembered: ~300 B each; a miss costs a parse (~2.5 µs)


class MqttLink:
    """The agent's MQTT connection. The constructor only stores its arguments; `start()` connects.

    Thread model: paho's network thread runs the callbacks, which only decode, count and enqueue;
    every other method is for the daemon's thread (`ack` and `publish` are safe from any thread).
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        model_version: str = "",
        thresholds: tuple[float, float] | None = None,
        queue_max_size: int | None = None,
    ) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.status_topic = agent_status_topic(settings.prefix, settings.agent_id)
        self.subscription = vibration_subscription(settings.prefix)
        self._model_version = model_version
        self._thresholds = thresholds  # (warning, alarm) of the served model, announced with it
        self._queue: queue.Queue[Inbound] = queue.Queue(queue_max_size or settings.queue_max_size)
        self._lock = threading.Lock()
        self._rejected: Counter[str] = Counter()
        self._received = 0
        self._accepted = 0
        self._acked = 0
        self._stale_acks = 0
        self._published = 0
        self._connects = 0
        self._losses = 0
        self._cycles = 0
        self._dropped_unacked = 0
        self._next_cycle = 0.0  # no deliberate reconnect before this (monotonic)
        self._storage: str | None = None
        self._generation = 0
        self._online = threading.Event()  # CONNACK received, connection not lost since
        self._connected = threading.Event()  # online and the broker acknowledged our subscription
        self._sub_mid: int | None = None
        self._handles: dict[int, PublishHandle] = {}
        self._early: dict[int, float] = {}  # mid -> when an ack came before its handle existed
        self._published_outbox: list[int] = []
        self._client: paho.Client | None = None
        self._stopping = False
        self._cycling = False  # a deliberate reconnect is under way: the network thread must not wait
        self._last_error: str | None = None
        self._extra: dict[str, tuple[Callable[[bytes], None], int]] = {}  # topic -> (callback, qos)
        self._topics: dict[str, tuple[str, str]] = {}  # vibration topic -> (machine, sensor), validated
        self._extra_received: Counter[str] = Counter()
        self.rules, self.connect_failures = WindowRules.from_settings(settings), ConnectFailures(self)

    # --- control topics --------------------------------------------------------------------------

    def add_subscription(self, topic: str, callback: Callable[[bytes], None], *, qos: int = 1) -> None:
        """Also subscribe to `topic` (exact) on every connect; payloads go to `callback` on paho's thread
        (it must not block), acked once it returns, even if it raises (logged)."""
        if "+" in topic or "#" in topic:
            raise ValueError(f"add_subscription takes an exact topic, got the filter {topic!r}")
        self._extra[topic] = (callback, qos)
        client = self._client
        if client is not None and self._online.is_set():
            client.subscribe(topic, qos=qos)

    def received_on(self, topic: str) -> int:
        """Messages received on an `add_subscription` topic so far."""
        with self._lock:
            return self._extra_received[topic]

    # --- connection ------------------------------------------------------------------------------

    @property
    def v5(self) -> bool:
        return self.settings.mqtt_protocol == "5"

    def start(self) -> None:
        """Create the client and connect in the background (loop_start); reconnects by itself.

        Returns at once; use `wait_connected` to wait for the first CONNACK.
        """
        if self._client is not None:
            raise RuntimeError("MqttLink.start() called twice")
        s = self.settings
        self._stopping = False
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
            clean_session=None if self.v5 else False,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        if s.mqtt_username is not None:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password is not None else None
            client.username_pw_set(s.mqtt_username, password)
        if s.broker_tls:
            client.tls_set(
                ca_certs=str(s.mqtt_ca_file) if s.mqtt_ca_file else None,
                certfile=str(s.mqtt_cert_file) if s.mqtt_cert_file else None,
                keyfile=str(s.mqtt_key_file) if s.mqtt_key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.will_set(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
        client.reconnect_delay_set(s.mqtt_reconnect_min_s, s.mqtt_reconnect_max_s)
        client.max_inflight_messages_set(max(20, s.batch_max_size))
        client.on_connect, client.on_connect_fail = self._on_connect, self.connect_failures
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._connect_async()
        client.loop_start()

    def _connect_async(self) -> None:
        assert self._client is not None
        s = self.settings
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.mqtt_session_expiry_s
            props.ReceiveMaximum = min(65_535, self._queue.maxsize)
            self._client.connect_async(
                s.broker_host, s.broker_port, s.mqtt_keepalive_s, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(s.broker_host, s.broker_port, s.mqtt_keepalive_s)

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected and subscribed, or `timeout` seconds; returns whether connected."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self, *, timeout: float = 5.0) -> None:
        """Publish status "offline" (retained), disconnect cleanly and stop the network thread;
        unacknowledged windows stay with the broker's session and are redelivered next start."""
        client = self._client
        if client is None:
            return
        self._stopping = True
        if self._online.is_set():
            self._publish_status("offline").wait(timeout)
        client.disconnect()
        client.loop_stop()
        client._reset_sockets(sockpair_only=True)
        self._online.clear()
        self._connected.clear()
        self._client = None

    def set_model_version(self, version: str, thresholds: tuple[float, float] | None = None) -> None:
        """Announce a newly served model and its (warning, alarm) thresholds on the status topic (and in
        the will for the next connect)."""
        self._model_version = version
        self._thresholds = thresholds
        client = self._client
        if client is None:
            return
        client.will_set(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
        if self._online.is_set():
            self._publish_status("online")

    @property
    def cycles(self) -> int:
        """Deliberate reconnects so far (each makes the broker redeliver what was not acked)."""
        return self._cycles

    def set_storage(self, storage: str | None) -> None:
        """Say `storage` ("degraded") on the status topic, or nothing once it is fine again (None)."""
        self._storage = storage
        if self._client is not None and self._online.is_set():
            self._publish_status("online")

    def _publish_status(self, state: Literal["online", "offline"]) -> PublishHandle:
        """The retained status, through the handle table like every publish (never a stray ack)."""
        try:
            return self.publish(self.status_topic, self._status_payload(state), qos=1, retain=True)
        except LinkError as exc:
            log.warning("mqtt_status_not_sent", state=state, reason=exc.reason)
            return PublishHandle(mid=-1, outbox_id=None)

    def release(self, items: Sequence[Inbound]) -> None:
        """Give windows back unacked (their results could not be committed): the broker redelivers them
        after the next deliberate reconnect, at most every `_RELEASE_CYCLE_S` seconds."""
        n = sum(1 for it in items if it.qos != 0)
        with self._lock:
            self._dropped_unacked += n
            now = time.monotonic()
            if self._next_cycle <= now:  # held windows do not push the reconnect further away
                self._next_cycle = now + _RELEASE_CYCLE_S

    def _status_payload(self, state: Literal["online", "offline"]) -> bytes:
        """The status as `protocol.encode_status` writes it: state, served model, its thresholds, storage."""
        warning, alarm = self._thresholds if self._thresholds is not None else (None, None)
        storage = self._storage if state == "online" else None
        return encode_status(AgentStatus(state, self._model_version, warning, alarm, storage))

    def _cycle(self) -> None:
        """Reconnect on purpose (clean DISCONNECT, same session) so the broker redelivers dropped windows."""
        client = self._client
        if client is None:
            return
        with self._lock:
            self._cycles += 1
            dropped, self._dropped_unacked = self._dropped_unacked, 0
        log.warning("mqtt_cycling", reason="redeliver windows dropped unacked", dropped=dropped)
        self._cycling = True  # loop_stop() joins paho's thread: meanwhile _enqueue must never wait
        try:
            client.disconnect()
            client.loop_stop()
        finally:
            self._cycling = False
        # paho's loop_start makes a new wake-up socket pair without closing the old one: close it here.
        client._reset_sockets(sockpair_only=True)
        self._connect_async()
        client.loop_start()

    # --- paho callbacks (network thread): decode, count, enqueue; nothing else ------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            with self._lock:
                self._last_error = f"connect refused: {reason}"
            log.error(
                "mqtt_connect_refused",
                broker=self.settings.broker,
                reason=str(reason),
                hint="check mqtt_username / GRUWATCH_MQTT_PASSWORD, client id, ACLs",
            )
            return
        with self._lock:
            self._connects += 1
            self._generation += 1
            n = self._connects
        self._online.set()
        log.info(
            "mqtt_connected",
            broker=self.settings.broker,
            client_id=self.settings.client_id,
            session_present=bool(flags.session_present),
            connects=n,
        )
        self._publish_status("online")
        _, mid = client.subscribe(self.subscription, qos=self.settings.mqtt_qos)
        with self._lock:
            self._sub_mid = mid
        for topic, (_, qos) in list(self._extra.items()):
            client.subscribe(topic, qos=qos)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            if mid != self._sub_mid:
                return
        if any(rc.is_failure for rc in reason_codes):
            with self._lock:
                self._last_error = f"subscription refused: {reason_codes[0]}"
            log.error("mqtt_subscription_refused", topic=self.subscription, reason=str(reason_codes[0]))
            return
        self._connected.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_online = self._online.is_set()
        self._online.clear()
        self._connected.clear()
        if reason.is_failure and was_online and not self._stopping:
            with self._lock:
                self._losses += 1
                self._last_error = f"connection lost: {reason}"
                n = self._losses
            log.warning(
                "mqtt_connection_lost", reason=str(reason), losses=n, action="reconnecting with backoff"
            )
        else:
            log.info("mqtt_disconnected", reason=str(reason))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._stopping:
            return  # shutting down: not acked, so the broker redelivers it to the next session
        extra = self._extra.get(msg.topic)
        if extra is not None:
            self._on_control(client, msg, extra[0])
            return
        # The counters below are written by this thread only: no lock (stats() reads whole ints).
        self._received += 1
        generation = self._generation
        try:
            ids = self._topics.get(msg.topic)
            if ids is None:
                topic = parse_sensor_topic(msg.topic, self.prefix)
                if topic.kind != "vibration":
                    raise ProtocolError("bad_topic", f"{msg.topic!r:.120} is not a vibration topic")
                ids = (topic.machine, topic.sensor)
                if len(self._topics) >= _TOPIC_CACHE_MAX:
                    self._topics.clear()
                self._topics[msg.topic] = ids
            window = self.rules.window(msg.payload, msg.topic)
        except ProtocolError as exc:
            with self._lock:  # stats() copies the Counter: not while it changes
                self._rejected[exc.reason] += 1
            self.rules.log.rejected(msg.topic, exc)  # one line per reason every 10 s at most
            client.ack(msg.mid, msg.qos)  # a malformed message stays malformed: do not have it redelivered
            return
        item = Inbound(
            machine=ids[0],
            sensor=ids[1],
            window=window,
            mid=msg.mid,
            qos=msg.qos,
            dup=bool(msg.dup),
            generation=generation,
            received_ns=time.time_ns(),
        )
        if not self._enqueue(item):
            if self._stopping or (self._cycling and item.qos):
                return  # not acked: the broker redelivers it to the next connection
            with self._lock:
                self._rejected[QUEUE_FULL] += 1
                self._dropped_unacked += item.qos != 0  # QoS 0: nothing to redeliver
            log.warning(
                "mqtt_queue_full", sensor=item.key, seq=window.seq, action="dropped unacked for redelivery"
            )
            return
        self._accepted += 1

    def _enqueue(self, item: Inbound) -> bool:
        """Queue a window, blocking at most `queue_block_s` while full; never while stop() or _cycle()
        waits for this thread (paho reads up to one packet per message in flight before it stops)."""
        deadline = time.monotonic() + (0.0 if self._cycling else self.settings.queue_block_s)
        while not self._stopping:
            try:
                self._queue.put(item, timeout=min(_STOP_POLL_S, max(0.0, deadline - time.monotonic())))
            except queue.Full:
                if time.monotonic() >= deadline or self._cycling:
                    return False
            else:
                return True
        return False

    def _on_control(
        self, client: paho.Client, msg: paho.MQTTMessage, callback: Callable[[bytes], None]
    ) -> None:
        with self._lock:
            self._extra_received[msg.topic] += 1
        try:
            callback(bytes(msg.payload))
        except Exception:
            log.exception("mqtt_handler_failed", topic=msg.topic)
        finally:
            client.ack(msg.mid, msg.qos)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            handle = self._handles.pop(mid, None)
            if handle is None:  # acked before publish() registered it (or a stray: forgotten after 5 s)
                now = time.monotonic()
                if len(self._early) > 1000:
                    self._early = {m: t for m, t in self._early.items() if now - t < _EARLY_S}
                self._early[mid] = now
                return
            self._complete(handle)

    def _complete(self, handle: PublishHandle) -> None:
        # Called with self._lock held.
        self._published += 1
        if handle.outbox_id is not None:
            self._published_outbox.append(handle.outbox_id)
        handle._done.set()

    # --- daemon side -----------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Inbound | None:
        """The next window, or None after `timeout` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def get_batch(self, max_items: int, max_wait_s: float) -> list[Inbound]:
        """Up to `max_items` windows: waits up to `max_wait_s` for the first, then takes what else waits.
        Windows dropped or given back unacked: once the queue has drained, it first reconnects so the
        broker redelivers them (call it after acking the previous batch)."""
        with self._lock:
            dropped = self._dropped_unacked
        if dropped and self._queue.empty() and time.monotonic() >= self._next_cycle:
            self._cycle()
        out: list[Inbound] = []
        first = self.get(max_wait_s)
        if first is not None:
            out.append(first)
            get_nowait = self._queue.get_nowait
            with contextlib.suppress(queue.Empty):
                while len(out) < max_items:
                    out.append(get_nowait())
        return out

    def qsize(self) -> int:
        return self._queue.qsize()

    def ack(self, item: Inbound) -> bool:
        """Acknowledge a window to the broker (call after its results are committed to the store).
        Returns False when the connection it arrived on is gone: the broker will redeliver it, and the
        daemon drops the duplicate by sequence number (and acks that one).
        """
        return self.ack_many([item]) == 1

    def ack_many(self, items: Sequence[Inbound]) -> int:
        """`ack` for a whole batch (one lock round); returns how many were acked."""
        client = self._client
        todo = [it for it in items if it.qos != 0]
        with self._lock:
            online = client is not None and self._online.is_set()
            gen = self._generation
            fresh = [it for it in todo if online and it.generation == gen]
            self._stale_acks += len(todo) - len(fresh)
            self._acked += len(fresh)
        if client is None:
            return 0
        ok = 0
        for it in fresh:
            if client.ack(it.mid, it.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS:
                ok += 1
        return ok + (len(items) - len(todo))

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        outbox_id: int | None = None,
    ) -> PublishHandle:
        """Hand a message to paho (queued while disconnected); the handle completes on the broker's ack.
        Completed `outbox_id`s are collected for `take_published()` (the daemon's thread marks them sent)."""
        client = self._client
        if client is None:
            raise LinkError("MqttLink.publish() before start()", reason="mqtt_not_started")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise link_error(info.rc, f"publish to {topic!r}")
        handle = PublishHandle(mid=info.mid, outbox_id=outbox_id)
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is not None and time.monotonic() - early < _EARLY_S:
                self._complete(handle)
            else:
                self._handles[info.mid] = handle
        return handle

    def take_published(self) -> list[int]:
        """Outbox ids whose messages the broker acknowledged since the last call."""
        with self._lock:
            out, self._published_outbox = self._published_outbox, []
        return out

    def in_flight_outbox_ids(self) -> set[int]:
        """Outbox ids handed to paho and not yet acknowledged (skip them in `outbox_pending`)."""
        with self._lock:
            return {h.outbox_id for h in self._handles.values() if h.outbox_id is not None}

    def stats(self) -> LinkStats:
        with self._lock:
            return LinkStats(
                received=self._received,
                accepted=self._accepted,
                rejected=dict(self._rejected),
                acked=self._acked,
                stale_acks=self._stale_acks,
                published=self._published,
                connects=self._connects,
                connection_losses=self._losses,
                cycles=self._cycles,
                connected=self._connected.is_set(),
                last_error=self._last_error,
            )


def link_error(rc: int, what: str) -> LinkError:
    """The one translation of a paho return code into a LinkError (reason `mqtt_<paho name>`)."""
    try:
        name = MQTTErrorCode(rc).name.removeprefix("MQTT_ERR_").lower()
    except ValueError:
        name = str(rc)
    return LinkError(f"mqtt {what} failed: {paho.error_string(rc)}", reason=f"mqtt_{name}")


def one_shot_client(
    client_prefix: str,
    reply_topic: str,
    accept: Callable[[bytes], bool],
    answers: queue.Queue[bytes],
    subscribed: threading.Event,
) -> paho.Client:
    """A client that subscribes to `reply_topic` on connect and queues the accepted answers."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{client_prefix}-{uuid.uuid4().hex[:12]}",
        protocol=paho.MQTTv311,
    )

    def on_connect(c: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        if not reason.is_failure:
            c.subscribe(reply_topic, qos=1)

    def on_subscribe(
        c: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], properties: Any
    ) -> None:
        if not any(rc.is_failure for rc in codes):
            subscribed.set()

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        body = bytes(msg.payload)
        with contextlib.suppress(Exception):
            if accept(body):
                answers.put(body)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    return client
