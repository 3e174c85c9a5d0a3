"""The agent's Prometheus metrics: one private CollectorRegistry, served by `start_http_server` on request.

Names (all prefixed ``gruwatch_agent_``): messages_total (received from the broker), windows_scored_total,
rejected_total{reason} (protocol reasons, ``queue_full``, ``duplicate``, ``stale``, ``bad_features``,
``bad_score``, ``internal_error``), state_resets_total{cause}, alarm_transitions_total{state}, queue_depth,
tracked_sensors, store_bytes, outbox_messages, model_swaps_total{result}, commands_total{command,result},
model_info{version},
states_skipped_total, windows_missed_total, windows_not_stored_total, storage_degraded (0/1), and
three latency histograms: step_seconds (features, one batched onnxruntime call and the alarm state
machine), batch_seconds (a whole batch in the loop, store commit and acks included) and
end_to_end_seconds (from a message's arrival to its health message handed to the MQTT client). The
registry is the agent's own, so two agents in one process (tests) never clash and the process's
default metrics stay out.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from edge_agent.errors import SettingsError

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)


class AgentMetrics:
    """Every metric the daemon updates, on its own registry. `serve(port)` exposes them over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "gruwatch_agent_"
        self.messages = Counter(p + "messages", "Vibration messages received from the broker.", registry=r)
        self.windows_scored = Counter(p + "windows_scored", "Windows scored and stored.", registry=r)
        self.rejected = Counter(
            p + "rejected", "Windows rejected or dropped, by reason.", ["reason"], registry=r
        )
        self.resets = Counter(
            p + "state_resets",
            "Hidden states started afresh, by cause (new, gap, restart, evicted, model, nonfinite, maintenance).",
            ["cause"],
            registry=r,
        )
        self.alarms = Counter(
            p + "alarm_transitions", "Alarm state changes, by the new state.", ["state"], registry=r
        )
        self.queue_depth = Gauge(p + "queue_depth", "Decoded windows waiting to be scored.", registry=r)
        self.tracked_sensors = Gauge(p + "tracked_sensors", "Sensors with a hidden state.", registry=r)
        self.store_bytes = Gauge(p + "store_bytes", "Local store size on disk (with its WAL).", registry=r)
        self.outbox = Gauge(p + "outbox_messages", "Results not yet acknowledged by the broker.", registry=r)
        self.model_swaps = Counter(
            p + "model_swaps",
            "Model bundles offered, by result (accepted, rejected).",
            ["result"],
            registry=r,
        )
        self.model_info = Gauge(
            p + "model_info", "The model version served (value 1).", ["version"], registry=r
        )
        self.step_seconds = Histogram(
            p + "step_seconds",
            "Features plus one batched model step and the alarm state machine.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            p + "batch_seconds",
            "A whole batch: checks, features, model step, store commit, acks and publishing.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            p + "end_to_end_seconds",
            "From a window's arrival to its health message handed to the MQTT client.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commands = Counter(
            p + "commands",
            "Operator commands received (reset-baseline), by result: accepted or the refusal's reason.",
            ["command", "result"],
            registry=r,
        )
        self.states_skipped = Counter(
            p + "states_skipped", "Saved sensor states skipped at start as unreadable.", registry=r
        )
        self.windows_missed = Counter(
            p + "windows_missed", "Windows never received, counted from jumps in a sensor's seq.", registry=r
        )
        self.windows_not_stored = Counter(
            p + "windows_not_stored", "Windows scored and published but not stored (disk full).", registry=r
        )
        self.connected = Gauge(p + "connected", "1 while connected and subscribed to the broker.", registry=r)
        self.storage_degraded = Gauge(
            p + "storage_degraded", "1 while the store cannot keep windows (disk full), else 0.", registry=r
        )
        self._rejected_seen: dict[str, float] = {}
        self._server: Any = None

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)

    def sync_rejections(self, counts: dict[str, int]) -> None:
        """Bring `rejected{reason}` up to the totals counted elsewhere (the MQTT link counts its own)."""
        for reason, total in counts.items():
            delta = total - self._rejected_seen.get(reason, 0)
            if delta > 0:
                self.rejected.labels(reason=reason).inc(delta)
                self._rejected_seen[reason] = total

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Start the HTTP endpoint (a daemon thread) on `port`; 0 means off. SettingsError if it cannot."""
        if port == 0 or self._server is not None:
            return
        try:
            server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise SettingsError(
                f"metrics_port {port} on {addr}: {exc}; pick a free port, or 0 to turn metrics off",
                reason="metrics_port",
            ) from exc
        self._server = server

    def close(self) -> None:
        """Stop the HTTP endpoint if it runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0.0 when absent).

        e.g. ``value("gruwatch_agent_rejected_total", reason="nan")``.
        """
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else float(v)
