"""The reset-baseline command over MQTT: the agent's inbox and checks, its answer, the operator's side.

An operator (`gruwatch agent reset-baseline`) publishes a signed command (edge_agent.baseline_command)
to `{prefix}/_agents/{agent}/reset-baseline`; the agent's link hands it to `ResetInbox.offer` on the
network thread, and the daemon takes and checks it between two batches (`ResetInbox.take`): the
signature by a trusted key, as for a model bundle, its age and its nonce (nonces are kept in the
store, so a replay is refused across a restart too). The daemon then forgets the sensor's state,
baseline included, replaces its retained alert by an "ok" one (`cleared_alert`) and answers on
`.../reset-baseline/result` with `answer_payload`.
"""

from __future__ import annotations

import json
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from edge_agent.alarms import Transition
from edge_agent.baseline_command import (
    COMMAND,
    MAX_AGE_S,
    CommandError,
    ResetCommand,
    sign_reset,
    verify_reset,
)
from edge_agent.errors import GruwatchError, RequestError
from edge_agent.messages import alert_message
from edge_agent.mqtt_request import request_reply
from edge_agent.signing import load_private_key, load_public_keys
from edge_agent.topics import reset_result_topic, reset_topic, validate_id

if TYPE_CHECKING:
    from edge_agent.metrics import AgentMetrics
    from edge_agent.mqtt_link import MqttLink
    from edge_agent.settings import AgentSettings
    from edge_agent.store import OutboxMessage

log = structlog.get_logger("edge_agent.baseline_reset")

#: Store meta key: nonces of the commands executed within MAX_AGE_S (JSON {nonce: issued_at}).
NONCES_META_KEY: Final = "reset_baseline_nonces"
MAX_PENDING: Final = 16


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """One received command: `command` when it passed every check, else `reason` and `detail`."""

    command: ResetCommand | None
    reason: str = ""
    detail: str = ""
    nonce: str = ""


class ResetInbox:
    """Commands received on the link's thread, checked on the daemon's with `take`, answered with `answer`.

    Subscribes itself on `link`. `get_meta` / `set_meta` read and write the store's meta table (the
    nonces of executed commands); every outcome is counted in `metrics.commands`.
    """

    def __init__(
        self,
        settings: AgentSettings,
        link: MqttLink,
        metrics: AgentMetrics,
        *,
        get_meta: Callable[[str], str | bytes | None],
        set_meta: Callable[[str, str], None],
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.trusted_keys: list[Path] = list(settings.trusted_keys)
        self.allow_unsigned = settings.allow_unsigned
        self.link, self.metrics = link, metrics
        self.get_meta = get_meta
        self.set_meta = set_meta
        self.refused: Counter[str] = Counter()  # by reason
        self.accepted = 0
        self.answer_topic = reset_result_topic(settings.prefix, settings.agent_id)
        self._queue: queue.Queue[bytes] = queue.Queue(max_pending)
        self._busy = 0
        link.add_subscription(reset_topic(settings.prefix, settings.agent_id), self.offer)

    def offer(self, payload: bytes) -> None:
        """Queue a received payload (any thread; never blocks: beyond `max_pending` it is refused)."""
        try:
            self._queue.put_nowait(bytes(payload))
        except queue.Full:
            self._busy += 1

    def take(self, now: float | None = None) -> list[ResetOutcome]:
        """Check every command received since the last call, oldest first."""
        out: list[ResetOutcome] = []
        busy, self._busy = self._busy, 0
        out.extend(
            ResetOutcome(None, "busy", "too many commands at once; send it again") for _ in range(busy)
        )
        while True:
            try:
                payload = self._queue.get_nowait()
            except queue.Empty:
                break
            out.append(self._check(payload, time.time() if now is None else now))
        for o in out:
            if o.command is None:
                self.refused[o.reason] += 1
                log.warning("command_refused", command=COMMAND, reason=o.reason, detail=o.detail)
            else:
                self.accepted += 1
            result = "accepted" if o.command is not None else o.reason
            self.metrics.commands.labels(command=COMMAND, result=result).inc()
        return out

    def answer(self, outcome: ResetOutcome, *, tracked: bool = False) -> None:
        """Publish the answer to one command on `.../reset-baseline/result` (when connected)."""
        if self.link.connected:
            self.link.publish(self.answer_topic, answer_payload(outcome, tracked=tracked), qos=1)

    def _check(self, payload: bytes, now: float) -> ResetOutcome:
        nonce = _nonce_of(payload)
        try:
            trusted = load_public_keys(self.trusted_keys)
            seen = self._nonces(now)
            command = verify_reset(
                payload, trusted, now=now, seen_nonces=set(seen), allow_unsigned=self.allow_unsigned
            )
        except CommandError as exc:
            return ResetOutcome(None, exc.reason, exc.detail, nonce)
        except GruwatchError as exc:  # a trusted key that cannot be read
            return ResetOutcome(None, exc.reason, str(exc), nonce)
        seen[command.nonce] = command.issued_at
        self.set_meta(NONCES_META_KEY, json.dumps(seen, separators=(",", ":")))
        return ResetOutcome(command, nonce=command.nonce)

    def _nonces(self, now: float) -> dict[str, float]:
        """Nonces executed recently enough that their command is not yet refused as stale."""
        raw = self.get_meta(NONCES_META_KEY)
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            return {}
        return {
            str(k): float(v)
            for k, v in doc.items()
            if isinstance(v, int | float) and abs(now - float(v)) <= MAX_AGE_S
        }


RESET_REASON: Final = "baseline reset: bearing replaced, relearning the healthy baseline"


def cleared_alert(
    topic: str, c: ResetCommand, key: str, last: tuple[int, int] | None, before: str, model: str
) -> tuple[Transition, OutboxMessage]:
    """The retained "ok" alert of a reset sensor, so the old bearing's alarm does not stay on the new
    one: previous_state = its state before the reset ("ok" if untracked), seq = its last, score 0."""
    seq = last[0] if last is not None else 0
    tr = Transition(key, seq, time.time_ns(), before, "ok", 0.0, model, RESET_REASON)
    return tr, alert_message(topic, c.machine, c.sensor, tr)


def answer_payload(outcome: ResetOutcome, *, tracked: bool = False) -> bytes:
    """The JSON published on `.../reset-baseline/result` for one command."""
    c = outcome.command
    doc: dict[str, Any] = {"accepted": c is not None, "nonce": outcome.nonce}
    if c is not None:
        doc.update(machine=c.machine, sensor=c.sensor, key_id=c.key_id, tracked=tracked)
    else:
        doc.update(reason=outcome.reason, detail=outcome.detail)
    return json.dumps(doc, separators=(",", ":")).encode()


def _nonce_of(payload: bytes) -> str:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return ""
    nonce = doc.get("nonce") if isinstance(doc, dict) else None
    return nonce if isinstance(nonce, str) else ""


# ------------------------------------------------------------------------------------- operator side


def send_reset(
    *,
    broker: str,
    agent: str,
    machine: str,
    sensor: str,
    signing_key: Path | str,
    prefix: str = "gruwatch",
    timeout_s: float = 30.0,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> dict[str, Any]:
    """Sign a reset command for `machine/sensor`, publish it to `agent` and return its JSON answer.

    Raises CommandError when the broker cannot be reached or no answer comes within `timeout_s`.
    """
    payload = sign_reset(validate_id(machine), validate_id(sensor), load_private_key(signing_key))
    nonce = json.loads(payload)["nonce"]
    topic, answer_topic = reset_topic(prefix, agent), reset_result_topic(prefix, agent)
    try:
        answer = request_reply(
            broker,
            topic,
            payload,
            answer_topic,
            timeout_s=timeout_s,
            accept=lambda p: _nonce_of(p) == nonce,
            username=username,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            client_prefix="gruwatch-reset",
        )
    except RequestError as exc:
        if exc.stage == "answer":
            raise CommandError(
                "no_answer",
                f"no answer on {answer_topic} within {timeout_s:g} s: is agent {agent!r} running with "
                f"prefix {prefix!r}?",
            ) from None
        raise CommandError(exc.reason, str(exc)) from exc
    doc: dict[str, Any] = json.loads(answer)
    return doc
