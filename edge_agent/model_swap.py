"""Model updates for a running agent: bundles from MQTT or from a changed folder, verified off the scoring path.

`ModelSwapper` owns a worker thread. Offers come from two places:

- MQTT: a `pack_bundle` archive published to `{prefix}/_agents/{agent}/model` (`gruwatch agent
  deploy` does it). `ModelLink` (the agent's MQTT link plus this one subscription) hands the
  payload to `offer_archive`; the worker unpacks it under `models_dir` (a new folder per archive,
  named by its sha256) and loads it.
- The served folder changing on disk: the worker polls the file sizes and modification times of
  `watch_path` every `poll_s` seconds and loads the folder once it has stopped changing.

Loading is `edge_agent.bundle.load_bundle`: signature against the trusted keys, digests, card,
feature-spec compatibility, model shapes and the replay of the test vectors. The worker never
touches the scorer: the daemon calls `take()` between two batches and swaps there (atomically for
the scoring loop); on a refusal the old model keeps serving and the daemon publishes the reason on
`.../model/result`. `deploy_bundle` (and `deploy_archive`, for bytes already packed) is the deployer's side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypedDict, Unpack

import numpy as np
import structlog

from edge_agent.bundle import Bundle, load_bundle, pack_bundle, unpack_bundle
from edge_agent.errors import BundleError, DeployError, RequestError
from edge_agent.mqtt_link import MqttLink
from edge_agent.mqtt_request import request_reply
from edge_agent.protocol import model_result_topic, model_topic
from edge_agent.scorer import Scorer
from edge_agent.settings import AgentSettings
from edge_agent.states import StateColumns
from edge_agent.topics import model_force_topic

log = structlog.get_logger("edge_agent.model_swap")

Source = Literal["mqtt", "file"]


@dataclass(frozen=True, slots=True)
class Offer:
    """The outcome of one offered bundle: `bundle` when it passed every check, else `reason`/`detail`."""

    source: Source
    bundle: Bundle | None
    reason: str | None = None  # BundleError.reason (or "busy" / "internal")
    detail: str = ""
    path: Path | None = None  # where the bundle lies on disk (MQTT bundles are unpacked here)

    @property
    def accepted(self) -> bool:
        return self.bundle is not None


def result_payload(offer: Offer, *, serving: str, states: Literal["kept", "reset"] | None = None) -> bytes:
    """The JSON published on `.../model/result` for one offer."""
    doc: dict[str, Any] = {
        "accepted": offer.accepted,
        "source": offer.source,
        "model": offer.bundle.model_version if offer.bundle is not None else None,
        "serving": serving,
    }
    if offer.accepted:
        doc["states"] = states
        doc["key_id"] = offer.bundle.key_id if offer.bundle is not None else None
    else:
        doc["reason"] = offer.reason
        doc["detail"] = offer.detail
    return json.dumps(doc, separators=(",", ":")).encode()


#: Store meta key: the folder of the bundle last deployed over MQTT ("" = the configured one).
DEPLOYED_META_KEY: Final = "deployed_model"


def models_dir(settings: AgentSettings) -> Path:
    """Where bundles received over MQTT are unpacked: beside the store."""
    return settings.store.parent / f"{settings.store.name}.models"


def initial_bundle(settings: AgentSettings, deployed: str | bytes | None) -> Bundle:
    """The bundle to serve at start: the one deployed over MQTT (`deployed`) if it still verifies, else
    `settings.model`; both pass `agent_policy` (no rollback check: the operator chose them)."""
    if isinstance(deployed, bytes):
        deployed = deployed.decode("utf-8", "replace")
    if deployed:
        try:
            bundle = _load_for(settings, deployed)
        except BundleError as exc:
            log.warning("deployed_model_refused", path=deployed, reason=exc.reason, detail=exc.detail)
        else:
            log.info("serving_deployed_model", path=deployed, model=bundle.model_version)
            return bundle
    return _load_for(settings, settings.model)


def _load_for(settings: AgentSettings, path: Path | str) -> Bundle:
    bundle = load_bundle(path, trusted_keys=settings.trusted_keys, allow_unsigned=settings.allow_unsigned)
    agent_policy(bundle, agent_id=settings.agent_id)
    return bundle


def agent_policy(bundle: Bundle, *, agent_id: str, serving_created: str | None = None) -> None:
    """What an agent asks of a bundle beyond `load_bundle`; BundleError otherwise.

    - A signature must verify: one by a key the agent does not trust is refused even with
      allow_unsigned (which admits bundles with no signature at all, and only without trusted keys).
    - The signed card's `agents` list, when present, names this agent.
    - Not older (card `created`) than `serving_created`, the bundle served: no rollback unless forced
      (the caller passes None for a forced offer).
    """
    if bundle.key_id is not None and not bundle.verified:
        raise BundleError(
            "untrusted_key",
            f"signed by key {bundle.key_id}, which this agent cannot verify; a signature that cannot be "
            "checked is always refused: add the signer's .pub to trusted_keys",
        )
    agents = bundle.card.get("agents")
    if agents is not None and agent_id not in agents:
        raise BundleError("wrong_agent", f"the card names agents {agents[:10]}, not {agent_id!r}")
    if serving_created is not None and _when(bundle.card["created"]) < _when(serving_created):
        raise BundleError(
            "rollback",
            f"created {bundle.card['created']}, older than the bundle served (created {serving_created}); "
            "deploy with --force to go back on purpose",
        )


def _when(created: str) -> datetime:
    t = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def carry_states(old: Scorer, new: Scorer) -> set[str]:
    """Give `new` what of `old`'s sensor states still holds; returns the sensors whose hidden state
    starts afresh (all of them when the state shapes differ, else none).

    Healthy baselines carry over whenever the feature spec is the same (they belong to the bearings,
    not to the model); under another spec every sensor learns its baseline again.
    """
    cols = old.export_states().with_model(new.model_version)
    same_spec = old.spec.to_dict() == new.spec.to_dict()
    baseline = cols.baseline if same_spec and new.table.baseline_width else None
    if new.state_shape == old.state_shape:
        new.import_states(dataclasses.replace(cols, baseline=baseline))
        return set()
    if baseline is not None and len(cols):  # fresh hidden and alarm states, the same baselines
        fresh = StateColumns.of(new.model_version, new.state_shape, {})
        n = len(cols)
        new.import_states(
            dataclasses.replace(
                fresh,
                sensors=list(cols.sensors),
                h=np.zeros((n, *new.state_shape), np.float32),
                alarm=np.zeros(n, np.int8),
                above=np.zeros((n, 2), np.int32),
                below=np.zeros((n, 2), np.int32),
                steps=np.zeros(n, np.int64),
                baseline=baseline,
            )
        )
    return set(cols.sensors)


Fingerprint = tuple[tuple[str, int, int, int, int], ...]


def _fingerprint(path: Path) -> Fingerprint | None:
    """(name, size, mtime, ctime, inode) of every file in the folder, or None when it is not a folder.

    ctime is in it because copies that keep the source's mtime (cp -p, shutil.copy2) still change it.
    """
    try:
        out = []
        for p in path.iterdir():
            st = p.stat()
            if p.is_file():
                out.append((p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        return tuple(sorted(out))
    except OSError:
        return None


class ModelSwapper:
    """Verifies offered bundles on a worker thread; the daemon collects the outcomes with `take()`.

    The constructor only stores its arguments; `start()` starts the worker.
    """

    def __init__(
        self,
        *,
        trusted_keys: Sequence[Path | str],
        allow_unsigned: bool,
        models_dir: Path,
        watch_path: Path | None = None,
        poll_s: float = 2.0,
        max_pending: int = 4,
        agent_id: str = "",
    ) -> None:
        self.trusted_keys = list(trusted_keys)
        self.allow_unsigned = allow_unsigned
        self.agent_id = agent_id
        #: `created` of the bundle served (set by the daemon): an older offer is a rollback.
        self.serving_created: str | None = None
        self.models_dir = models_dir
        self.watch_path = watch_path
        self.poll_s = poll_s
        self._inbox: queue.Queue[tuple[bytes, bool]] = queue.Queue(max_pending)
        self._outbox: queue.Queue[Offer] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: Fingerprint | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.watch_path is not None:
            self._seen = _fingerprint(self.watch_path)
        self._thread = threading.Thread(target=self._work, name="gruwatch-model-swap", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def offer_archive(self, payload: bytes, *, force: bool = False) -> None:
        """Queue a packed bundle for verification (any thread; never blocks). `force`: even if older."""
        try:
            self._inbox.put_nowait((bytes(payload), force))
        except queue.Full:
            self._outbox.put(
                Offer("mqtt", None, "busy", "too many bundles waiting for verification; send it again later")
            )

    def take(self) -> list[Offer]:
        """The outcomes verified since the last call, oldest first (never blocks)."""
        out: list[Offer] = []
        while True:
            try:
                out.append(self._outbox.get_nowait())
            except queue.Empty:
                return out

    def load(self, path: Path, source: Source, *, force: bool = False) -> Offer:
        """Verify one bundle folder now (in the calling thread), with the agent's policy (`agent_policy`)."""
        try:
            bundle = load_bundle(path, trusted_keys=self.trusted_keys, allow_unsigned=self.allow_unsigned)
            serving = None if force or source == "file" else self.serving_created
            agent_policy(bundle, agent_id=self.agent_id, serving_created=serving)
        except BundleError as exc:
            return Offer(source, None, exc.reason, exc.detail, path)
        except Exception as exc:  # a bug or an OS error must not kill the worker
            return Offer(source, None, "internal", f"{type(exc).__name__}: {exc}", path)
        return Offer(source, bundle, path=path)

    def _unpack_and_load(self, payload: bytes, force: bool = False) -> Offer:
        digest = hashlib.sha256(payload).hexdigest()[:16]
        dest = self.models_dir / f"bundle-{digest}"
        if dest.exists():  # the same archive again (perhaps the one serving): check it where it lies
            offer = self.load(dest, "mqtt", force=force)
            if offer.accepted or offer.reason in ("rollback", "wrong_agent", "untrusted_key"):
                return offer
            shutil.rmtree(dest, ignore_errors=True)  # damaged on disk: unpack it afresh
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            unpack_bundle(payload, dest)
        except BundleError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            return Offer("mqtt", None, exc.reason, exc.detail)
        except OSError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            return Offer("mqtt", None, "internal", f"cannot unpack under {self.models_dir}: {exc}")
        offer = self.load(dest, "mqtt", force=force)
        if not offer.accepted:
            shutil.rmtree(dest, ignore_errors=True)
        return offer

    def prune(self, keep: Path | None) -> int:
        """Delete unpacked bundles other than `keep` (the one serving); returns the bytes left."""
        left = 0
        if not self.models_dir.is_dir():
            return 0
        for d in self.models_dir.iterdir():
            if keep is not None and d.resolve() == keep.resolve():
                left += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            else:
                shutil.rmtree(d, ignore_errors=True)
        return left

    def _work(self) -> None:
        next_poll = time.monotonic() + self.poll_s
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=min(0.2, self.poll_s))
            except queue.Empty:
                item = None
            if item is not None:
                self._outbox.put(self._unpack_and_load(*item))
            if self.watch_path is not None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_s
                self._poll_folder(self.watch_path)

    def _poll_folder(self, path: Path) -> None:
        now = _fingerprint(path)
        if now is None or now == self._seen:
            return
        time.sleep(min(0.2, self.poll_s))  # let a copy in progress settle
        if _fingerprint(path) != now:
            return  # still changing: look again next poll
        self._seen = now
        self._outbox.put(self.load(path, "file"))


class ModelLink(MqttLink):
    """The agent's MQTT link, also subscribed to `{prefix}/_agents/{agent}/model`.

    Model payloads go to `on_model(payload)` (through `MqttLink.add_subscription`) and are
    acknowledged at once; everything else is the plain `MqttLink`.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        on_model: Callable[..., None],
        model_version: str = "",
        thresholds: tuple[float, float] | None = None,
        queue_max_size: int | None = None,
    ) -> None:
        super().__init__(
            settings, model_version=model_version, thresholds=thresholds, queue_max_size=queue_max_size
        )
        self.on_model = on_model
        self.model_topic = model_topic(settings.prefix, settings.agent_id)
        self.result_topic = model_result_topic(settings.prefix, settings.agent_id)
        self.force_topic = model_force_topic(settings.prefix, settings.agent_id)
        self.add_subscription(self.model_topic, lambda payload: self.on_model(payload), qos=1)
        self.add_subscription(self.force_topic, lambda payload: self.on_model(payload, force=True), qos=1)

    @property
    def models_received(self) -> int:
        """Bundles received on the model topics so far."""
        return self.received_on(self.model_topic) + self.received_on(self.force_topic)


# ------------------------------------------------------------------------------------- deployer side


class DeployOptions(TypedDict, total=False):
    """`deploy_archive`'s optional settings, which `deploy_bundle` passes on as they are."""

    prefix: str
    timeout_s: float
    username: str | None
    password: str | None
    ca_file: str | None
    force: bool
    cert_file: str | None
    key_file: str | None


def deploy_bundle(
    bundle_dir: Path | str, *, broker: str, agent: str, **options: Unpack[DeployOptions]
) -> dict[str, Any]:
    """Publish a packed bundle to an agent's model topic and wait for its JSON answer on `.../model/result`.

    `force` sends it to `.../model/force`: accepted even when older than the bundle served (a
    deliberate rollback). Raises DeployError when the broker is unreachable or no answer comes
    within `timeout_s`. The options are `deploy_archive`'s.
    """
    return deploy_archive(pack_bundle(bundle_dir), broker=broker, agent=agent, **options)


def deploy_archive(
    payload: bytes,
    *,
    broker: str,
    agent: str,
    prefix: str = "gruwatch",
    timeout_s: float = 30.0,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    force: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> dict[str, Any]:
    """`deploy_bundle` for an archive already packed (any bytes: the agent checks them)."""
    topic = (model_force_topic if force else model_topic)(prefix, agent)
    result_topic = model_result_topic(prefix, agent)
    try:
        answer = request_reply(
            broker,
            topic,
            payload,
            result_topic,
            timeout_s=timeout_s,
            accept=_is_json_object,
            username=username,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            client_prefix="gruwatch-deploy",
        )
    except RequestError as exc:
        if exc.stage == "answer":
            raise DeployError(
                f"no answer on {result_topic} within {timeout_s} s: is agent {agent!r} running with "
                f"prefix {prefix!r}? (it picks the bundle up when it next connects)"
            ) from None
        if exc.stage == "publish":
            raise DeployError(
                f"the broker did not acknowledge the bundle on {topic} within {timeout_s} s"
            ) from None
        raise DeployError(str(exc)) from exc
    doc: dict[str, Any] = json.loads(answer)
    return doc


def _is_json_object(payload: bytes) -> bool:
    try:
        return isinstance(json.loads(payload), dict)
    except ValueError:
        return False
