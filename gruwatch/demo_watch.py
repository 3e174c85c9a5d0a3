"""What `gruwatch demo` watches: the agent's health and alert messages, judged against the fleet's truth.

`Watcher` subscribes to `{prefix}/+/+/health` and `.../alert` (QoS 1), keeps the alarm state of every
scored window (deduplicated by machine, sensor and seq: health messages are delivered at least once),
and prints each alarm as it is raised or cleared. `summarize` compares those states with the simulated
fleet's ground truth using the evaluation's own metrics (`trainer.metrics`, numpy only):

- failing bearings: sensors whose failure window was published;
- alarmed before failure: of those, the ones whose alarm was on at the failure and raised before it;
- median lead: from that raise to the failure, as a fraction of the bearing's life (install → failure);
- false alarms: alarm raises at windows before the fault's onset (or on a machine that never fails);
- windows published: acknowledged by the broker; windows scored: distinct windows with a health message.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from edge_agent.alarms import STATE_NAMES

STATE_CODES = {name: i for i, name in enumerate(STATE_NAMES)}
SUMMARY_KEYS = (
    "failing",
    "alarmed_before_failure",
    "median_lead_fraction",
    "false_alarms",
    "windows_published",
    "windows_scored",
)


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class Truth:
    """What the simulator knows about one sensor (SensorRun's facts the summary needs)."""

    machine: str
    sensor: str
    interval_s: float
    n_windows: int
    onset_s: float | None
    failure_s: float | None

    @classmethod
    def of(cls, run: Any) -> Truth:
        return cls(run.machine, run.sensor, run.interval_s, run.n_windows, run.onset_s, run.failure_s)


class Watcher:
    """Collects health states and prints alarms; paho's network thread calls `_on_message`."""

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str,
        truth: Sequence[Truth],
        *,
        out: TextIO | None = None,
        protocol: str = "3.1.1",
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.prefix = prefix
        self.truth = {(t.machine, t.sensor): t for t in truth}
        self.out = out or sys.stdout
        self.lock = threading.Lock()
        self.states: dict[tuple[str, str], dict[int, int]] = {}
        self.models: set[str] = set()
        self.alarms: list[dict[str, Any]] = []
        self.printer: Callable[[str], None] = self._print
        self._ready = threading.Event()
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{prefix}-watch-{uuid.uuid4().hex[:6]}", protocol=proto
        )
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.connect(host, port)
        self.client.subscribe([(f"{prefix}/+/+/health", 1), (f"{prefix}/+/+/alert", 1)])
        self.client.loop_start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._ready.wait(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def scored(self) -> int:
        with self.lock:
            return sum(len(s) for s in self.states.values())

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        from edge_agent.errors import ProtocolError
        from edge_agent.protocol import decode_alert, decode_health

        try:
            if msg.topic.endswith("/health"):
                h = decode_health(msg.payload)
                with self.lock:
                    self.states.setdefault((h.machine, h.sensor), {})[h.seq] = STATE_CODES[h.state]
                    self.models.add(h.model)
            elif msg.topic.endswith("/alert"):
                self._alert(decode_alert(msg.payload))
        except ProtocolError:
            return

    def _alert(self, a: Any) -> None:
        if a.state != "alarm" and a.previous_state != "alarm":
            return  # warnings come and go; the demo reports alarms
        t = self.truth.get((a.machine, a.sensor))
        entry: dict[str, Any] = {
            "machine": a.machine,
            "sensor": a.sensor,
            "seq": a.seq,
            "state": a.state,
            "score": a.score,
        }
        where = ""
        if t is not None:
            t_s = a.seq * t.interval_s
            entry["t_s"] = t_s
            if t.failure_s is not None and a.state == "alarm":
                left = t.failure_s - t_s
                entry["life_fraction"] = t_s / t.failure_s if t.failure_s > 0 else None
                where = (
                    f" at {t_s / t.failure_s:.0%} of its life, failure due in {_hms(left)} (simulated)"
                    if left > 0
                    else " at the failure"
                )
            elif t.failure_s is None and a.state == "alarm":
                where = " — this bearing never fails: a FALSE alarm"
            elif t.onset_s is not None and t_s < t.onset_s and a.state == "alarm":
                where = " — before the fault's onset: a FALSE alarm"
        with self.lock:
            self.alarms.append(entry)
        if a.state == "alarm":
            self.printer(f"  ALARM   {a.machine}/{a.sensor} (score {a.score:.2f}){where}")
        else:
            self.printer(f"  cleared {a.machine}/{a.sensor} (score {a.score:.2f})")


@dataclass
class Summary:
    failing: int = 0
    alarmed_before_failure: int = 0
    median_lead_fraction: float | None = None
    false_alarms: int = 0
    windows_published: int = 0
    windows_scored: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        lead = "n/a" if self.median_lead_fraction is None else f"{self.median_lead_fraction:.0%}"
        return (
            f"failing bearings {self.failing} · alarmed before failure {self.alarmed_before_failure} · "
            f"median lead {lead} of life · false alarms {self.false_alarms} · "
            f"windows published {self.windows_published} · scored {self.windows_scored}"
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in SUMMARY_KEYS}
        d.update(self.extra)
        return d


def summarize(
    watcher: Watcher | None, truth: Sequence[Truth], published: dict[tuple[str, str], int]
) -> Summary:
    """The demo's summary from the watched states; `published` = windows offered per (machine, sensor)."""
    from trainer import metrics

    out = Summary(windows_published=sum(published.values()))
    if watcher is None:
        return out
    with watcher.lock:
        states = {k: dict(v) for k, v in watcher.states.items()}
    out.windows_scored = sum(len(v) for v in states.values())
    leads: list[float] = []
    for t in truth:
        failed = t.failure_s is not None and published.get((t.machine, t.sensor), 0) >= t.n_windows
        out.failing += int(failed)
        got = states.get((t.machine, t.sensor), {})
        if not got:
            continue
        seqs = np.array(sorted(got), dtype=np.int64)
        st = np.array([got[int(k)] for k in seqs], dtype=np.int8)
        ts = seqs * t.interval_s
        onset = np.inf if t.onset_s is None else t.onset_s
        target = (ts >= onset).astype(np.float32)
        out.false_alarms += metrics.false_alarms(st, target)
        if failed and t.failure_s and int(seqs[-1]) == t.n_windows - 1:
            # Life = install (t = 0) to the failure: prepend the install so lead_time's life is that span.
            lead_s, _ = metrics.lead_time(np.concatenate([[0.0], ts]), np.concatenate([[0], st]))
            if lead_s is not None and lead_s > 0:
                out.alarmed_before_failure += 1
                leads.append(lead_s / t.failure_s)
    out.median_lead_fraction = float(np.median(leads)) if leads else None
    return out
