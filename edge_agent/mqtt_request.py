"""A one-shot MQTT request/reply (the deployer's side of `gruwatch agent deploy`).

Connect, subscribe to a reply topic, publish, wait for the first acceptable answer, disconnect.
The paho client itself is made in `edge_agent.mqtt_link` (the one module that imports paho).
"""

from __future__ import annotations

import contextlib
import queue
import ssl
import threading
import time
from collections.abc import Callable

from edge_agent.broker_url import parse_broker_url
from edge_agent.errors import RequestError
from edge_agent.mqtt_link import one_shot_client

__all__ = ["RequestError", "request_reply"]


def request_reply(
    broker: str,
    topic: str,
    payload: bytes,
    reply_topic: str,
    *,
    timeout_s: float = 30.0,
    accept: Callable[[bytes], bool] = lambda b: True,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    client_prefix: str = "gruwatch-request",
) -> bytes:
    """Publish `payload` to `topic` (QoS 1) and return the first accepted message on `reply_topic`.

    Subscribes to `reply_topic` before publishing, so the answer cannot be missed; messages for
    which `accept(payload)` is False are skipped. One short-lived MQTT 3.1.1 client (mqtt:// or
    mqtts:// URL). Raises RequestError (with `.stage`) when the broker cannot be reached, refuses
    the subscription, does not acknowledge the publish, or no accepted answer comes within
    `timeout_s` seconds (overall).
    """
    try:
        address = parse_broker_url(broker)
    except ValueError as exc:
        raise RequestError("connect", str(exc)) from exc
    tls, port = address.tls, address.port
    answers: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    client = one_shot_client(client_prefix, reply_topic, accept, answers, subscribed)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file, cert_reqs=ssl.CERT_REQUIRED)
    try:
        client.connect(address.host, port, 30)
    except OSError as exc:
        raise RequestError("connect", f"cannot reach the broker at {broker}: {exc}") from exc
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout_s
        if not subscribed.wait(timeout_s):
            raise RequestError(
                "subscribe", f"the broker at {broker} did not accept our subscription to {reply_topic}"
            )
        info = client.publish(topic, payload, qos=1)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        if not info.is_published():
            raise RequestError(
                "publish", f"the broker did not acknowledge the message on {topic} within {timeout_s} s"
            )
        try:
            return answers.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RequestError("answer", f"no answer on {reply_topic} within {timeout_s} s") from None
    finally:
        client.disconnect()
        client.loop_stop()
