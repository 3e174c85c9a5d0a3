"""Reliability against a real private Mosquitto: shutdown under load, full disks, bad saved states, poisoned
states, missed windows (hostile bundles: test_reliability_bundles.py). docs/reliability.md quotes the figures
these tests measure.

Tests marked `reliability` are the long versions (`make test-reliability`); each has a reduced
version here that runs in `make test`.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.mqtt_link import MqttLink
from edge_agent.protocol import Window, encode_binary, vibration_topic
from edge_agent.settings import load_settings
from edge_agent.states import SensorState
from edge_agent.store import Store
from tests.conftest import Broker
from tests.edge_agent.agent_testing import (
    AgentProcess,
    Models,
    PrivateBroker,
    StatusWatcher,
    Subscriber,
    agent_settings,
    close_client,
    mqtt_client,
    running,
)

pytestmark = pytest.mark.mqtt
T0 = 1_800_000_000 * 10**9


def window(seq: int, n: int = 2560, *, seed: int = 0) -> Window:
    rng = np.random.default_rng(seed * 100_003 + seq)
    return Window(seq, T0 + seq * 10**10, 25600.0, 1500.0, (0.1 * rng.standard_normal(n)).astype(np.float32))


# ------------------------------------------------------------------------ 1. SIGTERM within 5 s


def test_link_stops_at_once_with_a_full_queue(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path
) -> None:
    """paho's thread blocked on a full queue (MQTT 3.1.1, no receive maximum) must not hold up stop()."""
    settings = load_settings(
        None,
        broker=broker.url,
        prefix=topic_prefix,
        agent_id="gw",
        model=models.v1,
        trusted_keys=[models.pub],
        store=tmp_path / "a.db",
        mqtt_protocol="3.1.1",
        queue_max_size=2,
        queue_block_s=2.0,
    )
    link = MqttLink(settings)
    link.start()
    pub = mqtt_client(broker)
    try:
        assert link.wait_connected(10)
        topic = vibration_topic(topic_prefix, "m", "s")
        for k in range(40):
            pub.publish(topic, encode_binary(window(k, 256)), qos=1)
        deadline = time.monotonic() + 10
        while link.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.qsize() == 2, "the queue never filled"
        time.sleep(0.2)  # the network thread is now blocked on the full queue
        t0 = time.monotonic()
        link.stop(timeout=1.0)
        elapsed = time.monotonic() - t0
    finally:
        close_client(pub)
    print(f"\nFIGURE link stop with a full queue: {elapsed:.2f} s")
    assert elapsed < 2.5, f"stop() took {elapsed:.1f} s with a full queue"


def _sigterm_under_load(
    broker: Broker, topic_prefix: str, agent_process: Callable[..., AgentProcess], n: int, protocol: str
) -> tuple[float, int]:
    """Flood an agent (small queue), SIGTERM it mid-stream; restart; every window must be scored.

    Returns (seconds from SIGTERM to exit, windows scored before the SIGTERM).
    """
    agent = agent_process(
        "term", mqtt_protocol=protocol, queue_max_size=8, batch_max_size=4, batch_max_wait_ms=5
    )
    sub = Subscriber(broker, topic_prefix)
    watcher = StatusWatcher(broker, topic_prefix, agent.agent_id)
    pub = mqtt_client(broker)
    try:
        proc = agent.start()
        assert sub.wait(watcher.online, 30)
        topic = vibration_topic(topic_prefix, "m", "s0")
        for k in range(n):
            pub.publish(topic, encode_binary(window(k)), qos=1)
        assert sub.wait(lambda: len(sub.health) >= 5, 30)
        before = len(sub.health)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 0, err[-2000:]
        proc = agent.start()
        assert sub.wait(lambda: {h.seq for h in sub.health} >= set(range(n)), 120), (
            f"{len({h.seq for h in sub.health})} of {n} windows scored"
        )
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        agent.kill_all()
        close_client(pub)
        watcher.close()
        sub.close()
    return elapsed, before


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_sigterm_exits_within_5_s_with_a_full_queue_and_nothing_is_lost(
    broker: Broker, topic_prefix: str, agent_process: Callable[..., AgentProcess], protocol: str
) -> None:
    elapsed, before = _sigterm_under_load(broker, topic_prefix, agent_process, 400, protocol)
    print(f"\nFIGURE SIGTERM under load mqtt {protocol}: exit {elapsed:.2f} s, {before}/400 scored before")
    assert before < 400, "the agent finished before the SIGTERM: nothing was tested"
    assert elapsed < 5.0, f"SIGTERM to exit took {elapsed:.1f} s"


@pytest.mark.reliability
@pytest.mark.timeout(3000)  # a long run: beyond the suite's 600 s per test
def test_sigterm_under_heavy_load_long(
    broker: Broker, topic_prefix: str, agent_process: Callable[..., AgentProcess]
) -> None:
    elapsed, before = _sigterm_under_load(broker, topic_prefix, agent_process, 5000, "3.1.1")
    print(f"\nFIGURE SIGTERM under load 5000 windows: exit {elapsed:.2f} s, {before} scored before")
    assert before < 5000
    assert elapsed < 5.0, f"SIGTERM to exit took {elapsed:.1f} s"


# ------------------------------------------------------------ 4. one bad saved state, the rest resume


@pytest.mark.parametrize(
    "corrupt",
    [
        "UPDATE states SET h = x'00' WHERE sensor = 'm/s2'",  # a blob of the wrong length
        "UPDATE states SET shape = 'garbage' WHERE sensor = 'm/s2'",
        "UPDATE states SET alarm = 9 WHERE sensor = 'm/s2'",
        "UPDATE states SET last_seq = 'x' WHERE sensor = 'm/s2'",
        "UPDATE states SET h = x'0000c07f0000c07f' WHERE sensor = 'm/s2'",  # NaN hidden state
    ],
)
def test_a_bad_state_row_is_skipped_and_counted_and_the_others_resume(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path, corrupt: str
) -> None:
    store = tmp_path / "agent.db"
    h = np.full((1, 2), 0.25, np.float32)
    with Store.open(store, budget_bytes=1 << 30) as st:
        st.save_states({f"m/s{i}": SensorState(h * i, "rms-v1", 10 + i, T0, steps=5 + i) for i in range(5)})
        st.connection().execute(corrupt)
    settings = agent_settings(broker, topic_prefix, models, store)
    with running(settings) as agent:
        assert agent.metrics.value("gruwatch_agent_states_skipped_total") == 1
        assert agent.scorer.n_tracked == 4
        assert "m/s2" not in agent.scorer.table
        assert agent.tracker.last("m/s4") == (14, T0)
    with Store.open(store, budget_bytes=1 << 30) as st:
        saved = st.load_states()
    assert sorted(saved) == ["m/s0", "m/s1", "m/s3", "m/s4"]  # the stop saved the four, not an empty set
    assert [saved[k].steps for k in sorted(saved)] == [5, 6, 8, 9]


# ------------------------------------------------------------ 9. a non-finite state resets that sensor


class _PoisonFirstCall:
    """Wraps the real onnxruntime session; the first call's first row gets a NaN hidden state."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def run(self, names: list[str], feeds: dict[str, Any]) -> Any:
        score, h = self.inner.run(names, feeds)
        self.calls += 1
        if self.calls == 1:
            h = h.copy()
            h[:, 0, :] = np.nan
        return score, h


def test_a_non_finite_state_resets_that_sensor_within_the_batch(models: Models, tmp_path: Path) -> None:
    """A poisoned state never scores a later window (same batch included); the next window says so."""
    from edge_agent.daemon import Agent
    from edge_agent.mqtt_link import Inbound
    from edge_agent.protocol import decode_health
    from edge_agent.scorer import Scorer

    settings = load_settings(
        None,
        broker="mqtt://127.0.0.1:1",
        prefix="t",
        agent_id="t",
        model=models.v1,
        trusted_keys=[models.pub],
        store=tmp_path / "agent.db",
    )
    agent = Agent.from_settings(settings)
    agent.scorer.session = _PoisonFirstCall(agent.scorer.session)
    agent._store = Store.open(settings.store, budget_bytes=settings.store_budget_bytes)

    def item(sensor: str, k: int) -> Inbound:
        return Inbound("m", sensor, window(k, seed=1), mid=1, qos=1, dup=False, generation=0, received_ns=0)

    try:
        # a is stepped three times in one batch (three passes); pass 1 poisons a's state.
        agent.process([item("a", 0), item("b", 0), item("a", 1), item("a", 2)])
        health = [decode_health(m.payload) for m in agent.store.outbox_pending(100) if "/health" in m.topic]
        saved = agent.store.load_states()
    finally:
        agent.store.close()
    got = {(h.sensor, h.seq): h for h in health}
    assert got[("a", 1)].extra["state_reset"] == "nonfinite"
    assert got[("a", 1)].extra["step"] == 1
    assert got[("a", 2)].extra["step"] == 2
    assert "state_reset" not in got[("b", 0)].extra
    fresh = Scorer.from_bundle(models.v1, trusted_keys=[models.pub])
    assert got[("a", 1)].score == pytest.approx(fresh.score_one("x", window(1, seed=1)).health, abs=1e-6)
    assert agent.resets["nonfinite"] == 1
    assert agent.metrics.value("gruwatch_agent_state_resets_total", cause="nonfinite") == 1
    assert saved["m/a"].h is not None
    assert np.isfinite(saved["m/a"].h).all()


# ------------------------------------------------------- 2. never ack what is not committed; disk full


def _reference(models: Models, n: int, seed: int) -> list[tuple[float, int]]:
    from edge_agent.scorer import Scorer

    scorer = Scorer.from_bundle(models.v1, trusted_keys=[models.pub])
    return [(r.health, r.step) for r in (scorer.score_one("x", window(k, seed=seed)) for k in range(n))]


@pytest.mark.parametrize("early", [False, True], ids=["publish-after-commit", "publish-before-commit"])
def test_a_failed_commit_is_not_acked_and_the_windows_come_back(
    early: bool,
    broker: Broker,
    topic_prefix: str,
    models: Models,
    tmp_path: Path,
    subscriber: Subscriber,
    publisher: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store refuses every commit for a while (even without window rows): nothing is acked, the
    sensors roll back to the store, and the windows come back from the broker and are scored exactly.
    With `publish_before_commit` the failed batches' health went out before their commits: those
    windows' health comes again (at least once), each copy exact."""
    from edge_agent.errors import StoreError

    real = Store.record_batch
    failing = {"left": 6}

    def flaky(self: Store, *a: Any, **kw: Any) -> list[int]:
        if failing["left"] > 0:
            failing["left"] -= 1
            raise StoreError("injected: database or disk is full", reason="disk_full")
        return real(self, *a, **kw)

    monkeypatch.setattr(Store, "record_batch", flaky)
    n = 12
    settings = agent_settings(
        broker, topic_prefix, models, tmp_path / "a.db", batch_max_wait_ms=5, publish_before_commit=early
    )
    topic = vibration_topic(topic_prefix, "m", "s0")
    with running(settings) as agent:
        for k in range(n):
            publisher.publish(topic, encode_binary(window(k, seed=3)), qos=1)
        # With publish_before_commit every health message may be out before the first commit fails:
        # wait for the failures to be used up and every window committed too, not only for health.
        assert subscriber.wait(
            lambda: (
                {h.seq for h in subscriber.health} >= set(range(n))
                and failing["left"] == 0
                and agent.windows_scored >= n
            ),
            40,
        ), f"{sorted({h.seq for h in subscriber.health})} scored, {failing['left']} failures left"
        stats = agent.link.stats()
    assert failing["left"] == 0
    assert stats.cycles >= 1  # the agent asked the broker for the windows it had given back
    ref = _reference(models, n, seed=3)
    for h in subscriber.health:  # at least once; each one exact, as an uninterrupted run
        assert h.score == pytest.approx(ref[h.seq][0], abs=1e-6), h.seq
        assert h.extra["step"] == ref[h.seq][1], h.seq
        assert "state_reset" not in h.extra, h.seq
    if early:  # (without it a reconnect may also repeat a message in flight: not asserted either way)
        seqs = [h.seq for h in subscriber.health]
        assert len(seqs) > len(set(seqs)), "a failed batch's health was published before its commit"


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 16 MiB tmpfs mounted for the test (needs root, as on the CI machine)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if r.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the injected-failure test covers the logic"
        )
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_degrades_keeps_publishing_says_so_and_recovers(
    broker: Broker,
    topic_prefix: str,
    models: Models,
    small_disk: Path,
    subscriber: Subscriber,
    publisher: Any,
) -> None:
    filler = small_disk / "filler"
    settings = agent_settings(
        broker, topic_prefix, models, small_disk / "a.db", raw_sample_fraction=1.0, batch_max_wait_ms=5
    )
    status = StatusWatcher(broker, topic_prefix, settings.agent_id)
    topic = vibration_topic(topic_prefix, "m", "s0")
    n = 600  # 10 KB of raw samples each: far more than the disk holds
    try:
        with running(settings) as agent:
            free = shutil.disk_usage(small_disk).free
            filler.write_bytes(b"\0" * (free - (1 << 20)))  # 1 MiB left for the store to grow
            for k in range(n):
                publisher.publish(topic, encode_binary(window(k, seed=4)), qos=1)
            assert subscriber.wait(lambda: {h.seq for h in subscriber.health} >= set(range(n)), 120), (
                f"{len({h.seq for h in subscriber.health})} of {n} windows scored"
            )
            assert agent.metrics.value("gruwatch_agent_storage_degraded") == 1
            assert agent.metrics.value("gruwatch_agent_windows_not_stored_total") > 0
            assert subscriber.wait(lambda: any(s.get("storage") == "degraded" for s in status.status), 10)
            degraded_windows = agent.metrics.value("gruwatch_agent_windows_not_stored_total")
            filler.unlink()
            assert subscriber.wait(lambda: agent.metrics.value("gruwatch_agent_storage_degraded") == 0, 20)
            assert subscriber.wait(lambda: status.status[-1].get("storage") is None, 10)
            for k in range(n, n + 5):
                publisher.publish(topic, encode_binary(window(k, seed=4)), qos=1)
            assert subscriber.wait(lambda: {h.seq for h in subscriber.health} >= set(range(n + 5)), 30)
            assert agent.metrics.value("gruwatch_agent_windows_not_stored_total") == degraded_windows
    finally:
        status.close()
    ref = _reference(models, n + 5, seed=4)
    for h in subscriber.health:
        assert h.extra["step"] == ref[h.seq][1], h.seq
        assert h.score == pytest.approx(ref[h.seq][0], abs=1e-6), h.seq


# ----------------------------------------- 3. broker restarts with the shipped config; missed windows


class _Publisher:
    """The sensors' side: a paho client with a persistent session that notes, at each (re)connect,
    whether the broker still had its session (a broker that kept sessions across a restart)."""

    def __init__(self, port: int, client_id: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.sessions: list[bool] = []  # session_present at each connect, in order
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, flags, rc, p: self.sessions.append(bool(flags.session_present))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait_connected(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "the publisher did not reconnect"
            time.sleep(0.02)

    def publish(self, topic: str, seqs: range, seed: int) -> list[Any]:
        return [self.client.publish(topic, encode_binary(window(k, seed=seed)), qos=1) for k in seqs]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _through_broker_restarts(
    tmp_path: Path, topic_prefix: str, models: Models, *, restarts: int, kill: bool, persistence: bool
) -> tuple[int, int, int, list[bool]]:
    """Publish a stream at QoS 1 through `restarts` broker restarts. Returns (published, scored, missed,
    the publisher's session_present at each reconnect after a restart).

    Before SIGKILLs the broker is restarted gracefully once, so that the sessions are on disk, as on
    a gateway whose broker has run longer than its `autosave_interval`; a kill restores that save."""
    pb = PrivateBroker(tmp_path / "broker", persistence=persistence)
    pb.start()
    n_per = 40
    n = n_per * (restarts + 1)
    pub = _Publisher(pb.port, f"pub-{topic_prefix[-10:]}")
    try:
        settings = agent_settings(
            pb.broker, topic_prefix, models, tmp_path / "a.db", mqtt_reconnect_min_s=1, mqtt_reconnect_max_s=1
        )
        topic = vibration_topic(topic_prefix, "m", "s0")
        with running(settings) as agent:
            if kill:
                pb.restart(kill=False)
                assert agent.link.wait_connected(60)
                pub.wait_connected()
            first = len(pub.sessions)
            for r in range(restarts + 1):
                infos = pub.publish(topic, range(r * n_per, (r + 1) * n_per), seed=5)
                if r < restarts:
                    time.sleep(0.05)  # mid-stream: some in flight, some queued for the agent
                    pb.restart(kill=kill)
                    assert agent.link.wait_connected(60)
                else:
                    for info in infos:
                        info.wait_for_publish(60)
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
                and agent.windows_scored + agent.metrics.value("gruwatch_agent_windows_missed_total") < n
            ):
                time.sleep(0.05)
            time.sleep(0.5)
            missed = int(agent.metrics.value("gruwatch_agent_windows_missed_total"))
        with Store.open(tmp_path / "a.db", budget_bytes=1 << 30) as st:
            scored = len(set(st.window_seqs("m/s0")))
    finally:
        pub.close()
        pb.stop()
    return n, scored, missed, pub.sessions[first:]


def test_graceful_broker_restarts_with_the_shipped_config_lose_nothing(
    tmp_path: Path, topic_prefix: str, models: Models
) -> None:
    published, scored, missed, sessions = _through_broker_restarts(
        tmp_path, topic_prefix, models, restarts=3, kill=False, persistence=True
    )
    print(f"\nFIGURE graceful restarts=3 published={published} scored={scored} missed={missed}")
    assert sessions, "the publisher never reconnected"
    assert all(sessions), f"the broker forgot the sessions (persistence): {sessions}"
    assert (scored, missed) == (published, 0)


def test_without_persistence_a_loss_is_counted_not_silent(
    tmp_path: Path, topic_prefix: str, models: Models
) -> None:
    published, scored, missed, sessions = _through_broker_restarts(
        tmp_path, topic_prefix, models, restarts=2, kill=False, persistence=False
    )
    print(f"\nFIGURE no-persistence restarts=2 published={published} scored={scored} missed={missed}")
    assert sessions, "the publisher never reconnected"
    assert not any(sessions)
    assert scored + missed == published  # whatever the broker forgot is counted by seq jumps


@pytest.mark.reliability
@pytest.mark.timeout(3000)  # a long run: beyond the suite's 600 s per test
@pytest.mark.parametrize(("restarts", "kill"), [(100, False), (20, True)])
def test_broker_restarts_long(
    tmp_path: Path, topic_prefix: str, models: Models, restarts: int, kill: bool
) -> None:
    published, scored, missed, sessions = _through_broker_restarts(
        tmp_path, topic_prefix, models, restarts=restarts, kill=kill, persistence=True
    )
    print(
        f"\nFIGURE restarts={restarts} kill={kill} published={published} scored={scored} missed={missed}"
        f" sessions_kept={sum(sessions)}/{len(sessions)}"
    )
    assert scored + missed == published
    assert sessions, "the publisher never reconnected"
    assert all(sessions), f"the broker forgot the sessions (persistence): {sessions}"
    if not kill:  # a kill loses what the broker acknowledged since its last save: counted, not zero
        assert missed == 0


def _kill_with_windows_queued(
    tmp_path: Path, topic_prefix: str, models: Models, *, cycles: int, offline: int, offline_s: float
) -> tuple[int, int, int, list[int]]:
    """The broker is SIGKILLed while QoS 1 windows wait in the session of an agent that is stopped.

    Each cycle: the agent online catches up; it stops; the publisher sends `offline` windows over
    `offline_s` seconds (each acknowledged by the broker, so queued for the agent's session); the
    broker is killed (-9) and restarted; the agent starts again and 5 more windows follow, so a loss
    at the end of the queue shows as a jump in seq. The broker starts from its last save: a graceful
    restart before the first cycle, then its `autosave_interval` (30 s in the shipped config).
    Returns (published, scored, missed (every agent run), lost per cycle)."""
    pb = PrivateBroker(tmp_path / "broker")
    pb.start()
    store = tmp_path / "a.db"
    settings = agent_settings(
        pb.broker, topic_prefix, models, store, mqtt_reconnect_min_s=1, mqtt_reconnect_max_s=1
    )
    topic = vibration_topic(topic_prefix, "m", "s0")
    pub = _Publisher(pb.port, f"pub-{topic_prefix[-10:]}")
    published, missed, lost = 0, 0, []

    def online(extra: int, before: Callable[[], None] | None = None) -> int:
        """Start the agent, publish `extra` windows, wait until every window so far is scored or
        counted missed; returns the windows this agent run counted as missed."""
        nonlocal published
        with running(settings) as agent:
            if before is not None:
                before()
                assert agent.link.wait_connected(60)
            pub.wait_connected()
            for info in pub.publish(topic, range(published, published + extra), seed=7):
                info.wait_for_publish(60)
            published += extra
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and agent.tracker.last("m/s0") != (
                published - 1,
                window(published - 1).ts_ns,
            ):
                time.sleep(0.05)
            time.sleep(0.5)  # redeliveries still on their way are dropped as duplicates / stale
            return int(agent.metrics.value("gruwatch_agent_windows_missed_total"))

    def scored() -> int:
        with Store.open(store, budget_bytes=1 << 30) as st:
            return len(set(st.window_seqs("m/s0")))

    try:
        missed += online(10, before=lambda: pb.restart(kill=False))  # the session is on disk now
        for _ in range(cycles):
            before = scored()
            t0 = time.monotonic()
            pub.wait_connected()
            for k in range(offline):  # the agent is offline: every window waits in its session
                for info in pub.publish(topic, range(published, published + 1), seed=7):
                    info.wait_for_publish(30)
                published += 1
                time.sleep(max(0.0, t0 + (k + 1) * offline_s / offline - time.monotonic()))
            pb.restart(kill=True)
            run_missed = online(5)
            missed += run_missed
            lost.append(offline + 5 - (scored() - before))
    finally:
        pub.close()
        pb.stop(kill=True)
    return published, scored(), missed, lost


def test_a_broker_kill_with_windows_queued_for_an_offline_agent_is_counted(
    tmp_path: Path, topic_prefix: str, models: Models
) -> None:
    published, scored, missed, lost = _kill_with_windows_queued(
        tmp_path, topic_prefix, models, cycles=1, offline=20, offline_s=0.0
    )
    print(f"\nFIGURE offline kill cycles=1 published={published} scored={scored} missed={missed} lost={lost}")
    assert scored + missed == published


@pytest.mark.reliability
@pytest.mark.timeout(3000)  # a long run: beyond the suite's 600 s per test
def test_a_broker_kill_with_windows_queued_for_an_offline_agent_long(
    tmp_path: Path, topic_prefix: str, models: Models
) -> None:
    """Windows queued for 40 s, so that one autosave (every 30 s) falls inside each outage."""
    published, scored, missed, lost = _kill_with_windows_queued(
        tmp_path, topic_prefix, models, cycles=3, offline=80, offline_s=40.0
    )
    print(f"\nFIGURE offline kill cycles=3 published={published} scored={scored} missed={missed} lost={lost}")
    assert scored + missed == published


# ----------------------------------------------------------- 5. the disk budget holds at every commit


def _store_bytes(path: Path) -> int:
    """Database + WAL + -shm on disk now (a file SQLite deletes between listing and stat counts 0)."""
    total = 0
    for p in path.parent.glob(path.name + "*"):
        if p.name.endswith(".reserve"):
            continue
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _budget_run(broker: Broker, topic_prefix: str, models: Models, tmp_path: Path, n: int) -> tuple[int, int]:
    """Stream `n` windows (raw samples kept for all) into a 1 MiB store; (largest size seen, budget)."""
    import threading

    store = tmp_path / "a.db"
    settings = agent_settings(
        broker,
        topic_prefix,
        models,
        store,
        store_budget_bytes=1 << 20,
        raw_sample_fraction=1.0,
        batch_max_size=8,
    )
    sub = Subscriber(broker, topic_prefix)
    pub = mqtt_client(broker)
    largest = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            largest[0] = max(largest[0], _store_bytes(store))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    try:
        with running(settings):
            watcher.start()
            topic = vibration_topic(topic_prefix, "m", "s0")
            for k in range(n):
                pub.publish(topic, encode_binary(window(k, seed=6)), qos=1)
            assert sub.wait(lambda: len({h.seq for h in sub.health}) >= n, 120)
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()
        close_client(pub)
        sub.close()
    return largest[0], settings.store_budget_bytes


def test_the_disk_budget_holds_at_every_commit(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path
) -> None:
    largest, budget = _budget_run(broker, topic_prefix, models, tmp_path, 600)  # 6 MB of raw samples
    print(f"\nFIGURE budget={budget} largest={largest} ratio={largest / budget:.2f}")
    assert largest <= budget, f"the store reached {largest} bytes on a {budget}-byte budget"


# ----------------------------------------------------------- 11. no traceback, no silence at start


def test_a_metrics_port_in_use_or_an_impossible_store_is_said_not_a_traceback(
    models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from edge_agent.agent_cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "a.toml"
        config.write_text(
            f'broker = "mqtt://127.0.0.1:1"\nagent_id = "a"\nmodel = "{models.v1}"\n'
            f'trusted_keys = ["{models.pub}"]\nstore = "{tmp_path / "a.db"}"\nmetrics_port = {port}\n'
        )
        assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"metrics_port {port}" in err
    assert "Traceback" not in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config.write_text(
        f'broker = "mqtt://127.0.0.1:1"\nagent_id = "a"\nmodel = "{models.v1}"\n'
        f'trusted_keys = ["{models.pub}"]\nstore = "{blocker / "sub" / "a.db"}"\nmetrics_port = 0\n'
    )
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cannot create" in err
    assert "Traceback" not in err


def test_metrics_listen_on_localhost_by_default_and_say_connected(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path
) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = agent_settings(broker, topic_prefix, models, tmp_path / "a.db", metrics_port=port)
    assert settings.metrics_addr == "127.0.0.1"
    with running(settings) as agent:
        deadline = time.monotonic() + 10
        while agent.metrics.value("gruwatch_agent_connected") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        server = agent.metrics._server
        assert server is not None
        assert server.server_address[0] == "127.0.0.1"
    assert "gruwatch_agent_connected 1.0" in body


# ------------------------------------------------------- 10. delivered only on the broker's own ack


def test_no_message_is_marked_delivered_without_a_broker_ack(
    topic_prefix: str, models: Models, tmp_path: Path
) -> None:
    """Status publishes go through the handle table (their acks never linger), and a stale early ack
    (paho's message ids wrap) no longer completes a later message with the same id."""
    pb = PrivateBroker(tmp_path / "broker")
    pb.start()
    settings = load_settings(
        None, broker=pb.broker.url, prefix=topic_prefix, agent_id="gw", model=models.v1,
        trusted_keys=[models.pub], store=tmp_path / "a.db", mqtt_reconnect_min_s=1, mqtt_reconnect_max_s=1,
    )  # fmt: skip
    link = MqttLink(settings)
    link.start()
    try:
        assert link.wait_connected(10)
        first = link.publish(f"{topic_prefix}/x", b"1", qos=1)
        assert first.wait(10)
        link.set_storage("degraded")  # a status publish, acked by the broker
        deadline = time.monotonic() + 5
        while link._handles and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link._early == {}, "a status ack landed outside the handle table"
        pb.stop()
        deadline = time.monotonic() + 10
        while link.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        nxt = max(first.mid, *[h.mid for h in link._handles.values()], 0) + 2
        for mid in range(first.mid + 1, nxt + 5):
            link._early[mid] = time.monotonic() - 60  # stray acks from long ago with the next ids
        late = link.publish(f"{topic_prefix}/x", b"2", qos=1)  # the broker is down: no ack can come
        time.sleep(0.2)
        assert not late.is_done(), "completed without any ack from the broker"
        pb.start()
        assert late.wait(20), "the broker's real ack never completed it"
    finally:
        link.stop(timeout=1.0)
        pb.stop()
