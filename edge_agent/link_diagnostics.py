"""Why the broker cannot be reached, said in the log: refused TCP, unknown host, timeouts, TLS failures.

paho retries a failed connect by itself and tells only that it failed (`on_connect_fail`, called
while the exception is being handled). `ConnectFailures` reads that exception and logs it with a
hint of what to check: the first failure at once, then one line per `every_s` seconds with the
number of failures, so an agent that never reaches its broker says so instead of `agent_started`
alone. It also becomes the link's `last_error` (LinkStats).
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from edge_agent.mqtt_link import MqttLink

log = structlog.get_logger("edge_agent.mqtt")

EVERY_S: Final = 60.0


def hint(exc: BaseException | None, broker: str) -> str:
    """What to check for this connect failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the broker's certificate is not trusted or not for this host name: check mqtt_ca_file and the URL's host"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed: is this a TLS port (mqtts://)? check mqtt_ca_file, mqtt_cert_file, mqtt_key_file"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens at {broker}: is the broker running, is the port right?"
    if isinstance(exc, socket.gaierror):
        return "the broker's host name does not resolve: check the broker URL and DNS"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer: a firewall, a wrong address, or the broker is overloaded"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError):
        if broker.startswith("mqtts://"):
            return "reset during the TLS handshake: is this port TLS? (a plain MQTT port wants mqtt://)"
        return (
            "the connection was reset: is this a TLS port (then mqtts://)? or the broker refused this client"
        )
    return "check the broker URL, the network and the broker's log"


class ConnectFailures:
    """paho's `on_connect_fail` callback for `link`: logs and remembers why connecting failed."""

    def __init__(self, link: MqttLink, every_s: float = EVERY_S) -> None:
        self.link = link
        self.every_s = every_s
        self.count = 0
        self._next_log = 0.0

    def __call__(self, client: Any, userdata: Any) -> None:
        exc = sys.exc_info()[1]  # paho calls us inside its `except OSError:`
        self.count += 1
        error = f"connect failed: {type(exc).__name__}: {exc}" if exc is not None else "connect failed"
        with self.link._lock:
            self.link._last_error = error
        now = time.monotonic()
        if now < self._next_log:
            return
        self._next_log = now + self.every_s
        broker = self.link.settings.broker
        log.error(
            "mqtt_connect_failed",
            broker=broker,
            error=error[:300],
            failures=self.count,
            hint=hint(exc, broker),
            action="retrying with backoff",
        )
