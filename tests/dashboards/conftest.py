"""Fixtures for the live view's tests: headless Chromium (Debian's), a broker a test may cut, a dashboard.

Chromium and chromedriver come from the Debian packages (`make test` installs them through
scripts/ensure-chromium.sh; never a browser download). Where they are missing the browser tests skip
with the reason, except under CI=true, where they fail: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("GRUWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GRUWATCH_CHROMEDRIVER", "/usr/bin/chromedriver")


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (make test runs scripts/ensure-chromium.sh)")
    pytest.skip(f"{reason}; install them with: sudo apt-get install -y chromium chromium-driver")


@pytest.fixture
def chrome() -> Iterator[Any]:
    """A headless Chromium driven through chromedriver (Selenium), 1400 × 1000 CSS px."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        _missing(f"no {CHROMIUM} or {CHROMEDRIVER} (Debian packages chromium, chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (dev dependency group)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """A private mosquitto a test may stop and start again on the same port (a broker outage)."""

    def __init__(self, binary: str, conf: Path, port: int) -> None:
        self.binary, self.conf, self.port = binary, conf, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of this test's own (not the session's), so the test can cut it."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("no mosquitto binary; run ./scripts/ensure-broker.sh")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nset_tcp_nodelay true\nlog_type error\n"
    )
    broker = Mosquitto(binary, conf, port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
