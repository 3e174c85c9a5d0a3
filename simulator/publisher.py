"""The simulator's MQTT publisher: the one module in `simulator` that imports paho.

`Publisher.connect(address, ...)` starts paho's network thread and waits for the broker's CONNACK;
`publish(topic, payload)` blocks while `max_inflight` messages are unacknowledged (so memory stays
bounded and paho's own in-flight window, set to the same number, never queues behind our back) and
while the connection is down; paho reconnects by itself with exponential backoff between
`reconnect_min_s` and `reconnect_max_s`, and QoS ≥ 1 messages that were in flight are sent again
(MQTT's at-least-once). `flush()` waits for every acknowledgement; `stats` counts what happened,
reconnects included. Credentials come from the environment (GRUWATCH_MQTT_USERNAME /
GRUWATCH_MQTT_PASSWORD), never from the URL alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.broker_url import BrokerAddress
from edge_agent.broker_url import parse_broker_url as _parse_broker_url
from edge_agent.errors import GruwatchError

USERNAME_ENV = "GRUWATCH_MQTT_USERNAME"
PASSWORD_ENV = "GRUWATCH_MQTT_PASSWORD"


class PublishError(GruwatchError):
    """The broker could not be reached, refused us, or a URL is unusable."""

    reason = "publish_failed"


def parse_broker_url(url: str) -> BrokerAddress:
    """edge_agent.broker_url.parse_broker_url, its ValueError as a PublishError."""
    try:
        return _parse_broker_url(url)
    except ValueError as exc:
        raise PublishError(str(exc)) from exc


@dataclass
class PublishStats:
    """Counts kept by the publisher (read them at any time; they only grow)."""

    published: int = 0  # payloads handed to paho
    acked: int = 0  # acknowledged by the broker (QoS 0: written to the socket)
    rejected: int = 0  # acknowledged with a failure reason code (MQTT 5 brokers only)
    bytes: int = 0  # payload bytes handed to paho
    connects: int = 0
    reconnects: int = 0  # successful connections after the first
    disconnects: int = 0  # unexpected connection losses
    lost_qos0: int = 0  # QoS 0 messages not yet written when the connection dropped (upper bound)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _no_delay(client: mqtt.Client) -> None:
    """Switch off Nagle's algorithm on our socket: with a small in-flight window a payload's last partial
    segment would otherwise wait for the broker's delayed TCP ACK. (paho leaves Nagle on.)"""
    setsockopt = getattr(client.socket(), "setsockopt", None)
    if setsockopt is not None:
        with contextlib.suppress(OSError):
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Publisher:
    """A paho client that publishes with bounded in-flight messages and reconnects by itself.

    The constructor only stores its arguments; `Publisher.connect(...)` (or `start()`) connects.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        qos: int = 1,
        max_inflight: int = 256,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        keepalive_s: int = 30,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        if qos not in (0, 1, 2):
            raise PublishError(f"qos={qos}: MQTT QoS is 0, 1 or 2")
        if max_inflight < 1:
            raise PublishError(f"max_inflight={max_inflight}: allow at least 1 message in flight")
        self.address = address
        self.qos = qos
        self.max_inflight = max_inflight
        self.client_id = client_id or f"gruwatch-sim-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.username = username
        self.password = password
        self.ca_file = ca_file
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.stats = PublishStats()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._wake_below = max_inflight - max(1, max_inflight // 4)
        self._connected = False
        self._closing = False
        self._refused: str | None = None
        self._client: mqtt.Client | None = None

    @classmethod
    def connect(cls, address: BrokerAddress, *, timeout_s: float = 10.0, **kwargs: Any) -> Publisher:
        """Make a publisher and wait up to `timeout_s` for the broker to accept it."""
        pub = cls(address, **kwargs)
        pub.start(timeout_s=timeout_s)
        return pub

    @classmethod
    def credentials_from_env(cls) -> tuple[str | None, str | None]:
        return os.environ.get(USERNAME_ENV) or None, os.environ.get(PASSWORD_ENV) or None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, *, timeout_s: float = 10.0) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(self.reconnect_min_s, self.reconnect_max_s)  # type: ignore[arg-type]
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.address.tls:
            client.tls_set(ca_certs=self.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive_s)
        client.loop_start()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._connected and self._refused is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            refused, connected = self._refused, self._connected
        if connected:
            return
        self._stop_client()
        if refused is not None:
            raise PublishError(
                f"broker {self.address.url} refused the connection: {refused}; check "
                f"{USERNAME_ENV} / {PASSWORD_ENV} and the broker's access rules"
            )
        raise PublishError(
            f"could not reach an MQTT broker at {self.address.url} within {timeout_s:g} s; is it running? "
            "(locally: ./scripts/ensure-broker.sh, or `mosquitto -d`)"
        )

    def close(self, *, flush_timeout_s: float = 10.0) -> bool:
        """Wait for in-flight messages (up to `flush_timeout_s`), then disconnect. True if all were acked."""
        if self._client is None:
            return True
        flushed = self.flush(timeout_s=flush_timeout_s)
        self._stop_client()
        return flushed

    def _stop_client(self) -> None:
        client = self._client
        if client is None:
            return
        with self._cond:
            self._closing = True
        client.disconnect()
        client.loop_stop()
        self._client = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- publishing ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def in_flight(self) -> int:
        return self._outstanding

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        stop: threading.Event | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> bool:
        """Publish one message; block while the in-flight window is full or the broker is away.

        `on_wait` is called about every 0.1 s while blocked (e.g. to refresh a progress line).
        Returns False (message not published) only when `stop` is set while waiting.
        """
        client = self._client
        if client is None:
            raise PublishError("publish() before start(); use Publisher.connect(...)")
        while True:
            with self._cond:
                while self._outstanding >= self.max_inflight or not self._connected:
                    if stop is not None and stop.is_set():
                        return False
                    if not self._cond.wait(0.1) and on_wait is not None:
                        self._cond.release()
                        try:
                            on_wait()
                        finally:
                            self._cond.acquire()
                self._outstanding += 1
            info = client.publish(topic, payload, qos=self.qos)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                self.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
            ):
                # QoS ≥ 1 messages published during a connection loss stay queued in paho and are sent
                # after the reconnect; their acknowledgement releases the slot.
                self.stats.published += 1
                self.stats.bytes += len(payload)
                return True
            with self._cond:
                self._outstanding -= 1
                self._cond.notify_all()
            if info.rc != MQTTErrorCode.MQTT_ERR_NO_CONN:
                raise PublishError(f"paho refused to publish on {topic}: {mqtt.error_string(info.rc)}")
            # QoS 0 and the connection dropped between our check and the call: wait and retry.

    def flush(self, *, timeout_s: float = 10.0) -> bool:
        """Wait until every published message is acknowledged (QoS 0: written). False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._outstanding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    # -- paho callbacks (network thread): only count and notify ----------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        with self._cond:
            if reason_code.is_failure:
                self._refused = str(reason_code)
            else:
                _no_delay(client)
                self._connected = True
                self.stats.connects += 1
                if self.stats.connects > 1:
                    self.stats.reconnects += 1
            self._cond.notify_all()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            if not self._closing and was_connected:
                self.stats.disconnects += 1
            if self.qos == 0 and self._outstanding:
                # QoS 0 packets still queued in paho are discarded with the connection: free their slots.
                self.stats.lost_qos0 += self._outstanding
                self._outstanding = 0
            self._cond.notify_all()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        with self._cond:
            self.stats.acked += 1
            if reason_code.is_failure:
                self.stats.rejected += 1
            if self._outstanding > 0:
                self._outstanding -= 1
            # Wake a blocked publish() only once a quarter of the window is free (or all of it, for
            # flush()): it then refills in a burst instead of trading the GIL with this thread per ack.
            if self._outstanding <= self._wake_below:
                self._cond.notify_all()
