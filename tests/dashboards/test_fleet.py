"""The fleet model on its own: decoded messages in, tiles / attention / feed / agents / detail out."""

from __future__ import annotations

import numpy as np
import pytest

from dashboards.fleet import FleetConfig, FleetModel, spectrum
from edge_agent.protocol import AgentStatus, Alert, Health, Window

T0 = 1_700_000_000  # sensor time, s


def _h(
    machine: str, seq: int, score: float, state: str = "ok", *, sensor: str = "s0", model: str = "v1", **extra
) -> Health:
    return Health(machine, sensor, seq, (T0 + seq) * 10**9, score, state, model, extra)


class Clock:
    def __init__(self) -> None:
        self.t = 5_000.0

    def __call__(self) -> float:
        return self.t


def _tiles(snap: dict) -> dict[str, list]:
    return {t[0]: t for t in snap["tiles"]}


def test_health_sets_tile_state_score_and_sparkline() -> None:
    clock = Clock()
    m = FleetModel(FleetConfig(sparkline=4), clock=clock)
    for seq, score in enumerate([0.1, 0.2, 0.3, 0.5, 0.9]):
        m.on_health(_h("press-1", seq, score, "alarm" if score > 0.8 else "ok"))
    tile = _tiles(m.snapshot())["press-1/s0"]
    assert tile[1] == "alarm"
    assert tile[2] == pytest.approx(0.9)
    assert tile[3] == [20, 30, 50, 90]  # the latest 4 scores, oldest first, in percent
    assert m.snapshot()["counts"] == {"ok": 0, "warning": 0, "alarm": 1, "stale": 0}


def test_silent_sensor_turns_stale_and_keeps_its_last_state() -> None:
    clock = Clock()
    m = FleetModel(FleetConfig(stale_after_s=30), clock=clock)
    m.on_health(_h("m1", 1, 0.7, "warning"))
    clock.t += 29
    assert _tiles(m.snapshot())["m1/s0"][1] == "warning"
    clock.t += 2
    tile = _tiles(m.snapshot())["m1/s0"]
    assert tile[1] == "stale"
    assert tile[4] == "warning"
    stale = [a for a in m.snapshot()["attention"] if a["key"] == "m1/s0"]
    assert stale[0]["state"] == "stale"
    assert stale[0]["for_s"] == pytest.approx(31)


def test_history_is_capped_per_sensor_and_sensors_are_bounded() -> None:
    m = FleetModel(FleetConfig(history=50, max_sensors=3), clock=Clock())
    for seq in range(500):
        m.on_health(_h("m1", seq, (seq % 100) / 100))
    d = m.detail("m1/s0")
    assert d is not None
    assert len(d["t"]) == 50
    assert d["t"][0] == pytest.approx(T0 + 450)
    assert d["t"][-1] == pytest.approx(T0 + 499)
    for i in range(10):
        m.on_health(_h(f"m{i + 2}", 1, 0.1))
    assert len(m.snapshot()["tiles"]) == 3
    assert m.counters["refused_sensors"] == 8


def test_late_and_redelivered_windows_do_not_rewrite_history() -> None:
    m = FleetModel(clock=Clock())
    m.on_health(_h("m1", 5, 0.5))
    m.on_health(_h("m1", 5, 0.5))  # QoS 1 redelivery
    m.on_health(_h("m1", 3, 0.9, "alarm"))  # older window, arrives late
    d = m.detail("m1/s0")
    assert d is not None
    assert len(d["t"]) == 1
    assert d["state"] == "ok"
    assert m.counters["late"] == 2


def test_state_changes_are_recorded_with_the_alert_reason() -> None:
    m = FleetModel(clock=Clock())
    m.on_health(_h("m1", 1, 0.2))
    m.on_health(_h("m1", 2, 0.7, "warning"))
    m.on_health(_h("m1", 3, 0.9, "alarm"))
    m.on_alert(
        Alert("m1", "s0", 3, (T0 + 3) * 10**9, "alarm", "warning", 0.9, "v1", "score 0.90 >= alarm 0.80")
    )
    d = m.detail("m1/s0")
    assert d is not None
    assert [(c[1], c[2]) for c in d["changes"]] == [("ok", "warning"), ("warning", "alarm")]
    assert d["changes"][-1][4] == "score 0.90 >= alarm 0.80"
    assert d["since"] == pytest.approx(T0 + 3)


def test_retained_alert_gives_state_to_a_sensor_not_heard_from_yet() -> None:
    m = FleetModel(clock=Clock())
    m.on_alert(Alert("m9", "s1", 40, (T0 + 40) * 10**9, "alarm", "ok", 0.95, "v2", "r"))
    assert _tiles(m.snapshot())["m9/s1"][1] == "alarm"
    # an older retained alert arriving afterwards changes nothing but the feed
    m.on_alert(Alert("m9", "s1", 10, (T0 + 10) * 10**9, "warning", "ok", 0.6, "v2", "r"))
    snap = m.snapshot()
    assert _tiles(snap)["m9/s1"][1] == "alarm"
    assert [e["state"] for e in snap["feed"]] == ["alarm", "warning"]  # newest first


def test_feed_is_bounded_and_deduplicated() -> None:
    m = FleetModel(FleetConfig(feed_len=5), clock=Clock())
    a = Alert("m1", "s0", 1, T0 * 10**9, "alarm", "ok", 0.9, "v1", "r")
    m.on_alert(a)
    m.on_alert(a)  # the same retained alert after a reconnect
    assert len(m.snapshot()["feed"]) == 1
    for i in range(20):
        m.on_alert(Alert("m1", "s0", 2 + i, (T0 + 2 + i) * 10**9, "ok", "alarm", 0.1, "v1", "r"))
    feed = m.snapshot()["feed"]
    assert len(feed) == 5
    assert feed[0]["ts"] == pytest.approx(T0 + 21)


def test_attention_orders_alarm_then_warning_by_when_then_stale() -> None:
    clock = Clock()
    m = FleetModel(FleetConfig(stale_after_s=30, trend_points=20), thresholds=(0.5, 0.8), clock=clock)
    m.on_health(_h("silent", 1, 0.1))
    clock.t += 60
    m.on_health(_h("alarmed", 1, 0.95, "alarm"))
    # two warnings: a steep and a slow rising trend; the steep one reaches alarm sooner
    for seq in range(20):
        m.on_health(_h("slow", seq, 0.55 + 0.001 * seq, "warning"))
        m.on_health(_h("fast", seq, 0.55 + 0.01 * seq, "warning"))
    m.on_health(_h("rul", 1, 0.6, "warning", rul_s=5.0))  # the model says: 5 s left
    m.on_health(_h("flat", 1, 0.6, "warning"))  # one point: no trend
    rows = m.snapshot()["attention"]
    assert [r["key"] for r in rows] == ["alarmed/s0", "rul/s0", "fast/s0", "slow/s0", "flat/s0", "silent/s0"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["fast/s0"]["eta_s"] == pytest.approx((0.8 - 0.74) / 0.01, rel=1e-3)
    assert by_key["slow/s0"]["eta_s"] == pytest.approx((0.8 - 0.569) / 0.001, rel=1e-3)
    assert by_key["rul/s0"]["basis"] == "remaining life (model)"
    assert by_key["flat/s0"]["eta_s"] is None
    assert "ok" not in {r["state"] for r in rows}


def test_thresholds_come_from_the_agent_status_of_the_model_else_the_default() -> None:
    m = FleetModel(thresholds=(0.3, 0.9), clock=Clock())
    m.on_health(_h("m1", 1, 0.2, model="v1"))
    m.on_health(_h("m2", 1, 0.2, model="v2"))
    m.on_status("edge-1", AgentStatus("online", "v2", warning=0.6, alarm=0.8))
    assert m.detail("m1/s0")["thresholds"] == (0.3, 0.9)  # type: ignore[index]
    assert m.detail("m2/s0")["thresholds"] == (0.6, 0.8)  # type: ignore[index]


def test_agents_online_offline_since_last_change() -> None:
    clock = Clock()
    m = FleetModel(clock=clock)
    m.on_status("edge-1", AgentStatus("online", "v1"))
    clock.t += 10
    m.on_status("edge-1", AgentStatus("online", "v2"))  # a model swap, still online
    clock.t += 10
    m.on_status("edge-2", AgentStatus("offline", "v1"))  # last will
    m.on_status("edge-3", AgentStatus("online", "v1", storage="degraded"))
    agents = {a["agent"]: a for a in m.snapshot()["agents"]}
    assert agents["edge-1"]["state"] == "online"
    assert agents["edge-1"]["model"] == "v2"
    assert agents["edge-1"]["since"] == pytest.approx(5_000.0)
    assert agents["edge-2"]["state"] == "offline"
    assert agents["edge-3"]["storage"] == "degraded"
    assert agents["edge-1"]["storage"] is None


def test_rates_count_messages_per_second_over_the_window() -> None:
    clock = Clock()
    m = FleetModel(FleetConfig(rate_window_s=10), clock=clock)
    for i in range(100):  # 10 messages a second for 10 s
        clock.t = 5_000.0 + i / 10
        m.on_health(_h("m1", i, 0.1))
    clock.t = 5_010.0
    assert m.snapshot()["rates"]["health_per_s"] == pytest.approx(10.0)
    clock.t = 5_030.0
    assert m.snapshot()["rates"]["health_per_s"] == 0.0


def test_vibration_windows_kept_only_for_watched_sensors_until_the_lease_expires() -> None:
    clock = Clock()
    m = FleetModel(FleetConfig(watch_lease_s=10, max_watched=2), clock=clock)
    m.on_health(_h("m1", 1, 0.1))
    x = np.sin(2 * np.pi * 1000 * np.arange(2560) / 25600).astype(np.float32)
    w = Window(1, T0 * 10**9, 25600.0, 1800.0, x)
    m.on_window("m1", "s0", w)
    assert m.detail("m1/s0")["spectrum"] is None  # type: ignore[index]  # nobody watching: dropped
    assert m.watch("m1/s0") is True
    assert m.watch("m1/s0") is False
    m.on_window("m1", "s0", w)
    sp = m.detail("m1/s0")["spectrum"]  # type: ignore[index]
    assert sp is not None
    assert sp["freq_hz"][int(np.argmax(sp["amp_g"]))] == pytest.approx(1000.0)
    assert float(sp["amp_g"].max()) == pytest.approx(1.0, rel=0.02)  # amplitude in g
    clock.t += 11
    assert m.expire_watches() == ["m1/s0"]
    assert m.detail("m1/s0")["spectrum"] is None  # type: ignore[index]
    m.watch("a/s")
    m.watch("b/s")
    m.watch("c/s")  # at most two: the oldest lease goes
    assert sorted(m.watched()) == ["b/s", "c/s"]


def test_spectrum_of_a_long_window_keeps_its_peak() -> None:
    n = 65536
    x = 0.5 * np.sin(2 * np.pi * 3000.0 * np.arange(n) / 51200).astype(np.float32)
    sp = spectrum(Window(1, 0, 51200.0, 0.0, x), max_bins=1024)
    assert len(sp["freq_hz"]) <= 1024
    assert sp["freq_hz"][int(np.argmax(sp["amp_g"]))] == pytest.approx(3000.0, abs=1.0)
    assert float(sp["amp_g"].max()) == pytest.approx(0.5, rel=0.02)


def test_rejections_are_counted_by_reason() -> None:
    m = FleetModel(clock=Clock())
    m.on_rejected("bad_json")
    m.on_rejected("bad_json")
    m.on_rejected("bad_topic")
    assert m.snapshot()["counters"] == {"rejected_bad_json": 2, "rejected_bad_topic": 1}


def test_memory_per_sensor_is_small_and_fixed() -> None:
    m = FleetModel(FleetConfig(history=1200), clock=Clock())
    m.on_health(_h("m1", 0, 0.1))
    ring = m._sensors["m1/s0"].ring
    before = ring.t.nbytes + ring.score.nbytes + ring.state.nbytes
    for seq in range(1, 5000):
        m.on_health(_h("m1", seq, 0.1))
    assert ring.t.nbytes + ring.score.nbytes + ring.state.nbytes == before == 1200 * 13


def test_a_snapshot_since_an_earlier_one_holds_only_changed_and_newly_stale_tiles() -> None:
    clock = Clock()
    m = FleetModel(FleetConfig(stale_after_s=30), clock=clock)
    for name in ("m1", "m2", "m3"):
        m.on_health(_h(name, 1, 0.1))
    first = m.snapshot()
    assert first["full"]
    assert len(first["tiles"]) == 3
    since = (first["epoch"], first["version"], first["now"])
    assert m.snapshot(since=since)["tiles"] == []  # nothing new
    clock.t += 5
    m.on_health(_h("m2", 2, 0.9, "alarm"))
    delta = m.snapshot(since=since)
    assert not delta["full"]
    assert [t[:2] for t in delta["tiles"]] == [["m2/s0", "alarm"]]
    assert delta["counts"] == {"ok": 2, "warning": 0, "alarm": 1, "stale": 0}  # counts cover every sensor
    since = (delta["epoch"], delta["version"], delta["now"])
    clock.t += 27  # m1 and m3 silent for 32 s: stale; m2 for 27 s: not yet
    stale = m.snapshot(since=since)
    assert sorted(t[0] for t in stale["tiles"]) == ["m1/s0", "m3/s0"]
    assert {t[1] for t in stale["tiles"]} == {"stale"}
    since = (stale["epoch"], stale["version"], stale["now"])
    assert m.snapshot(since=since)["tiles"] == []  # still stale: said once
    # a page that polled another model (a restarted dashboard) gets everything again
    again = m.snapshot(since=("another", 1, since[2]))
    assert again["full"]
    assert len(again["tiles"]) == 3


def test_message_rates_per_agent_from_the_agent_field_and_health_batches() -> None:
    clock = Clock()
    m = FleetModel(FleetConfig(rate_window_s=10), clock=clock)
    m.on_status("edge-1", AgentStatus("online", "v1", 0.5, 0.8))
    for i in range(100):  # edge-1: 10 health messages a second, each naming it
        clock.t = 5_000.0 + i / 10
        m.on_health(_h("m1", i, 0.1, agent="edge-1"))
        if i % 10 == 0:  # edge-2 (health_batch): one batch of 4 sensors a second
            m.on_healths([_h(f"b{k}", i, 0.2) for k in range(4)], agent="edge-2")
    m.on_health(_h("m9", 1, 0.1))  # names no agent: counted fleet-wide only
    clock.t = 5_010.0
    snap = m.snapshot()
    agents = {a["agent"]: a for a in snap["agents"]}
    assert agents["edge-1"]["health_per_s"] == pytest.approx(10.0)
    assert agents["edge-1"]["state"] == "online"
    assert agents["edge-2"]["health_per_s"] == pytest.approx(4.0)
    assert agents["edge-2"]["state"] == "unannounced"  # heard from, but no retained status yet
    assert agents["edge-2"]["heard"] == pytest.approx(5_009.0)
    assert snap["rates"]["health_per_s"] == pytest.approx(14.1)
    assert len(snap["tiles"]) == 6
    clock.t = 5_030.0
    assert {a["agent"]: a["health_per_s"] for a in m.snapshot()["agents"]} == {"edge-1": 0.0, "edge-2": 0.0}
