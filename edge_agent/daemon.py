"""The edge agent daemon: MQTT windows in, scores, alarms and collected data out, acked only once stored.

One loop in one thread (`Agent.run`), around parts that each do one thing:

1. `MqttLink` (here `ModelLink`) decodes and validates every message on paho's thread and queues
   windows; malformed ones are counted by reason and acked at once.
2. `SequenceTracker` drops duplicates and stale windows per sensor and says when a sensor's state
   must start afresh (first sight, a gap longer than `gap_reset_s`, a sensor restart).
3. `Scorer` computes the features of every window of the batch and steps all their sensors in one
   onnxruntime call, then runs the alarm state machine.
4. `Store.record_batch` commits features, scores, transitions, sampled raw samples, the outgoing
   messages (the outbox) AND the new state of every sensor in the batch (hidden state, alarm
   counters, last seq/ts) in ONE transaction; only then are the windows acked to the broker, so a
   crash means redelivery, never loss, and the state on disk always matches the acked windows.
5. Health messages (one per window) and retained alerts (one per state change) go out from the
   outbox, alerts first; the broker's acknowledgements delete them from the outbox. While the
   connection is down they wait in the outbox and are sent in order once it is back.

Between batches the loop swaps in a newly verified model (`ModelSwapper`), rewrites the states
table from memory every `states_save_interval_s` (a compaction: it drops sensors no longer tracked;
correctness does not depend on it), keeps the store inside its disk budget and refreshes the gauges.
`stop()` (SIGTERM) ends intake; the loop finishes its batch, saves the states, flushes the outbox
as far as the broker acknowledges within a second, and closes everything.

Restarts, clean or not (SIGTERM, SIGKILL, a crash; with `store_synchronous = "FULL"` also power
loss): every window acked to the broker has its results and its sensor's state committed; every
window not acked is redelivered and scored from that committed state. So each sensor resumes
exactly where it was: the same scores as an uninterrupted run. A window committed whose ack was
lost comes again and is dropped as a duplicate by the restored sequence tracker; its health message
was already in the outbox. Health messages the broker had acknowledged but the outbox had not yet
forgotten (it deletes once a second) are sent again: at least once, never lost.

Raw samples kept: a sampled share (`raw_sample_fraction`), every window in warning or alarm, the
`RAW_AFTER_TRANSITION` windows after a state change, and the `raw_before_transition` windows before
it (kept in a small in-memory ring, bounded by `raw_ring_bytes`, and attached to their stored rows
in the transition's transaction).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt
import structlog

from edge_agent.bundle import Bundle, load_bundle
from edge_agent.errors import BundleError, FeatureError, ProtocolError
from edge_agent.metrics import AgentMetrics
from edge_agent.model_swap import ModelLink, ModelSwapper, Offer, result_payload
from edge_agent.mqtt_link import Inbound
from edge_agent.protocol import (
    Alert,
    HealthEncoder,
    State,
    alert_topic,
    encode_alert,
    health_topic,
)
from edge_agent.raw_ring import RawRing
from edge_agent.scorer import ScoreBatch, Scorer
from edge_agent.sequencing import SequenceTracker, Verdict
from edge_agent.settings import AgentSettings
from edge_agent.states import states_from_bytes
from edge_agent.store import (
    PRIORITY_ALERT,
    PRIORITY_HEALTH,
    OutboxMessage,
    SensorState,
    Store,
    WindowRow,
)
from edge_agent.store import Transition as StoredTransition

log = structlog.get_logger("edge_agent.daemon")

STATES_META_KEY: Final = "agent_states"
DEPLOYED_META_KEY: Final = "deployed_model"
#: Windows after an alarm-state change whose raw samples are kept (before it: those in warning/alarm).
RAW_AFTER_TRANSITION: Final = 16
#: Windows per feature-extraction call. extract_batch works in cache-sized blocks itself, so a slice
#: bounds only its float64 copy of the input (20 KB per window): 256 windows = 5 MB.
FEATURE_SLICE: Final = 256
OUTBOX_CHUNK: Final = 500  # outbox messages handed to the MQTT client per loop turn while catching up
OUTBOX_MAX_IN_FLIGHT: Final = 2000
GAUGES_EVERY_S: Final = 1.0
MARK_SENT_EVERY_S: Final = 1.0
BUDGET_EVERY_S: Final = 30.0
REJECTION_LOG_EVERY_S: Final = 10.0
SHUTDOWN_FLUSH_S: Final = 1.0
TRIM_EVERY_S: Final = 10.0


@dataclass(slots=True)
class _Pending:
    """One accepted window on its way through a batch."""

    item: Inbound
    verdict: Verdict
    evicted: bool = False  # its hidden state was evicted although its sequence was still tracked


class Agent:
    """The daemon. Build it with `Agent.from_settings(settings)`, then `run()`; `stop()` from any thread.

    The constructor only stores its arguments.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        scorer: Scorer,
        link: ModelLink,
        swapper: ModelSwapper,
        metrics: AgentMetrics,
        tracker: SequenceTracker,
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self._store: Store | None = None
        self.link = link
        self.swapper = swapper
        self.metrics = metrics
        self.tracker = tracker
        self.dropped: Counter[str] = Counter()  # duplicate / stale / bad_features / internal_error
        self.resets: Counter[str] = Counter()  # new / gap / restart / evicted / model
        self.windows_scored = 0
        self.transitions_total = 0
        self.models_refused = 0
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._backlog = True  # the outbox may hold messages not handed to the MQTT client yet
        self._after_transition: dict[str, int] = {}
        self._reset_by_model: set[str] = set()
        self._messages_seen = 0
        self._acked_outbox: list[int] = []
        self._topic_cache: dict[str, tuple[str, str, bytes]] = {}
        self._encoder: HealthEncoder | None = None
        self._next_mark_sent = 0.0
        self._logged_rejections: Counter[str] = Counter()
        self.raw_ring = RawRing(settings.raw_before_transition, settings.raw_ring_bytes)

    # ------------------------------------------------------------------------------------ factory

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Agent:
        """Load and verify the model (BundleError if refused) and prepare the MQTT link and the store.

        A bundle deployed over MQTT earlier (recorded in the store) is served instead of
        `settings.model` as long as it still verifies; the configured folder is watched for changes.
        The store is opened by `run()`, in the thread that uses it (SQLite connections are per thread).
        """
        with _open_store(settings) as store:
            store.set_meta("agent_id", settings.agent_id)
            deployed = store.get_meta(DEPLOYED_META_KEY)
        bundle = _initial_bundle(settings, deployed)
        scorer = Scorer.from_loaded(bundle, max_sensors=settings.max_tracked_sensors)
        swapper = ModelSwapper(
            trusted_keys=settings.trusted_keys,
            allow_unsigned=settings.allow_unsigned,
            models_dir=models_dir(settings),
            watch_path=settings.model,
        )
        link = ModelLink(settings, on_model=swapper.offer_archive, model_version=bundle.model_version)
        tracker = SequenceTracker(gap_reset_s=settings.gap_reset_s, max_sensors=settings.max_tracked_sensors)
        return cls(
            settings, scorer=scorer, link=link, swapper=swapper, metrics=AgentMetrics(), tracker=tracker
        )

    # ---------------------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """Ask the loop to finish its batch and shut down (safe from signal handlers and other threads)."""
        self._stop.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until `run()` has shut everything down."""
        return self._stopped.wait(timeout)

    @property
    def model_version(self) -> str:
        return self.scorer.model_version

    @property
    def store(self) -> Store:
        """The local store (open while `run()` runs)."""
        if self._store is None:
            raise RuntimeError("the store is open only while Agent.run() runs")
        return self._store

    def run(self) -> int:
        """Serve until `stop()`; returns the process exit code (0)."""
        s = self.settings
        self._store = _open_store(s)
        try:
            self._restore_states()
            self.metrics.set_model(self.model_version)
            self.metrics.serve(s.metrics_port)
            self._backlog = self.store.outbox_count() > 0
            self.link.start()
            self.swapper.start()
            log.info(
                "agent_started",
                agent=s.agent_id,
                broker=s.broker,
                prefix=s.prefix,
                model=self.model_version,
                tracked=self.scorer.n_tracked,
                outbox=self.store.outbox_count(),
                metrics_port=s.metrics_port,
            )
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        s = self.settings
        wait_s = max(s.batch_max_wait_ms / 1000.0, 0.005)
        now = time.monotonic()
        due = {
            "gauges": now,
            "save_states": now + s.states_save_interval_s,
            "budget": now + BUDGET_EVERY_S,
            "log_rejections": now + REJECTION_LOG_EVERY_S,
            "trim_memory": now + TRIM_EVERY_S,
        }
        every = {
            "gauges": GAUGES_EVERY_S,
            "save_states": s.states_save_interval_s,
            "budget": BUDGET_EVERY_S,
            "log_rejections": REJECTION_LOG_EVERY_S,
            "trim_memory": TRIM_EVERY_S,
        }
        tasks = {
            "gauges": self._update_gauges,
            "save_states": self.save_states,
            "budget": self._enforce_budget,
            "log_rejections": self._log_rejections,
            "trim_memory": _trim_memory,
        }
        while not self._stop.is_set():
            batch = self.link.get_batch(s.batch_max_size, wait_s)
            if batch:
                self.process(batch)  # a batch taken from the queue is finished even when stopping
            self._guarded("outbox", self._collect_published)
            self._guarded("outbox", self._pump_outbox)
            for offer in self.swapper.take():
                self._guarded("model_swap", functools.partial(self._apply_offer, offer))
            now = time.monotonic()
            for name, when in due.items():
                if now >= when:
                    due[name] = now + every[name]
                    self._guarded(name, tasks[name])

    def _guarded(self, what: str, task: Callable[[], object]) -> None:
        """Run housekeeping; an error (disk full, a broken bundle folder) is logged, never fatal."""
        try:
            task()
        except Exception:
            log.exception("housekeeping_failed", task=what)

    def _shutdown(self) -> None:
        try:
            self.swapper.stop()
            try:
                self.save_states()
            except Exception:
                log.exception("states_not_saved")
            deadline = time.monotonic() + SHUTDOWN_FLUSH_S
            while self.link.connected and time.monotonic() < deadline:
                if not self.link.in_flight_outbox_ids():
                    break
                time.sleep(0.01)
            self._collect_published(force=True)
            self.link.stop(timeout=1.0)
            self._update_gauges()
            self._log_rejections()
            log.info(
                "agent_stopped",
                windows_scored=self.windows_scored,
                outbox=self.store.outbox_count(),
                tracked=self.scorer.n_tracked,
            )
        finally:
            self.store.close()
            self._store = None
            self.metrics.close()
            self._stopped.set()

    # ------------------------------------------------------------------------------------ a batch

    def process(self, batch: Sequence[Inbound]) -> None:
        """Score, store, ack and publish one batch of windows (never raises for bad input)."""
        t0 = time.perf_counter()
        pending: list[_Pending] = []
        for item in batch:
            verdict = self.tracker.check(item.key, item.window.seq, item.window.ts_ns)
            if not verdict.accept:
                self._drop(verdict.outcome)
                log.debug("window_dropped", sensor=item.key, seq=item.window.seq, reason=verdict.outcome)
                continue
            pending.append(_Pending(item, verdict))
        for chunk in _chunks(pending):
            try:
                self._score_chunk(chunk)
            except Exception:
                # A bug or a failing disk must not stop the agent. The windows are still acked: their
                # states have advanced, so a redelivery would be dropped as a duplicate anyway.
                log.exception("batch_failed", windows=len(chunk))
                self._drop("internal_error", len(chunk))
        self.link.ack_many(batch)
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)

    def _score_chunk(self, chunk: list[_Pending]) -> None:
        resets: Counter[str] = Counter()
        seen: set[str] = set()
        last: dict[str, tuple[int, int]] = {}  # the sequence tracker's entry after this chunk
        for p in chunk:
            key = p.item.key
            if p.verdict.reset:
                if p.verdict.outcome != "new" or key in self.scorer.store:
                    self.scorer.reset(key)
                resets[p.verdict.outcome] += 1
            elif key not in seen and key not in self.scorer.store and key not in self._reset_by_model:
                # Known by sequence but its state was evicted (more sensors than max_tracked_sensors).
                p.evicted = True
                resets["evicted"] += 1
            seen.add(key)
            last[key] = (p.item.window.seq, p.item.window.ts_ns)
        for cause, n in resets.items():
            self.resets[cause] += n
            self.metrics.resets.labels(cause=cause).inc(n)
        t0 = time.perf_counter()
        feats, ok = self._features([p.item for p in chunk])
        if not ok.all():
            self._drop("bad_features", int((~ok).sum()))
            chunk = [p for p, good in zip(chunk, ok, strict=True) if good]
            feats = feats[ok]
        if not chunk:
            # Nothing to score, but the tracker moved on: keep the store in step with it.
            self.store.record_batch([], states=self._sensor_states(last))
            return
        result = self.scorer.score_features([p.item.key for p in chunk], feats)
        self.metrics.step_seconds.observe(time.perf_counter() - t0)
        self._record_and_publish(chunk, feats, result, last)

    def _features(self, items: Sequence[Inbound]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Features of every window, and which rows are usable (finite, computable)."""
        windows = [it.window for it in items]
        try:
            feats = np.concatenate(
                [
                    self.scorer.features_of(windows[i : i + FEATURE_SLICE])
                    for i in range(0, len(windows), FEATURE_SLICE)
                ]
            )
        except (ProtocolError, FeatureError, ValueError):
            # Find the culprit(s) window by window; the others are scored as usual.
            feats = np.zeros((len(windows), self.scorer.n_features), dtype=np.float32)
            ok = np.ones(len(windows), dtype=bool)
            for i, w in enumerate(windows):
                try:
                    feats[i] = self.scorer.features_of([w])[0]
                except (ProtocolError, FeatureError, ValueError) as exc:
                    ok[i] = False
                    log.debug("features_failed", sensor=items[i].key, seq=w.seq, error=str(exc))
            return feats, np.asarray(ok & np.isfinite(feats).all(axis=1), dtype=bool)
        ok = np.asarray(np.isfinite(feats).all(axis=1), dtype=bool)
        return feats, ok

    def _record_and_publish(
        self,
        chunk: list[_Pending],
        feats: npt.NDArray[np.float32],
        result: ScoreBatch,
        last: dict[str, tuple[int, int]],
    ) -> None:
        model = self.scorer.model_version
        names = self.scorer.outputs
        fraction = self.settings.raw_sample_fraction
        ring = self.raw_ring
        rows: list[WindowRow] = []
        alerts: list[OutboxMessage] = []
        healths: list[OutboxMessage] = []
        stored_transitions: list[StoredTransition] = []
        attach: list[tuple[int, npt.NDArray[np.float32]]] = []
        no_raw: dict[str, list[int]] = {}  # rows of this chunk stored without raw samples, per sensor
        samples_of: list[npt.NDArray[np.float32] | None] = []  # per row: samples not stored (yet)
        transitions = {t.index: t for t in result.transitions}
        scores = result.scores
        finite = np.asarray(np.isfinite(scores).all(axis=1), dtype=bool)
        health_all = np.clip(result.health.astype(np.float64), 0.0, 1.0).tolist()
        encoder = self._health_encoder()
        steps_all = result.steps.tolist()
        extra_names = [(k, _extra_name(name)) for k, name in enumerate(names) if k > 0]
        extra_values = scores[:, 1:].astype(np.float64).tolist() if extra_names else None
        for i, p in enumerate(chunk):
            it, w = p.item, p.item.window
            if not finite[i]:
                # The model gave NaN/inf: its state is poisoned too. Start the sensor afresh.
                self.scorer.reset(it.key)
                self._drop("bad_score")
                log.warning("bad_score", sensor=it.key, seq=w.seq, model=model)
                continue
            health = health_all[i]
            state = result.states[i]
            extra: dict[str, Any] = (
                {name: round(extra_values[i][k - 1], 6) for k, name in extra_names}
                if extra_values is not None
                else {}
            )
            extra["step"] = steps_all[i]
            cause: str | None = p.verdict.outcome if p.verdict.reset else None
            if cause is None and it.key in self._reset_by_model:
                cause = "model"
            elif cause is None and p.evicted:
                cause = "evicted"
            self._reset_by_model.discard(it.key)
            if cause is not None and cause != "new":
                extra["state_reset"] = cause
                if p.verdict.gap_s is not None:
                    extra["gap_s"] = round(p.verdict.gap_s, 3)
            topics = self._topics(it)
            healths.append(
                OutboxMessage(
                    topics[0],
                    topics[2] + encoder.encode(w.seq, w.ts_ns, health, state, extra),
                    qos=1,
                    retain=False,
                    priority=PRIORITY_HEALTH,
                )
            )
            tr = transitions.get(i)
            keep_raw = state != "ok" or tr is not None or _sampled(it.key, w.seq, fraction)
            if tr is not None:
                # The windows just before the change: from earlier batches (the ring) and this chunk.
                attach.extend(ring.take(it.key, w.seq))
                for j in no_raw.pop(it.key, []):
                    if (w.seq - rows[j].seq) % (1 << 32) <= ring.per_sensor:
                        rows[j] = dataclasses.replace(rows[j], raw=samples_of[j])
                        samples_of[j] = None
                self._after_transition.pop(it.key, None)
                self._after_transition[it.key] = RAW_AFTER_TRANSITION
                if len(self._after_transition) > self.settings.max_tracked_sensors:
                    del self._after_transition[next(iter(self._after_transition))]  # oldest
                alert = Alert(
                    it.machine,
                    it.sensor,
                    w.seq,
                    w.ts_ns,
                    cast(State, tr.state),
                    cast(State, tr.previous),
                    health,
                    model,
                    tr.reason,
                )
                alerts.append(
                    OutboxMessage(
                        topics[1],
                        encode_alert(alert),
                        qos=1,
                        retain=True,
                        priority=PRIORITY_ALERT,
                    )
                )
                stored_transitions.append(
                    StoredTransition(it.key, w.seq, w.ts_ns, tr.previous, tr.state, health, model, tr.reason)
                )
                self.transitions_total += 1
                self.metrics.alarms.labels(state=tr.state).inc()
                log.warning(
                    "alarm_transition",
                    machine=it.machine,
                    sensor=it.sensor,
                    seq=w.seq,
                    previous=tr.previous,
                    state=tr.state,
                    score=round(health, 4),
                    model=model,
                    reason=tr.reason,
                )
            elif it.key in self._after_transition:
                keep_raw = True
                left = self._after_transition[it.key] - 1
                if left <= 0:
                    del self._after_transition[it.key]
                else:
                    self._after_transition[it.key] = left
            if not keep_raw:
                no_raw.setdefault(it.key, []).append(len(rows))
            rows.append(
                WindowRow(
                    sensor=it.key,
                    seq=w.seq,
                    ts_ns=w.ts_ns,
                    features=feats[i],
                    score=health,
                    state=state,
                    model=model,
                    fs=w.fs,
                    rpm=w.rpm,
                    raw=np.asarray(w.samples, dtype=np.float32) if keep_raw else None,
                )
            )
            samples_of.append(None if keep_raw else np.asarray(w.samples, dtype=np.float32))
        outbox = alerts + healths
        ids = self.store.record_batch(
            rows,
            transitions=stored_transitions,
            outbox=outbox,
            states=self._sensor_states(last),
            attach_raw=attach,
        )
        if ring.per_sensor > 0:
            for wid, r, samples in zip(self.store.last_window_ids, rows, samples_of, strict=True):
                if samples is not None:
                    ring.add(r.sensor, wid, r.seq, samples)
        self.windows_scored += len(rows)
        self.metrics.windows_scored.inc(len(rows))
        self._publish_new(outbox, ids)
        now_ns = time.time_ns()
        for p in chunk:
            self.metrics.end_to_end_seconds.observe(max(0, now_ns - p.item.received_ns) / 1e9)

    def _sensor_states(self, last: dict[str, tuple[int, int]]) -> dict[str, SensorState]:
        """The state of the chunk's sensors as it is now, to commit with the chunk's windows."""
        store = self.scorer.store
        model = self.scorer.model_version
        data = store.data
        out: dict[str, SensorState] = {}
        for key, (seq, ts) in last.items():
            row = store.row(key) if key in store else None
            out[key] = _saved_state(data, row, model, seq, ts)
        return out

    def _topics(self, item: Inbound) -> tuple[str, str, bytes]:
        """(health topic, alert topic, health JSON head) of a sensor, cached (ids are validated once)."""
        topics = self._topic_cache.get(item.key)
        if topics is None:
            if len(self._topic_cache) >= self.settings.max_tracked_sensors:
                self._topic_cache.clear()
            prefix = self.settings.prefix
            topics = (
                health_topic(prefix, item.machine, item.sensor),
                alert_topic(prefix, item.machine, item.sensor),
                HealthEncoder.head(item.machine, item.sensor),
            )
            self._topic_cache[item.key] = topics
        return topics

    def _health_encoder(self) -> HealthEncoder:
        enc = self._encoder
        if enc is None or enc.model != self.scorer.model_version:
            enc = self._encoder = HealthEncoder(self.scorer.model_version)
        return enc

    def _drop(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.dropped[reason] += n
        self.metrics.rejected.labels(reason=reason).inc(n)

    # ------------------------------------------------------------------------------------- outbox

    def _publish_new(self, msgs: Sequence[OutboxMessage], ids: Sequence[int]) -> None:
        """Hand this batch's messages to the MQTT client, unless older ones are still waiting."""
        if self._backlog or not self.link.connected:
            self._backlog = True
            return
        try:
            for m, oid in zip(msgs, ids, strict=True):
                self.link.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, outbox_id=oid)
        except RuntimeError as exc:  # the client refused: the messages wait in the outbox
            log.warning("publish_deferred", error=str(exc))
            self._backlog = True

    def _pump_outbox(self) -> None:
        """Catch up with the outbox (after a restart or a lost connection): alerts first, then in order."""
        if not self._backlog or not self.link.connected:
            return
        in_flight = self.link.in_flight_outbox_ids()
        if len(in_flight) >= OUTBOX_MAX_IN_FLIGHT:
            return
        # Acknowledged since the snapshot above, or acknowledged and not yet deleted: not pending.
        self._acked_outbox.extend(self.link.take_published())
        items = self.store.outbox_pending(OUTBOX_CHUNK, exclude=in_flight.union(self._acked_outbox))
        for m in items:
            self.link.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, outbox_id=m.id)
        if len(items) < OUTBOX_CHUNK:
            self._backlog = False

    def _collect_published(self, *, force: bool = False) -> None:
        """Delete the messages the broker acknowledged from the outbox, in one transaction per second.

        (A commit costs an fsync; deleting late only means a crash re-sends a few acknowledged
        messages, which at-least-once delivery allows.)
        """
        self._acked_outbox.extend(self.link.take_published())
        now = time.monotonic()
        if self._acked_outbox and (force or now >= self._next_mark_sent):
            self.store.mark_sent(self._acked_outbox)
            self._acked_outbox = []
            self._next_mark_sent = now + MARK_SENT_EVERY_S

    # ------------------------------------------------------------------------------------- states

    def save_states(self) -> None:
        """Rewrite the states table from memory: every tracked sensor, least recently used first.

        Not needed for an exact resume (each batch commits its sensors' states with its windows);
        it drops sensors no longer tracked, so the table stays within `max_tracked_sensors`.
        """
        exported = self.scorer.export_states()
        last = self.tracker.export()
        sensors: list[str] = list(exported["sensors"])
        index = {k: i for i, k in enumerate(sensors)}
        model = self.scorer.model_version
        # The tracker's order (least recently accepted first); sensors only the scorer holds first.
        keys = [k for k in sensors if k not in last] + list(last)
        per_sensor: dict[str, SensorState] = {}
        for key in keys:
            seq, ts = last.get(key, (0, 0))
            per_sensor[key] = _saved_state(exported, index.get(key), model, seq, ts)
        self.store.save_states(per_sensor)

    def _restore_states(self) -> None:
        """Resume from the states table (or, once, from a schema-1 store's snapshot blob)."""
        if isinstance(self.store.get_meta(STATES_META_KEY), bytes):
            self._restore_legacy_snapshot()
            self.save_states()  # into the table, then the old snapshot goes
            self.store.delete_meta(STATES_META_KEY)
            return
        saved = self.store.load_states()
        if not saved:
            return
        try:
            self.tracker.restore({k: (s.last_seq, s.last_ts_ns) for k, s in saved.items()})
            shape = tuple(self.scorer.state_shape)
            with_h = {k: s for k, s in saved.items() if s.h is not None and tuple(s.h.shape) == shape}
            # Hidden states of another shape belong to a model swapped out with its states reset.
            other = [k for k, s in saved.items() if s.h is not None and tuple(s.h.shape) != shape]
            self._reset_by_model = set(other)
            if other:
                log.warning(
                    "states_not_restored",
                    reason="state shape changed",
                    sensors=len(other),
                    model=self.scorer.model_version,
                )
            keys = list(with_h)
            n = len(keys)
            h = np.zeros((n, *shape), np.float32)
            for i, k in enumerate(keys):
                h[i] = cast(npt.NDArray[np.float32], with_h[k].h)
            n = self.scorer.import_states(
                {
                    "format": 1,
                    "model_version": self.scorer.model_version,
                    "state_shape": list(shape),
                    "sensors": keys,
                    "h": h,
                    "alarm": np.array([with_h[k].alarm for k in keys], np.int8),
                    "above": np.array([with_h[k].above for k in keys], np.int32).reshape(n, 2),
                    "below": np.array([with_h[k].below for k in keys], np.int32).reshape(n, 2),
                    "steps": np.array([with_h[k].steps for k in keys], np.int64),
                }
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("states_not_restored", reason=str(exc))
            self.tracker.restore({})
            self._reset_by_model = set()
            return
        log.info("states_restored", sensors=n, tracked=len(saved), model=self.scorer.model_version)

    def _restore_legacy_snapshot(self) -> None:
        """The whole-store snapshot blob older agents saved in meta (schema 1)."""
        blob = self.store.get_meta(STATES_META_KEY)
        assert isinstance(blob, bytes)
        try:
            snap = states_from_bytes(blob)
            keys = [str(k) for k in snap.get("tracker_keys", [])]
            seqs = np.asarray(snap.get("tracker_seq", np.zeros(0, np.int64))).tolist()
            tss = np.asarray(snap.get("tracker_ts", np.zeros(0, np.int64))).tolist()
            self.tracker.restore(dict(zip(keys, zip(seqs, tss, strict=True), strict=True)))
            saved_model = snap.get("model_version")
            if saved_model != self.scorer.model_version:
                if list(snap.get("state_shape", [])) != list(self.scorer.state_shape):
                    log.warning(
                        "states_not_restored",
                        reason="state shape changed",
                        saved_model=saved_model,
                        model=self.scorer.model_version,
                    )
                    self._reset_by_model = set(keys)
                    return
                snap["model_version"] = self.scorer.model_version
            n = self.scorer.import_states(snap)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("states_not_restored", reason=str(exc))
            self.tracker.restore({})
            return
        log.info("states_restored", sensors=n, model=self.scorer.model_version, source="snapshot")

    # ------------------------------------------------------------------------------------- models

    def _apply_offer(self, offer: Offer) -> None:
        """Swap to an accepted bundle (between batches), or report the refusal; publish the result."""
        states: Literal["kept", "reset"] | None = None
        if offer.bundle is not None:
            states = self.swap_model(offer.bundle)
            # A restart serves the latest accepted bundle: an MQTT deploy, or the configured folder.
            deployed = str(offer.path) if offer.source == "mqtt" and offer.path is not None else ""
            self.store.set_meta(DEPLOYED_META_KEY, deployed)
            self.metrics.model_swaps.labels(result="accepted").inc()
        else:
            self.models_refused += 1
            self.metrics.model_swaps.labels(result="rejected").inc()
            log.warning(
                "model_refused",
                source=offer.source,
                reason=offer.reason,
                detail=offer.detail,
                serving=self.model_version,
            )
        payload = result_payload(offer, serving=self.model_version, states=states)
        if self.link.connected:
            self.link.publish(self.link.result_topic, payload, qos=1)

    def swap_model(self, bundle: Bundle) -> Literal["kept", "reset"]:
        """Serve `bundle` from the next batch on; hidden states are kept unless their shape changed.

        Returns "kept" or "reset".
        """
        old = self.scorer
        new = Scorer.from_loaded(bundle, max_sensors=self.settings.max_tracked_sensors)
        if new.state_shape == old.state_shape:
            exported = old.export_states()
            exported["model_version"] = new.model_version
            new.import_states(exported)
            states: Literal["kept", "reset"] = "kept"
        else:
            self._reset_by_model = set(old.export_states()["sensors"])
            self.metrics.resets.labels(cause="model").inc(len(self._reset_by_model))
            self.resets["model"] += len(self._reset_by_model)
            states = "reset"
        self.scorer = new
        self.link.set_model_version(new.model_version)
        self.metrics.set_model(new.model_version)
        log.info("model_swapped", previous=old.model_version, model=new.model_version, states=states)
        return states

    # ---------------------------------------------------------------------------------- housekeeping

    def _update_gauges(self) -> None:
        m = self.metrics
        st = self.link.stats()
        m.messages.inc(max(0, st.received - self._messages_seen))
        self._messages_seen = st.received
        m.sync_rejections(st.rejected)
        m.queue_depth.set(self.link.qsize())
        m.tracked_sensors.set(self.scorer.n_tracked)
        m.store_bytes.set(self.store.size_bytes())
        m.outbox.set(self.store.outbox_count())

    def _enforce_budget(self) -> None:
        ev = self.store.enforce_budget()
        if ev.any:
            log.warning(
                "store_budget_enforced",
                bytes_before=ev.bytes_before,
                bytes_after=ev.bytes_after,
                windows_dropped=ev.windows_dropped + ev.alarm_windows_dropped,
                raw_dropped=ev.raw_dropped + ev.alarm_raw_dropped,
                outbox_dropped=ev.outbox_dropped,
            )

    def rejections(self) -> dict[str, int]:
        """Every rejected or dropped window so far, by reason (protocol reasons from the link included)."""
        out = Counter(self.link.stats().rejected)
        out.update(self.dropped)
        return dict(out)

    def _log_rejections(self) -> None:
        now = Counter(self.rejections())
        delta = {k: v - self._logged_rejections.get(k, 0) for k, v in now.items()}
        delta = {k: v for k, v in delta.items() if v > 0}
        if delta:
            log.warning("windows_rejected", counts=delta, totals=dict(now))
            self._logged_rejections = now


# ------------------------------------------------------------------------------------------- helpers


def _saved_state(columns: Any, row: int | None, model: str, seq: int, ts: int) -> SensorState:
    """A sensor's row of the scorer's state columns (its live array or an export) as a SensorState.

    `row` None: the sequence tracker knows the sensor but the scorer holds no state for it.
    """
    if row is None:
        return SensorState(h=None, model=model, last_seq=seq, last_ts_ns=ts)
    above = columns["above"][row].tolist()
    below = columns["below"][row].tolist()
    return SensorState(
        h=columns["h"][row],
        model=model,
        last_seq=seq,
        last_ts_ns=ts,
        alarm=int(columns["alarm"][row]),
        above=(above[0], above[1]),
        below=(below[0], below[1]),
        steps=int(columns["steps"][row]),
    )


def _open_store(settings: AgentSettings) -> Store:
    return Store.open(
        settings.store, budget_bytes=settings.store_budget_bytes, synchronous=settings.store_synchronous
    )


def models_dir(settings: AgentSettings) -> Path:
    """Where bundles received over MQTT are unpacked: beside the store."""
    return settings.store.parent / f"{settings.store.name}.models"


def _initial_bundle(settings: AgentSettings, deployed: str | bytes | None) -> Bundle:
    if isinstance(deployed, bytes):
        deployed = deployed.decode("utf-8", "replace")
    if deployed:
        try:
            bundle = load_bundle(
                deployed, trusted_keys=settings.trusted_keys, allow_unsigned=settings.allow_unsigned
            )
        except BundleError as exc:
            log.warning("deployed_model_refused", path=deployed, reason=exc.reason, detail=exc.detail)
        else:
            log.info("serving_deployed_model", path=deployed, model=bundle.model_version)
            return bundle
    return load_bundle(
        settings.model, trusted_keys=settings.trusted_keys, allow_unsigned=settings.allow_unsigned
    )


#: Health-message fields the daemon sets itself; a model output with one of these names gets "out_".
_RESERVED_FIELDS: Final = frozenset(
    {"machine", "sensor", "seq", "ts", "score", "state", "model", "step", "state_reset", "gap_s"}
)


def _extra_name(output: str) -> str:
    return f"out_{output}" if output in _RESERVED_FIELDS else output


@functools.cache
def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        fn: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return fn


def _trim_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps it after a burst of 10 KB windows)."""
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


def _sampled(key: str, seq: int, fraction: float) -> bool:
    """A deterministic pseudo-random share `fraction` of windows (same answer after a restart)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    return zlib.crc32(f"{key}#{seq}".encode()) < fraction * 4294967296.0


def _chunks(pending: list[_Pending]) -> list[list[_Pending]]:
    """Split a batch where a sensor that already appeared must start afresh (its reset follows its step)."""
    out: list[list[_Pending]] = [[]]
    seen: set[str] = set()
    for p in pending:
        if p.verdict.reset and p.item.key in seen:
            out.append([])
            seen = set()
        out[-1].append(p)
        seen.add(p.item.key)
    return [c for c in out if c]
