"""The live view's one MQTT client: health, alert and agent-status topics in, a `FleetModel` updated.

`BrokerFeed(model, broker_url, prefix).start()` subscribes to `{prefix}/+/+/health` (QoS 0: a
lost score is replaced a window later, and no acknowledgement per message costs CPU), and at QoS 1 to
`{prefix}/+/+/alert` (retained: a new dashboard sees every sensor's current alarm state at once) and
`{prefix}/_agents/+/status` (retained, and each agent's last will), and at QoS 0 to
`{prefix}/_agents/+/health` (the health batches of agents run with `health_batch`), and decodes every message with
`edge_agent.protocol`, the one wire format. A payload that does not decode is counted by reason in
the model, never shown and never fatal. The vibration topic of one sensor is subscribed to only while
a detail view holds a lease on it (`touch(key)`; `sweep()` drops expired leases and unsubscribes).

paho's network thread reconnects by itself (1 s to 10 s back-off); `status()` says whether the broker
is reachable and since when, which the page shows as a banner. Nothing else in dashboards imports paho.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from dashboards.fleet import FleetModel
from edge_agent.broker_url import parse_broker_url
from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    AGENTS_LEVEL,
    decode_alert,
    decode_health,
    decode_health_batch,
    decode_status,
    decode_vibration,
    parse_sensor_topic,
    validate_id,
    vibration_topic,
)

log = logging.getLogger("dashboards.feed")
KEEPALIVE_S = 10  # a silently dead broker is noticed within ~1.5 × this


class BrokerFeed:
    """Feeds a FleetModel from a broker. Constructing stores the arguments; `start()` connects."""

    def __init__(
        self,
        model: FleetModel,
        broker_url: str,
        prefix: str = "gruwatch",
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.model = model
        self.address = parse_broker_url(broker_url)  # ValueError with what to write instead
        validate_id_levels(prefix)
        self.prefix = prefix
        self.username, self.password, self.ca_file = username, password, ca_file
        self._client: paho.Client | None = None
        self._lock = threading.Lock()
        self._connected = False
        self._subscribed = threading.Event()  # the broker acknowledged this connection's subscriptions
        self._sub_mid: int | None = None
        self._since = time.time()  # wall time of the latest change of `connected`
        self._error: str | None = "connecting"
        self._subscribed_vibration: set[str] = set()

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> BrokerFeed:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"gruwatch-dashboard-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.address.tls:
            client.tls_set(ca_certs=self.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
        client.loop_start()
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()

    def status(self) -> dict[str, Any]:
        """{"broker", "prefix", "connected", "since" (wall s), "error" (None when connected)}."""
        with self._lock:
            return {
                "broker": self.address.url,
                "prefix": self.prefix,
                "connected": self._connected,
                "since": self._since,
                "error": self._error,
            }

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the broker has acknowledged the subscriptions (messages published from then on
        reach the page); False after `timeout` seconds."""
        return self._subscribed.wait(timeout)

    def _set_connected(self, connected: bool, error: str | None) -> None:
        with self._lock:
            if connected != self._connected:
                self._since = time.time()
            self._connected, self._error = connected, error

    # --------------------------------------------------------------------------- detail views
    def touch(self, key: str) -> None:
        """A detail view is open on `key` ("machine/sensor"): keep its vibration topic subscribed."""
        machine, _, sensor = key.partition("/")
        try:
            topic = vibration_topic(self.prefix, machine, sensor)
        except ProtocolError:
            return
        self.model.watch(key)
        with self._lock:
            new = topic not in self._subscribed_vibration
            self._subscribed_vibration.add(topic)
        client = self._client
        if new and client is not None:
            client.subscribe(topic, qos=0)

    def sweep(self) -> None:
        """Unsubscribe from the vibration topics of detail views that stopped asking."""
        client = self._client
        for key in self.model.expire_watches():
            machine, _, sensor = key.partition("/")
            topic = vibration_topic(self.prefix, machine, sensor)
            with self._lock:
                self._subscribed_vibration.discard(topic)
            if client is not None:
                client.unsubscribe(topic)

    def vibration_subscriptions(self) -> list[str]:
        with self._lock:
            return sorted(self._subscribed_vibration)

    # ----------------------------------------------------------------------------- paho callbacks
    def _on_connect(self, client: paho.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._set_connected(False, f"connection refused: {reason}")
            log.warning("dashboard: broker %s refused the connection: %s", self.address.url, reason)
            return
        self._set_connected(True, None)
        log.info("dashboard: connected to %s (prefix %s)", self.address.url, self.prefix)
        topics = [
            (f"{self.prefix}/+/+/health", 0),  # the next one comes in a second: no acks to send
            (f"{self.prefix}/+/+/alert", 1),
            (f"{self.prefix}/{AGENTS_LEVEL}/+/status", 1),
            (f"{self.prefix}/{AGENTS_LEVEL}/+/health", 0),  # agents with health_batch: one per batch
        ]
        with self._lock:
            topics += [(t, 0) for t in sorted(self._subscribed_vibration)]
        self._subscribed.clear()
        _rc, self._sub_mid = client.subscribe(topics)

    def _on_subscribe(self, _client: paho.Client, _u: Any, mid: int, _codes: Any, _props: Any) -> None:
        if mid == self._sub_mid:
            self._subscribed.set()

    def _on_connect_fail(self, _client: paho.Client, _u: Any) -> None:
        self._set_connected(False, "cannot reach the broker")

    def _on_disconnect(self, _client: paho.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._subscribed.clear()
        self._set_connected(False, "connection lost" if reason.is_failure else "disconnected")
        if self._client is not None:  # not our own stop()
            log.warning("dashboard: lost the broker %s (%s); reconnecting", self.address.url, reason)

    def _on_message(self, _client: paho.Client, _u: Any, msg: Any) -> None:
        if not msg.payload:  # a retained message being cleared
            return
        try:
            self._route(msg.topic, msg.payload)
        except ProtocolError as exc:
            self.model.on_rejected(exc.reason)

    def _route(self, topic: str, payload: bytes) -> None:
        agents = f"{self.prefix}/{AGENTS_LEVEL}/"
        if topic.startswith(agents):
            agent, _, rest = topic[len(agents) :].partition("/")
            if rest == "status":
                self.model.on_status(validate_id(agent), decode_status(payload))
            elif rest == "health":
                name, healths = decode_health_batch(payload)
                if name != agent:
                    raise ProtocolError("bad_topic", f"health batch of agent {name!r} on {topic!r}")
                self.model.on_healths(healths, agent=name)
            else:
                raise ProtocolError("bad_topic", f"{topic!r} is not an agent status or health topic")
            return
        where = parse_sensor_topic(topic, self.prefix)
        if where.kind == "health":
            h = decode_health(payload)
            if (h.machine, h.sensor) != (where.machine, where.sensor):
                raise ProtocolError("bad_topic", f"health for {h.machine}/{h.sensor} on {topic!r}")
            self.model.on_health(h)
        elif where.kind == "alert":
            a = decode_alert(payload)
            if (a.machine, a.sensor) != (where.machine, where.sensor):
                raise ProtocolError("bad_topic", f"alert for {a.machine}/{a.sensor} on {topic!r}")
            self.model.on_alert(a)
        else:
            self.model.on_window(where.machine, where.sensor, decode_vibration(payload))


def validate_id_levels(prefix: str) -> str:
    """A topic prefix: one or more /-separated id levels (ValueError saying so otherwise)."""
    try:
        for level in prefix.split("/"):
            validate_id(level)
    except ProtocolError as exc:
        raise ValueError(
            f"prefix {prefix!r} must be one or more /-separated levels of [A-Za-z0-9_-]{{1,64}}"
        ) from exc
    return prefix
