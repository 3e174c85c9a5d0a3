"""The edge agent daemon: MQTT windows in, scores, alarms and collected data out, acked only once stored.

One loop in one thread (`Agent.run`): take a batch from the link → sequence checks → features and
one GRU step per window (`Scorer`) → rows and messages (`scored_chunk.compose`, with `messages`
and the raw-sample policy `raw_ring.RawRetention`) → commit windows, transitions, outbox and sensor states in ONE
transaction (`Store.record_batch`) → ack → publish (`outbox.OutboxPump`). Between batches: model
swaps, state compaction (`saved_states`), the disk budget and the gauges. docs/agent.md ("Daemon")
describes the pipeline and its crash-resume guarantee.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import structlog

from edge_agent import saved_states
from edge_agent.baseline_reset import ResetInbox, ResetOutcome, cleared_alert
from edge_agent.bundle import Bundle
from edge_agent.errors import StoreError
from edge_agent.housekeeping import Gauges, RejectionLog, enforce_budget, trim_memory
from edge_agent.messages import HealthEncoder, SensorTopics, log_transition
from edge_agent.metrics import AgentMetrics
from edge_agent.model_swap import (
    DEPLOYED_META_KEY,
    ModelLink,
    ModelSwapper,
    Offer,
    carry_states,
    initial_bundle,
    models_dir,
    result_payload,
)
from edge_agent.mqtt_link import Inbound
from edge_agent.outbox import OutboxPump
from edge_agent.raw_ring import RawRetention, RawRing
from edge_agent.scored_chunk import Wiring, compose
from edge_agent.scorer import ScoreBatch, Scorer
from edge_agent.sequencing import Accepted, PendingResets, SequenceTracker, split_at_resets, start_afresh
from edge_agent.settings import AgentSettings
from edge_agent.storage_guard import CHECK_EVERY_S, StorageGuard
from edge_agent.store import Store
from edge_agent.topics import agent_health_topic

log = structlog.get_logger("edge_agent.daemon")

GAUGES_EVERY_S: Final = 1.0
BUDGET_EVERY_S: Final = 30.0
REJECTION_LOG_EVERY_S: Final = 10.0
SHUTDOWN_FLUSH_S: Final = 1.0
TRIM_EVERY_S: Final = 10.0


class Agent:
    """The daemon: `Agent.from_settings(settings)`, then `run()`; `stop()` from any thread."""

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
        self._outbox: OutboxPump | None = None
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
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._pending = PendingResets(settings.max_tracked_sensors)  # model swaps, non-finite outputs
        self._restored = False
        self._evicted_at_save = 0  # tracker evictions when the states table was last rewritten
        self._held_at: int | None = None  # link cycles when a commit failed: hold until it reconnects
        self._gauges = Gauges(metrics)
        self._topics = SensorTopics(settings.prefix, settings.max_tracked_sensors)
        self._health_batch_topic = agent_health_topic(settings.prefix, settings.agent_id)
        self._encoder: HealthEncoder | None = None
        self._rejection_log = RejectionLog()
        self.storage = StorageGuard(settings.store, metrics, link, settings.store_budget_bytes)
        self.raw = RawRetention(
            fraction=settings.raw_sample_fraction,
            before=settings.raw_before_transition,
            ring_bytes=settings.raw_ring_bytes,
            max_sensors=settings.max_tracked_sensors,
        )
        self.commands = ResetInbox(  # maintenance: a bearing replaced (edge_agent.baseline_reset)
            settings,
            link,
            metrics,
            get_meta=lambda key: self.store.get_meta(key),
            set_meta=lambda key, value: self.store.set_meta(key, value),
        )

    # ------------------------------------------------------------------------------------ factory

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Agent:
        """Load and verify the model (BundleError if refused; a bundle deployed over MQTT earlier is
        served while it verifies) and prepare the link; `run()` opens the store in its own thread."""
        with _open_store(settings) as store:
            if store.get_meta("agent_id") != settings.agent_id:  # a commit (an fsync) only when it changed
                store.set_meta("agent_id", settings.agent_id)
            deployed = store.get_meta(DEPLOYED_META_KEY)
        bundle = initial_bundle(settings, deployed)
        scorer = Scorer.from_loaded(bundle, max_sensors=settings.max_tracked_sensors)
        swapper = ModelSwapper(
            trusted_keys=settings.trusted_keys,
            allow_unsigned=settings.allow_unsigned,
            models_dir=models_dir(settings),
            watch_path=settings.model,
            agent_id=settings.agent_id,
        )
        swapper.serving_created = bundle.card["created"]
        link = ModelLink(
            settings,
            on_model=swapper.offer_archive,
            model_version=bundle.model_version,
            thresholds=(scorer.thresholds.warning, scorer.thresholds.alarm),  # announced on the status topic
        )
        tracker = SequenceTracker.from_settings(settings)
        link.rules.use_spec(scorer.spec, scorer.model_version, bundle.trained_on)  # windows it was made for
        return cls(
            settings, scorer=scorer, link=link, swapper=swapper, metrics=AgentMetrics(), tracker=tracker
        )

    # ---------------------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """Ask the loop to finish its batch and shut down (safe from signal handlers and other threads)."""
        self._stop.set()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until `run()` serves: store open, states restored, link and model watch started."""
        return self._started.wait(timeout)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until `run()` has shut everything down."""
        return self._stopped.wait(timeout)

    @property
    def model_version(self) -> str:
        return self.scorer.model_version

    @property
    def raw_ring(self) -> RawRing:
        return self.raw.ring  # recent windows stored without raw samples

    @property
    def store(self) -> Store:
        """The local store (open while `run()` runs)."""
        if self._store is None:
            raise RuntimeError("the store is open only while Agent.run() runs")
        return self._store

    @property
    def outbox(self) -> OutboxPump:
        """The outbox pump of the open store."""
        if self._outbox is None or self._outbox.store is not self._store:
            before = self.settings.publish_before_commit
            self._outbox = OutboxPump(self.store, self.link, before_commit=before)
        return self._outbox

    def run(self) -> int:
        """Serve until `stop()`; returns the process exit code (0)."""
        s = self.settings
        self._store = _open_store(s)
        try:
            self.storage.prepare()
            self._restore_states()
            self.metrics.set_model(self.model_version)
            self.metrics.serve(s.metrics_port, s.metrics_addr)
            self.link.start()
            self.swapper.start()
            started = {
                "agent": s.agent_id,
                "broker": s.broker,
                "prefix": s.prefix,
                "model": self.model_version,
            }
            log.info("agent_started", **started, tracked=self.scorer.n_tracked, outbox=self.store.outbox_count(),
                     metrics_port=s.metrics_port)  # fmt: skip
            self._started.set()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        s = self.settings
        wait_s = max(s.batch_max_wait_ms / 1000.0, 0.005)
        tasks: dict[str, tuple[float, Callable[[], object]]] = {
            "gauges": (GAUGES_EVERY_S, self._update_gauges),
            "save_states": (s.states_save_interval_s, self.save_states),
            "budget": (BUDGET_EVERY_S, lambda: enforce_budget(self.store)),
            "log_rejections": (REJECTION_LOG_EVERY_S, self._log_rejections),
            "trim_memory": (TRIM_EVERY_S, trim_memory),
            "storage": (CHECK_EVERY_S, self.storage.check),
        }
        now = time.monotonic()
        due = {name: now + (0.0 if name == "gauges" else every) for name, (every, _) in tasks.items()}
        while not self._stop.is_set():
            batch = self.link.get_batch(s.batch_max_size, wait_s)
            if batch:
                self.process(batch)  # a batch taken from the queue is finished even when stopping
            self._guarded("outbox", self.outbox.collect)
            self._guarded("outbox", self.outbox.pump)
            for offer in self.swapper.take():
                self._guarded("model_swap", functools.partial(self._apply_offer, offer))
            for command in self.commands.take():
                self._guarded("reset_baseline", functools.partial(self._reset_baseline, command))
            now = time.monotonic()
            for name, when in due.items():
                if now >= when:
                    every, task = tasks[name]
                    due[name] = now + every
                    self._guarded(name, task)

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
                if self._restored:  # never overwrite saved states the start could not read
                    self.save_states()
            except Exception:
                log.exception("states_not_saved")
            deadline = time.monotonic() + SHUTDOWN_FLUSH_S
            while self.link.connected and time.monotonic() < deadline:
                if not self.link.in_flight_outbox_ids():
                    break
                time.sleep(0.01)
            self.outbox.collect(force=True)
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
        if self._held_at is not None and self.link.cycles == self._held_at:
            self.link.release(batch)  # after a failed commit: nothing overtakes the windows given back
            return
        self._held_at = None
        t0 = time.perf_counter()
        pending: list[Accepted[Inbound]] = []
        for item in batch:
            verdict = self.tracker.check(item.key, item.window.seq, item.window.ts_ns)
            if not verdict.accept:
                self._drop(verdict.outcome)
                self.link.rules.log.dropped(item.key, item.window.seq, verdict.outcome)  # rate-limited
                continue
            pending.append(Accepted(item, verdict))
            if verdict.missed:
                self.metrics.windows_missed.inc(verdict.missed)
        chunks, held = split_at_resets(pending), set[int]()
        for n, chunk in enumerate(chunks):
            try:
                self._score_chunk(chunk)
            except StoreError as exc:  # not committed, so not acked: the broker will redeliver them
                rest = [p.item for c in chunks[n:] for p in c]
                log.error("batch_not_committed", windows=len(rest), reason=exc.reason, error=str(exc))
                saved_states.reload(self.store, self.scorer, self.tracker, {it.key for it in rest})
                self.link.release(rest)
                held, self._held_at = {id(it) for it in rest}, self.link.cycles
                break
            except Exception:
                # A bug must not stop the agent: counted, and acked (a redelivery would fail again).
                log.exception("batch_failed", windows=len(chunk))
                self._drop("internal_error", len(chunk))
        self.link.ack_many([it for it in batch if id(it) not in held] if held else batch)
        if self.tracker.evicted_total - self._evicted_at_save >= self.settings.max_tracked_sensors:
            self.save_states()  # rows of forgotten sensors go: at most ~3 x max_tracked_sensors rows
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)

    def _score_chunk(self, chunk: list[Accepted[Inbound]]) -> None:
        last = self._note_resets(chunk)  # the sequence tracker's entry per sensor after this chunk
        t0 = time.perf_counter()
        feats, ok = self.scorer.usable_features([p.item.window for p in chunk])
        if not ok.all():
            self._drop("bad_features", int((~ok).sum()))
            chunk = [p for p, good in zip(chunk, ok, strict=True) if good]
            feats = feats[ok]
        if not chunk:
            # Nothing to score, but the tracker moved on: keep the store in step with it.
            self.store.record_batch([], states=saved_states.batch_states(self.scorer, last, self.tracker))
            return
        windows = [p.item.window for p in chunk]
        result = self.scorer.score_features(
            [p.item.key for p in chunk],
            feats,
            seqs=[w.seq for w in windows],
            ts_ns=[w.ts_ns for w in windows],
        )
        self.metrics.step_seconds.observe(time.perf_counter() - t0)
        self._record_and_publish(chunk, feats, result, last)

    def _note_resets(self, chunk: list[Accepted[Inbound]]) -> dict[str, tuple[int, int]]:
        """Start afresh the sensors that must (sequencing.start_afresh); count resets by cause."""
        last, resets = start_afresh(chunk, self.scorer.table, self.scorer.reset, self._pending)
        for cause, n in resets.items():
            self._count_reset(cause, n)
        return last

    def _count_reset(self, cause: str, n: int = 1) -> None:
        self.resets[cause] += n
        self.metrics.resets.labels(cause=cause).inc(n)

    def _record_and_publish(
        self,
        chunk: list[Accepted[Inbound]],
        feats: npt.NDArray[np.float32],
        result: ScoreBatch,
        last: dict[str, tuple[int, int]],
    ) -> None:
        """Compose the chunk's rows and messages (scored_chunk), commit them with the sensors' states, publish."""
        s, raw = self.settings, self.raw.batch()
        wiring = Wiring(
            model=self.scorer.model_version,
            outputs=tuple(self.scorer.outputs),
            encoder=self._health_encoder(),
            topics=self._topics,
            health_qos=s.health_qos,
            batch_topic=self._health_batch_topic if s.health_batch else None,
            agent_id=s.agent_id,
        )
        c = compose(chunk, feats, result, wiring, raw, self._pending)
        self._drop("bad_score", c.bad_scores)
        for key, seq in c.nonfinite:
            self._count_reset("nonfinite")
            log.warning("state_reset", sensor=key, seq=seq, cause="nonfinite", model=wiring.model)
        for (machine, sensor), tr in zip(c.names, c.transitions, strict=True):
            self.transitions_total += 1
            self.metrics.alarms.labels(state=tr.state).inc()
            log_transition(machine, sensor, tr)
        early = self.outbox.publish_early(c.outbox)  # None unless publish_before_commit; acks still wait
        ids = self.storage.commit(
            self.store,
            c.rows,
            transitions=c.transitions,
            outbox=c.outbox,
            states=saved_states.batch_states(self.scorer, last, self.tracker),
            attach_raw=raw.attach,
            outbox_ids=early,
        )
        raw.committed(self.store.last_window_ids)
        self.windows_scored += len(c.rows)
        self.metrics.windows_scored.inc(len(c.rows))
        self.outbox.committed(c.outbox, ids)
        now_ns = time.time_ns()
        for p in chunk:
            self.metrics.end_to_end_seconds.observe(max(0, now_ns - p.item.received_ns) / 1e9)

    def _health_encoder(self) -> HealthEncoder:
        if self._encoder is None or self._encoder.model != self.scorer.model_version:
            self._encoder = HealthEncoder(self.scorer.model_version, self.settings.agent_id)
        return self._encoder

    def _drop(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.dropped[reason] += n
        self.metrics.rejected.labels(reason=reason).inc(n)

    # ------------------------------------------------------------------------------------- states

    def save_states(self) -> None:
        """Rewrite the states table from memory (edge_agent.saved_states.save_all)."""
        saved_states.save_all(self.store, self.scorer, self.tracker)
        self._evicted_at_save = self.tracker.evicted_total

    def _restore_states(self) -> None:
        self._pending.clear()
        self._pending.mark(saved_states.restore(self.store, self.scorer, self.tracker, self.metrics), "model")
        self._restored = True

    # ------------------------------------------------------------------------------------- models

    def _apply_offer(self, offer: Offer) -> None:
        """Swap to an accepted bundle (between batches), or report the refusal; publish the result."""
        states: Literal["kept", "reset"] | None = None
        if offer.bundle is not None:
            states = self.swap_model(offer.bundle)
            # A restart serves the latest accepted bundle: an MQTT deploy, or the configured folder.
            deployed = str(offer.path) if offer.source == "mqtt" and offer.path is not None else ""
            self.store.set_meta(DEPLOYED_META_KEY, deployed)
            self.store.extra_bytes = self.swapper.prune(keep=offer.path if deployed else None)
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
        """Serve `bundle` from the next batch on; hidden states are "kept" unless their shape changed ("reset")."""
        old = self.scorer
        new = Scorer.from_loaded(bundle, max_sensors=self.settings.max_tracked_sensors)
        reset = carry_states(old, new)
        states: Literal["kept", "reset"] = "reset" if reset else "kept"
        if reset:
            self._pending.clear()
            self._pending.mark(reset, "model")
            self._count_reset("model", len(reset))
        self.scorer = new
        self.swapper.serving_created = bundle.card["created"]
        self.link.set_model_version(new.model_version, (new.thresholds.warning, new.thresholds.alarm))
        self.link.rules.use_spec(new.spec, new.model_version, bundle.trained_on)
        self.metrics.set_model(new.model_version)
        log.info("model_swapped", previous=old.model_version, model=new.model_version, states=states)
        return states

    def _reset_baseline(self, outcome: ResetOutcome) -> None:
        """A bearing replaced: forget the sensor's state, baseline included, and replace its retained
        alert by an "ok" one (the old bearing's alarm must not stay on the new one); stored at once; answer."""
        c, tracked = outcome.command, False
        if c is not None:
            key = f"{c.machine}/{c.sensor}"
            before = self.scorer.state_of(key)  # "ok" for a sensor this agent does not track
            tracked = self.scorer.forget(key)
            self._pending.mark([key], "maintenance")
            self._count_reset("maintenance")
            last = self.tracker.last(key)
            topic = self._topics.of(key, c.machine, c.sensor)[1]
            tr, alert = cleared_alert(topic, c, key, last, before, self.scorer.model_version)
            states = (
                None if last is None else saved_states.batch_states(self.scorer, {key: last}, self.tracker)
            )
            ids = self.storage.commit(self.store, [], transitions=[tr], outbox=[alert], states=states)
            self.transitions_total += 1
            self.metrics.alarms.labels(state="ok").inc()
            log_transition(c.machine, c.sensor, tr)
            self.outbox.publish_new([alert], ids)
            log.info("baseline_reset", sensor=key, tracked=tracked, previous_state=before, key_id=c.key_id)
        self.commands.answer(outcome, tracked=tracked)

    # ---------------------------------------------------------------------------------- housekeeping

    def _update_gauges(self) -> None:
        self._gauges.update(self.link, self.scorer, self.store)

    def rejections(self) -> dict[str, int]:
        """Every rejected or dropped window so far, by reason (protocol reasons from the link included)."""
        out = Counter(self.link.stats().rejected)
        out.update(self.dropped)
        return dict(out)

    def _log_rejections(self) -> None:
        self._rejection_log.log(self.rejections())


def _open_store(settings: AgentSettings) -> Store:
    return Store.open(
        settings.store, budget_bytes=settings.store_budget_bytes, synchronous=settings.store_synchronous
    )
