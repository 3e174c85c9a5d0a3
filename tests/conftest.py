"""Shared fixtures: a private Mosquitto broker for the test session, unique topic prefixes, real data paths.

The broker is a real `mosquitto` process on a free port with a config written here, so tests never
collide with the system broker on 1883 and the queue limits are deliberate (Mosquitto's defaults drop
QoS 1 messages to a slow subscriber; see docs/operations.md). Where no mosquitto binary exists, the
tests use the broker named by GRUWATCH_TEST_BROKER (default mqtt://127.0.0.1:1883) with unique prefixes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto for this test session (private port, unlimited queues, no persistence)."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        url = os.environ.get("GRUWATCH_TEST_BROKER", "mqtt://127.0.0.1:1883")
        host, _, port = url.removeprefix("mqtt://").partition(":")
        if not _wait_listening(int(port or 1883), timeout=2.0):
            pytest.fail(f"no mosquitto binary and no broker at {url}; run ./scripts/ensure-broker.sh")
        yield Broker(host, int(port or 1883))
        return
    port = _free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 0\n"
        "max_queued_bytes 0\n"
        "max_inflight_messages 0\n"
        "set_tcp_nodelay true\n"
        "log_type error\n"
    )
    # stderr to a file, not a pipe: nobody reads a pipe during the session, and a full one (64 KB of
    # log lines, e.g. hundreds of session take-overs) would stall the broker.
    log_path = conf.with_name("mosquitto.log")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        if not _wait_listening(port):
            proc.kill()
            proc.wait(timeout=5)
            err = log_path.read_text(errors="replace")
            pytest.fail(f"private mosquitto did not start on {port}: {err}")
        yield Broker("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test (or the demo) uses."""
    return f"gwtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data (or GRUWATCH_REAL_DATA); skips with the reason when absent."""
    path = Path(os.environ.get("GRUWATCH_REAL_DATA", REPO.parent / "shared" / "data"))
    if not (path / "femto").is_dir() and not (path / "cwru").is_dir():
        pytest.skip(
            f"real bearing data not found at {path}; set GRUWATCH_REAL_DATA to the shared data folder"
        )
    return path
