"""The live view's fleet model: decoded health, alert and agent-status messages in, what the page shows out.

Plain Python and numpy: no MQTT and no web code, so it is tested on its own (tests/dashboards/test_fleet.py).
`dashboards.feed` calls the `on_*` methods from the MQTT network thread; `dashboards.app` calls
`snapshot()` and `detail()` from the web server's threads; one lock guards everything.

Memory is bounded whatever the broker sends: at most `max_sensors` sensors (more are counted as
refused, never stored), `history` scores per sensor in a fixed numpy ring, `changes` state changes per
sensor, `feed_len` alerts, `max_agents` agents, and the latest vibration window of at most
`max_watched` sensors (only those whose detail view is open).

Two clocks: history, state changes and the "by when" estimates use the sensor's own timestamps (what
happened when); staleness and message rates use this process's wall clock (when we last heard).

Deltas: every change to a sensor stamps it with the model's version counter, so `snapshot(since=...)`
sends only the tiles that changed since the page's previous snapshot (and those that turned stale
meanwhile): a fleet reporting once a minute costs the page a few tiles a second, not all of them.
Message rates are kept per agent too, from the agent named by a health batch's envelope or by a
health message's `agent` field (the agent adds it; see docs/protocol.md).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.protocol import STATES, AgentStatus, Alert, Health, Window
from edge_agent.spectra import hann_window, power_spectrum

LEVELS = {state: i for i, state in enumerate(STATES)}  # ok 0, warning 1, alarm 2
STALE = "stale"
#: Order of the "needs attention" list and of the default tile sort: worst first.
URGENCY = {"alarm": 0, "warning": 1, STALE: 2, "ok": 3}
#: Trend projections beyond this are not worth a "by when" (and are mostly noise).
MAX_PROJECTION_S = 30 * 86_400.0


@dataclass(frozen=True)
class FleetConfig:
    """Limits and timings of the fleet model (all bounded; defaults suit 1,000 sensors at 1 Hz)."""

    stale_after_s: float = 30.0  # no message for this long (wall clock): the tile turns stale
    history: int = 1200  # scores kept per sensor (20 min at one window a second)
    sparkline: int = 40  # latest scores drawn in a tile
    changes: int = 50  # state changes kept per sensor
    max_sensors: int = 5000
    feed_len: int = 200  # alerts kept in the alarm feed
    max_agents: int = 1000
    max_watched: int = 8  # sensors whose latest vibration window is kept (open detail views)
    watch_lease_s: float = 10.0  # a detail view that stops asking for this long is closed
    trend_points: int = 60  # scores in the trend fit behind "alarm in ~…"
    rate_window_s: int = 10  # message rates are averaged over this many seconds


class _Ring:
    """Fixed-capacity history of (sensor time s, score, level) in numpy arrays: ~13 bytes a point."""

    __slots__ = ("n", "score", "start", "state", "t")

    def __init__(self, capacity: int) -> None:
        self.t = np.zeros(capacity, np.float64)
        self.score = np.zeros(capacity, np.float32)
        self.state = np.zeros(capacity, np.int8)
        self.start = 0
        self.n = 0

    def append(self, t: float, score: float, level: int) -> None:
        cap = len(self.t)
        i = (self.start + self.n) % cap
        self.t[i], self.score[i], self.state[i] = t, score, level
        if self.n < cap:
            self.n += 1
        else:
            self.start = (self.start + 1) % cap

    def last(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The latest `k` points (all when None), oldest first, as copies."""
        k = self.n if k is None else min(k, self.n)
        idx = (self.start + self.n - k + np.arange(k)) % len(self.t)
        return self.t[idx], self.score[idx], self.state[idx]


class _Rate:
    """Events per second over the last `window` whole seconds (wall clock), in one-second buckets."""

    __slots__ = ("buckets", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.buckets: deque[list[int]] = deque(maxlen=window + 1)  # [second, count]

    def add(self, now: float) -> None:
        sec = int(now)
        if self.buckets and self.buckets[-1][0] == sec:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([sec, 1])

    def per_s(self, now: float) -> float:
        sec = int(now)
        total = sum(c for s, c in self.buckets if sec - self.window <= s < sec)
        return total / self.window


class _Sensor:
    __slots__ = (
        "changes",
        "eta",
        "extra",
        "key",
        "level",
        "machine",
        "model",
        "ring",
        "score",
        "seen",
        "sensor",
        "seq",
        "since_s",
        "spark",
        "ts_s",
        "ver",
    )

    def __init__(self, machine: str, sensor: str, history: int, changes: int, spark: int) -> None:
        self.machine, self.sensor = machine, sensor
        self.spark: deque[int] = deque(maxlen=spark)  # latest scores in percent, for the tile's sparkline
        self.key = f"{machine}/{sensor}"
        self.level = 0
        self.score = 0.0
        self.model = ""
        self.seq = -1
        self.ts_s = -math.inf  # sensor time of the latest message
        self.since_s = -math.inf  # sensor time the current state began
        self.seen = 0.0  # wall time of the latest message
        self.extra: dict[str, Any] = {}
        self.ring = _Ring(history)
        self.changes: deque[tuple[float, str, str, float, str]] = deque(maxlen=changes)
        self.ver = 0  # the model's version counter at this sensor's latest change
        self.eta: tuple[Any, ...] = ()  # (seq, limit, eta_s): the trend fit, redone only on a new window


#: An agent heard from only through health messages, before (or without) its retained status.
UNANNOUNCED = "unannounced"


@dataclass
class _Agent:
    state: str  # online / offline (its status), or UNANNOUNCED
    model: str
    since: float  # wall time of the latest state change
    seen: float  # wall time of the latest status message (0: none yet)
    storage: str | None = None  # "degraded" while the agent says its store is in trouble
    rate: _Rate | None = None  # its health messages per second
    heard: float = 0.0  # wall time of its latest health message


class FleetModel:
    """Messages → the fleet's state. Thread-safe; every container bounded (see the module docstring)."""

    def __init__(
        self,
        config: FleetConfig | None = None,
        *,
        thresholds: tuple[float, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or FleetConfig()
        self.default_thresholds = thresholds  # (warning, alarm), e.g. from a bundle's card
        self.clock = clock
        self._lock = threading.Lock()
        self._sensors: dict[str, _Sensor] = {}
        self._agents: dict[str, _Agent] = {}
        self._thresholds: dict[str, tuple[float, float]] = {}  # by model version, from agent status
        self._feed: deque[dict[str, Any]] = deque(maxlen=self.config.feed_len)
        self._windows: dict[str, Window] = {}
        self._leases: dict[str, float] = {}
        self._health_rate = _Rate(self.config.rate_window_s)
        self._alert_rate = _Rate(self.config.rate_window_s)
        self._version = 0  # bumped by every change a tile shows
        self.epoch = f"{os.getpid()}-{time.time_ns()}"  # a page's `since` from another model: full snapshot
        self.counters: Counter[str] = Counter()  # rejected_<reason>, refused_sensors, late, ...

    # ------------------------------------------------------------------------------------ messages in
    def _sensor(self, machine: str, sensor: str) -> _Sensor | None:
        key = f"{machine}/{sensor}"
        s = self._sensors.get(key)
        if s is None:
            if len(self._sensors) >= self.config.max_sensors:
                self.counters["refused_sensors"] += 1
                return None
            s = self._sensors[key] = _Sensor(
                machine, sensor, self.config.history, self.config.changes, self.config.sparkline
            )
        return s

    def on_health(self, h: Health, now: float | None = None, *, agent: str | None = None) -> None:
        """One health message; `agent`: who published it (else its `agent` field, when it has one)."""
        self.on_healths((h,), now, agent=agent)

    def on_healths(
        self, healths: Sequence[Health], now: float | None = None, *, agent: str | None = None
    ) -> None:
        """Health messages in arrival order (a health batch: `agent` from its envelope), under one lock."""
        now = self.clock() if now is None else now
        with self._lock:
            for h in healths:
                self._health(h, now, agent)

    def _health(self, h: Health, now: float, agent: str | None) -> None:
        self.counters["health"] += 1
        self._health_rate.add(now)
        who = agent if agent is not None else h.extra.get("agent")
        if type(who) is str:
            self._heard(who, h.model, now)
        s = self._sensor(h.machine, h.sensor)
        if s is None:
            return
        ts_s = h.ts_ns / 1e9
        s.seen = now
        self._version += 1
        s.ver = self._version
        if ts_s < s.ts_s or (ts_s == s.ts_s and h.seq == s.seq):  # late or redelivered
            self.counters["late"] += 1
            return
        level = LEVELS[h.state]
        if level != s.level or s.since_s == -math.inf:
            if s.since_s != -math.inf:
                s.changes.append((ts_s, STATES[s.level], h.state, h.score, ""))
            s.since_s = ts_s
        s.level, s.score, s.model, s.seq, s.ts_s = level, h.score, h.model, h.seq, ts_s
        s.extra = h.extra
        s.ring.append(ts_s, h.score, level)
        s.spark.append(int(h.score * 100.0 + 0.5))

    def _heard(self, name: str, model: str, now: float) -> None:
        """A health message from agent `name`: its rate (an agent not announced yet is listed as such)."""
        a = self._agents.get(name)
        if a is None:
            if len(self._agents) >= self.config.max_agents:
                self.counters["refused_agents"] += 1
                return
            a = self._agents[name] = _Agent(UNANNOUNCED, model, now, 0.0)
        if a.rate is None:
            a.rate = _Rate(self.config.rate_window_s)
        a.rate.add(now)
        a.heard = now

    def on_alert(self, a: Alert, now: float | None = None) -> None:
        """An alarm-state change: into the feed; it also sets the state of a sensor not heard from since."""
        now = self.clock() if now is None else now
        ts_s = a.ts_ns / 1e9
        entry = {
            "key": f"{a.machine}/{a.sensor}",
            "ts": ts_s,
            "state": a.state,
            "previous": a.previous_state,
            "score": a.score,
            "model": a.model,
            "reason": a.reason,
        }
        with self._lock:
            self.counters["alerts"] += 1
            self._alert_rate.add(now)
            if not any(e["key"] == entry["key"] and e["ts"] == ts_s for e in self._feed):
                self._feed.append(entry)
            s = self._sensor(a.machine, a.sensor)
            if s is None:
                return
            for i, c in enumerate(s.changes):  # the health stream already marked it: add the reason
                if c[0] == ts_s and c[2] == a.state:
                    s.changes[i] = (*c[:4], a.reason)
                    break
            else:
                if ts_s > s.ts_s:
                    s.changes.append((ts_s, a.previous_state, a.state, a.score, a.reason))
            self._version += 1
            s.ver = self._version
            if ts_s > s.ts_s:  # newer than anything heard: the alert is the sensor's latest word
                if LEVELS[a.state] != s.level or s.since_s == -math.inf:
                    s.since_s = ts_s
                s.level, s.score, s.model, s.seq, s.ts_s = LEVELS[a.state], a.score, a.model, a.seq, ts_s
                s.seen = max(s.seen, now)
                s.ring.append(ts_s, a.score, s.level)
                s.spark.append(int(a.score * 100.0 + 0.5))

    def on_status(self, agent: str, status: AgentStatus, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            self.counters["status"] += 1
            known = status.model in self._thresholds or len(self._thresholds) < self.config.max_agents
            if status.warning is not None and status.alarm is not None and status.model and known:
                self._thresholds[status.model] = (status.warning, status.alarm)
            a = self._agents.get(agent)
            if a is None:
                if len(self._agents) >= self.config.max_agents:
                    self.counters["refused_agents"] += 1
                    return
                self._agents[agent] = _Agent(status.state, status.model, now, now, status.storage)
                return
            if a.state != status.state:
                a.since = now
            a.state, a.model, a.seen, a.storage = status.state, status.model, now, status.storage

    def on_window(self, machine: str, sensor: str, window: Window) -> None:
        """The latest vibration window of a sensor whose detail view is open (others are dropped)."""
        key = f"{machine}/{sensor}"
        with self._lock:
            if key in self._leases:
                self._windows[key] = window

    def on_rejected(self, reason: str) -> None:
        """A message that did not decode (ProtocolError.reason, or bad_topic): counted, never shown."""
        with self._lock:
            self.counters[f"rejected_{reason}"] += 1

    # --------------------------------------------------------------------------- open detail views
    def watch(self, key: str, now: float | None = None) -> bool:
        """A detail view asks for `key`: renew its lease. True when the sensor is newly watched."""
        now = self.clock() if now is None else now
        with self._lock:
            new = key not in self._leases
            if new and len(self._leases) >= self.config.max_watched:
                oldest = min(self._leases, key=self._leases.__getitem__)
                self._leases.pop(oldest)
                self._windows.pop(oldest, None)
            self._leases[key] = now
            return new

    def expire_watches(self, now: float | None = None) -> list[str]:
        """Drop the leases nobody renewed within `watch_lease_s`; returns their keys (to unsubscribe)."""
        now = self.clock() if now is None else now
        with self._lock:
            gone = [k for k, t in self._leases.items() if now - t > self.config.watch_lease_s]
            for k in gone:
                self._leases.pop(k)
                self._windows.pop(k, None)
            return gone

    def watched(self) -> list[str]:
        with self._lock:
            return list(self._leases)

    # -------------------------------------------------------------------------------- views out
    def thresholds_for(self, model: str) -> tuple[float, float] | None:
        with self._lock:
            return self._thresholds.get(model, self.default_thresholds)

    def _state(self, s: _Sensor, now: float) -> str:
        return STALE if now - s.seen > self.config.stale_after_s else STATES[s.level]

    def snapshot(
        self, now: float | None = None, since: tuple[str, int, float] | None = None
    ) -> dict[str, Any]:
        """Everything the fleet page shows, as plain JSON-able types.

        tiles: [key, state, score, sparkline (ints 0..100, oldest first), state before stale] — all of
        them, or with `since` = (epoch, version, now) of an earlier snapshot of this model only those
        changed since or turned stale since (`full` says which); `epoch`, `version`: this snapshot's.
        counts: sensors per state; attention: worst first (see `_attention`); feed: alerts newest
        first; agents (each with its health messages per second); rates (messages/s) and counters.
        """
        now = self.clock() if now is None else now
        stale_before = now - self.config.stale_after_s
        with self._lock:
            full = since is None or since[0] != self.epoch or since[1] > self._version
            after, was_stale_before = (
                (0, -math.inf) if full else (since[1], since[2] - self.config.stale_after_s)
            )  # type: ignore[index]
            tiles, attention = [], []
            counts = dict.fromkeys((*STATES, STALE), 0)
            for s in self._sensors.values():  # the hot loop of every page tick: plain Python only
                last = STATES[s.level]
                stale = s.seen < stale_before
                state = STALE if stale else last
                counts[state] += 1
                if s.ver > after or (stale and s.seen >= was_stale_before):
                    tiles.append([s.key, state, round(s.score, 3), list(s.spark), last])
                if state != "ok":
                    attention.append(self._attention(s, state, now))
            feed = sorted(self._feed, key=lambda e: e["ts"], reverse=True)
            window = self.config.rate_window_s
            agents = [
                {
                    "agent": name,
                    "state": a.state,
                    "model": a.model,
                    "since": a.since,
                    "seen": a.seen,
                    "storage": a.storage,
                    "health_per_s": a.rate.per_s(now) if a.rate is not None else None,
                    "heard": a.heard,
                }
                for name, a in sorted(self._agents.items())
            ]
            rates = {
                "health_per_s": self._health_rate.per_s(now),
                "alerts_per_s": self._alert_rate.per_s(now),
                "window_s": window,
            }
            counters = dict(self.counters)
            version, n = self._version, len(self._sensors)
        attention.sort(
            key=lambda a: (URGENCY[a["state"]], a["eta_s"] if a["eta_s"] is not None else math.inf)
        )
        return {
            "now": now,
            "epoch": self.epoch,
            "version": version,
            "full": full,
            "sensors": n,
            "tiles": tiles,
            "counts": counts,
            "attention": attention,
            "feed": feed,
            "agents": agents,
            "rates": rates,
            "counters": counters,
        }

    def _attention(self, s: _Sensor, state: str, now: float) -> dict[str, Any]:
        """One "needs attention" row: what, and by when (seconds from the sensor's latest window).

        alarm: due now (eta 0), in alarm since `since`. warning: the model's remaining-life estimate
        (`rul_s` in the health message) when it sends one, else when the score's recent trend reaches
        the alarm threshold (None when it is not rising). stale: silent since `seen`.
        """
        row: dict[str, Any] = {
            "key": s.key,
            "state": state,
            "score": round(s.score, 3),
            "since": s.since_s,
            "seen": s.seen,
            "for_s": s.ts_s - s.since_s if state != STALE else now - s.seen,
            "eta_s": None,
            "basis": "",
        }
        if state == "alarm":
            row["eta_s"], row["basis"] = 0.0, "in alarm"
        elif state == "warning":
            rul = s.extra.get("rul_s")
            if isinstance(rul, int | float) and not isinstance(rul, bool) and math.isfinite(rul) and rul >= 0:
                row["eta_s"], row["basis"] = float(rul), "remaining life (model)"
            else:
                limits = self._thresholds.get(s.model, self.default_thresholds)
                if limits is not None:
                    if s.eta[:2] != (s.seq, limits[1]):  # a new window since the last fit
                        s.eta = (
                            s.seq,
                            limits[1],
                            _time_to_cross(s.ring, limits[1], self.config.trend_points),
                        )
                    eta = s.eta[2]
                    if eta is not None:
                        row["eta_s"], row["basis"] = eta, "score trend reaches alarm"
        else:  # stale: nothing new since `seen`
            row["eta_s"], row["basis"] = None, "no message"
        return row

    def detail(self, key: str, now: float | None = None) -> dict[str, Any] | None:
        """One sensor: its whole history, state changes, thresholds, and the spectrum of its latest window."""
        now = self.clock() if now is None else now
        with self._lock:
            s = self._sensors.get(key)
            if s is None:
                return None
            t, score, level = s.ring.last()
            window = self._windows.get(key)
            out: dict[str, Any] = {
                "key": key,
                "machine": s.machine,
                "sensor": s.sensor,
                "state": self._state(s, now),
                "last_state": STATES[s.level],
                "score": s.score,
                "model": s.model,
                "seq": s.seq,
                "since": s.since_s,
                "seen": s.seen,
                "extra": dict(s.extra),
                "t": t,
                "scores": score,
                "levels": level,
                "changes": list(s.changes),
                "thresholds": self._thresholds.get(s.model, self.default_thresholds),
            }
        out["spectrum"] = spectrum(window) if window is not None else None
        return out


def _time_to_cross(ring: _Ring, limit: float, points: int) -> float | None:
    """Seconds (sensor time) until a least-squares line through the latest scores reaches `limit`."""
    t, y, _ = ring.last(points)
    if len(t) < max(5, points // 4) or t[-1] <= t[0]:
        return None
    tc = t - t[-1]
    slope, intercept = np.polyfit(tc, y.astype(np.float64), 1)
    if slope <= 0:
        return None
    eta = (limit - intercept) / slope
    if eta > MAX_PROJECTION_S:
        return None
    return max(0.0, float(eta))


def spectrum(window: Window, max_bins: int = 2048) -> dict[str, Any]:
    """Amplitude spectrum (g, Hann taper) of one window; long spectra keep each bucket's peak."""
    x = np.asarray(window.samples, np.float64)
    n = len(x)
    amp = 2.0 * np.sqrt(power_spectrum(x - x.mean())) / float(hann_window(n).sum())
    freq = np.fft.rfftfreq(n, 1.0 / window.fs)
    if len(amp) > max_bins:
        step = math.ceil(len(amp) / max_bins)
        m = len(amp) // step * step
        blocks = amp[:m].reshape(-1, step)
        peak = blocks.argmax(axis=1) + np.arange(0, m, step)
        freq, amp = freq[peak], amp[peak]
    return {
        "freq_hz": freq,
        "amp_g": amp,
        "fs": window.fs,
        "rpm": window.rpm,
        "seq": window.seq,
        "ts": window.ts_ns / 1e9,
        "n": n,
    }
