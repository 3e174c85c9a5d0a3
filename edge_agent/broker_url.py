"""Broker URLs: `mqtt://host[:port]` (1883) and `mqtts://host[:port]` (TLS, 8883), parsed in one place.

Credentials never travel in the URL (they come from settings or GRUWATCH_MQTT_USERNAME /
GRUWATCH_MQTT_PASSWORD), so a URL that carries them is refused, as is anything beyond scheme, host
and port. A bare `host[:port]` means `mqtt://`.

>>> parse_broker_url("mqtts://broker.example")
BrokerAddress(host='broker.example', port=8883, tls=True)
>>> parse_broker_url("127.0.0.1:1884").url
'mqtt://127.0.0.1:1884'
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

EXAMPLE = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """The broker's host, port and TLS flag; ValueError saying what to write instead."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in {"mqtt", "mqtts"}:
        raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://, e.g. {EXAMPLE}")
    if parts.username or parts.password:
        raise ValueError(
            f"broker URL {url!r} must not carry credentials; set GRUWATCH_MQTT_USERNAME / "
            "GRUWATCH_MQTT_PASSWORD (or mqtt_username / mqtt_password in the settings file) instead"
        )
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host; e.g. {EXAMPLE}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r} takes only scheme, host and port; e.g. {EXAMPLE}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r} has a bad port (give a number in 1–65535)") from exc
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)
