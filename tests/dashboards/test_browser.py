"""The live view in a real headless Chromium, against a real Mosquitto: what a reliability engineer sees."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from dashboards.app import DashboardHandle, serve
from dashboards.fleet import FleetConfig
from edge_agent.protocol import (
    AgentStatus,
    Health,
    Window,
    agent_status_topic,
    encode_binary,
    encode_health,
    encode_status,
    health_topic,
    vibration_topic,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
T0 = 1_764_000_000


def _publisher(url: str) -> mqtt.Client:
    host, _, port = url.removeprefix("mqtt://").partition(":")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    c.connect(host, int(port))
    c.loop_start()
    return c


def _health(machine: str, seq: int, score: float, state: str) -> Health:
    return Health(machine, "s0", seq, (T0 + seq) * 10**9, score, state, "v-test", {})  # type: ignore[arg-type]


def _send(pub: mqtt.Client, prefix: str, h: Health) -> None:
    pub.publish(health_topic(prefix, h.machine, h.sensor), encode_health(h), qos=1).wait_for_publish(5)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def _tile_state(driver: Any, key: str) -> str | None:
    return driver.execute_script(
        "var t = document.querySelector(`.tile[data-key='${arguments[0]}']`); return t && t.dataset.state;",
        key,
    )


@pytest.fixture
def dashboard(broker: Any, topic_prefix: str) -> Iterator[DashboardHandle]:
    handle = serve(
        broker.url, topic_prefix, port=0, config=FleetConfig(watch_lease_s=2.0), thresholds=(0.5, 0.8)
    )
    try:
        assert handle.feed.wait_subscribed(15), "the dashboard did not subscribe"  # before any publish
        yield handle
    finally:
        handle.stop()


def test_alarm_turns_the_tile_red_within_two_seconds(
    chrome: Any, dashboard: DashboardHandle, topic_prefix: str
) -> None:
    pub = _publisher(dashboard.feed.address.url)
    try:
        for m in ("press-1", "press-2"):
            _send(pub, topic_prefix, _health(m, 1, 0.2, "ok"))
        chrome.get(dashboard.url)
        _wait(lambda: _tile_state(chrome, "press-1/s0") == "ok", 15, "the ok tile shows")
        # The clock starts once the page is loaded and polling (a second drawn answer after the
        # tile first showed) and the feed is subscribed (it delivered that tile): not at start-up.
        drawn = "return window.gwRender ? window.gwRender.at : null;"
        first = chrome.execute_script(drawn)
        _wait(lambda: chrome.execute_script(drawn) != first, 10, "the page polls on")
        assert dashboard.feed.wait_subscribed(0)
        _send(pub, topic_prefix, _health("press-1", 2, 0.93, "alarm"))
        sent = time.monotonic()
        _wait(lambda: _tile_state(chrome, "press-1/s0") == "alarm", 2.0, "the tile turns to alarm")
        print(f"alarm tile after {time.monotonic() - sent:.2f} s")
        assert _tile_state(chrome, "press-2/s0") == "ok"
        cls = "return document.querySelector(\".tile[data-key='press-1/s0']\").className;"
        assert "s-alarm" in chrome.execute_script(cls)  # read in one go: the grid is redrawn each tick
        assert (
            chrome.execute_script("return document.getElementById('count-alarm').textContent;") == "1 alarm"
        )
        attention = chrome.find_element("id", "attention").text
        assert "press-1/s0" in attention
        assert "now" in attention
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_filter_by_state_and_name(chrome: Any, dashboard: DashboardHandle, topic_prefix: str) -> None:
    pub = _publisher(dashboard.feed.address.url)
    try:
        _send(pub, topic_prefix, _health("mill-1", 1, 0.2, "ok"))
        _send(pub, topic_prefix, _health("mill-2", 1, 0.9, "alarm"))
        _send(pub, topic_prefix, _health("pump-1", 1, 0.6, "warning"))
        chrome.get(dashboard.url)
        tiles = lambda: chrome.execute_script(  # noqa: E731  (the grid is redrawn each tick: read it in one go)
            "return Array.from(document.querySelectorAll('.tile')).map(t => t.dataset.key);"
        )
        _wait(lambda: len(tiles()) == 3, 15, "three tiles")
        assert tiles()[0] == "mill-2/s0"  # worst first
        chrome.find_element("id", "filter-text").send_keys("mill")
        _wait(lambda: sorted(tiles()) == ["mill-1/s0", "mill-2/s0"], 5, "the name filter")
        ok_box = chrome.find_element("css selector", "#filter-state input[value='ok']")
        ok_box.click()
        _wait(lambda: tiles() == ["mill-2/s0"], 5, "the state filter")
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_open_a_sensor_shows_its_history_and_spectrum(
    chrome: Any, dashboard: DashboardHandle, topic_prefix: str
) -> None:
    pub = _publisher(dashboard.feed.address.url)
    try:
        for seq in range(30):
            state = "alarm" if seq >= 25 else "warning" if seq >= 15 else "ok"
            _send(pub, topic_prefix, _health("press-7", seq, 0.1 + seq * 0.03, state))
        pub.publish(
            agent_status_topic(topic_prefix, "edge-a"),
            encode_status(AgentStatus("online", "v-test")),
            qos=1,
            retain=True,
        ).wait_for_publish(5)
        chrome.get(dashboard.url)
        _wait(lambda: _tile_state(chrome, "press-7/s0") == "alarm", 15, "the tile")
        chrome.execute_script("document.querySelector(\".tile[data-key='press-7/s0']\").click();")
        _wait(
            lambda: (
                chrome.find_element("id", "detail").is_displayed()
                and "press-7/s0" in chrome.find_element("id", "detail-title").text
            ),
            5,
            "the detail view opens",
        )
        # the history line is drawn with one point per window, and both threshold lines
        _wait(
            lambda: (
                chrome.execute_script(
                    "var g = document.querySelector('#history-graph .js-plotly-plot');"
                    "return g && g.data && g.data[0].y.length;"
                )
                == 30
            ),
            5,
            "the history plot holds 30 scores",
        )
        assert chrome.find_elements("css selector", "#history-graph .scatterlayer .trace path.js-line")
        shapes = chrome.execute_script(
            "return document.querySelector('#history-graph .js-plotly-plot').layout.shapes;"
        )
        assert sorted(round(s["y0"], 2) for s in shapes) == [0.5, 0.8]
        changes = chrome.execute_script(
            "return document.querySelector('#history-graph .js-plotly-plot').data[1].text;"
        )
        assert changes == ["ok → warning", "warning → alarm"]
        # the vibration topic is subscribed while the view is open: a window shows as a spectrum
        topic = vibration_topic(topic_prefix, "press-7", "s0")
        _wait(lambda: topic in dashboard.feed.vibration_subscriptions(), 5, "the vibration subscription")
        x = np.sin(2 * np.pi * 2000.0 * np.arange(2560) / 25600.0).astype(np.float32)
        _wait_spectrum = lambda: chrome.execute_script(  # noqa: E731
            "var g = document.querySelector('#spectrum-graph .js-plotly-plot');"
            "return g && g.data && g.data.length && g.data[0].x.length;"
        )
        deadline = time.monotonic() + 10
        while not _wait_spectrum() and time.monotonic() < deadline:  # subscription may still be on its way
            pub.publish(topic, encode_binary(Window(1, T0 * 10**9, 25600.0, 1800.0, x)), qos=0)
            time.sleep(0.3)
        assert _wait_spectrum() == 1281
        peak = chrome.execute_script(
            "var d = document.querySelector('#spectrum-graph .js-plotly-plot').data[0];"
            "return d.x[d.y.indexOf(Math.max.apply(null, d.y))];"
        )
        assert peak == pytest.approx(2000.0)
        assert "edge-a" in chrome.find_element("id", "agents").text
        # closing the view ends the subscription once its lease (2 s here) runs out
        chrome.find_element("id", "detail-close").click()
        _wait(lambda: not chrome.find_element("id", "detail").is_displayed(), 5, "the detail view closes")
        _wait(lambda: topic not in dashboard.feed.vibration_subscriptions(), 8, "the unsubscription")
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_broker_outage_shows_a_banner_and_recovers(chrome: Any, own_broker: Any, topic_prefix: str) -> None:
    handle = serve(own_broker.url, topic_prefix, port=0)
    try:
        assert handle.feed.wait_subscribed(15), "the dashboard did not subscribe"  # else the message is lost
        pub = _publisher(own_broker.url)
        _send(pub, topic_prefix, _health("kiln-1", 1, 0.2, "ok"))
        pub.loop_stop()
        pub.disconnect()
        chrome.get(handle.url)
        _wait(lambda: _tile_state(chrome, "kiln-1/s0") == "ok", 15, "the tile")
        banner = chrome.find_element("id", "banner")
        assert not banner.is_displayed()
        own_broker.stop()
        _wait(lambda: banner.is_displayed(), 10, "the outage banner")
        assert "unreachable" in banner.text
        assert own_broker.url in banner.text
        assert _tile_state(chrome, "kiln-1/s0") == "ok"  # the last known state stays on the page
        own_broker.start()
        _wait(lambda: not banner.is_displayed(), 20, "the banner goes once the broker is back")
        assert handle.feed.wait_subscribed(10), "subscribed again after the outage"
    finally:
        handle.stop()


def test_everything_the_page_loads_comes_from_the_app(chrome: Any, dashboard: DashboardHandle) -> None:
    chrome.get(dashboard.url)
    _wait(
        lambda: (
            chrome.find_elements("css selector", "#fleet-summary")
            and "showing" in chrome.find_element("id", "fleet-summary").text
        ),
        15,
        "the page runs",
    )
    resources = chrome.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert resources, "the page loaded no scripts at all?"
    origin = dashboard.url.rstrip("/")
    foreign = [r for r in resources if not r.startswith(origin)]
    assert foreign == []
    with urllib.request.urlopen(dashboard.url, timeout=10) as r:
        page = r.read().decode()
    assert "cdn" not in page.lower()
    assert "https://" not in page
