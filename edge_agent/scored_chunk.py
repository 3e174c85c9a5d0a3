"""One scored chunk of windows turned into what the daemon commits and publishes.

`compose` builds the window rows (with the raw samples the retention policy keeps), the alarm-state
transitions and the alert and health messages of a chunk the scorer has scored. It touches no store
and no link: the daemon counts what it reports, commits it in one transaction and publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_agent.link_records import Inbound
from edge_agent.messages import (
    HealthEncoder,
    SensorTopics,
    alert_message,
    health_batch_message,
    health_extra,
    health_message,
)
from edge_agent.raw_ring import RawBatch
from edge_agent.scorer import ScoreBatch
from edge_agent.sequencing import Accepted, PendingResets
from edge_agent.store import OutboxMessage, Transition, WindowRow


@dataclass(frozen=True, slots=True)
class Wiring:
    """What composing needs of the agent besides the chunk: model, topics, encoder, health options."""

    model: str
    outputs: tuple[str, ...]
    encoder: HealthEncoder
    topics: SensorTopics
    health_qos: int = 1
    #: The agent's health topic and id when the batch's health goes out as one message (`health_batch`).
    batch_topic: str | None = None
    agent_id: str = ""


@dataclass(slots=True)
class Composed:
    """A chunk's rows and messages; `outbox` holds the alerts first, then the health messages."""

    rows: list[WindowRow] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    names: list[tuple[str, str]] = field(default_factory=list)  # (machine, sensor) of each transition
    outbox: list[OutboxMessage] = field(default_factory=list)
    bad_scores: int = 0  # windows with a non-finite score: not stored, not published
    nonfinite: list[tuple[str, int]] = field(default_factory=list)  # (sensor, seq) reset after such a score


def compose(
    chunk: list[Accepted[Inbound]],
    feats: npt.NDArray[np.float32],
    result: ScoreBatch,
    wiring: Wiring,
    raw: RawBatch,
    pending: PendingResets,
) -> Composed:
    """Rows, transitions and messages of a scored chunk, window by window in order.

    A sensor the scorer reset after a non-finite output is marked in `pending` at once, so that its
    next window (in this chunk or a later one) says `state_reset: nonfinite`.
    """
    out = Composed()
    finite = np.asarray(np.isfinite(result.scores).all(axis=1), dtype=bool)
    health_all = np.clip(result.health.astype(np.float64), 0.0, 1.0).tolist()
    steps_all = result.steps.tolist()
    extras = result.scores[:, 1:].astype(np.float64).tolist() if len(wiring.outputs) > 1 else None
    alerts: list[OutboxMessage] = []
    healths: list[OutboxMessage] = []
    kept: list[int] = []
    for i, p in enumerate(chunk):
        it, w = p.item, p.item.window
        if not finite[i]:
            out.bad_scores += 1
            _reset_after_nonfinite(out, pending, it.key, w.seq, result.nonfinite[i])
            continue
        kept.append(i)
        health, state, tr = health_all[i], result.states[i], result.transitions.get(i)
        extra = health_extra(
            wiring.outputs,
            extras[i] if extras is not None else None,
            step=steps_all[i],
            reset_cause=pending.cause_of(p),
            gap_s=p.verdict.gap_s,
            missed=p.verdict.missed,
        )
        _reset_after_nonfinite(out, pending, it.key, w.seq, result.nonfinite[i])
        topics = wiring.topics.of(it.key, it.machine, it.sensor)
        healths.append(
            health_message(
                topics, wiring.encoder, w.seq, w.ts_ns, health, state, extra, qos=wiring.health_qos
            )
        )
        raw.add(it.key, w.seq, state, tr is not None, np.asarray(w.samples, dtype=np.float32))
        if tr is not None:
            tr = Transition(
                it.key, w.seq, w.ts_ns, tr.previous_state, tr.state, health, wiring.model, tr.reason
            )
            alerts.append(alert_message(topics[1], it.machine, it.sensor, tr))
            out.transitions.append(tr)
            out.names.append((it.machine, it.sensor))
    # After the loop: a change stores the raw samples of the windows just before it (RawBatch.add).
    out.rows = [window_row(chunk[i].item, feats[i], health_all[i], result.states[i], wiring.model, raw.raw[j])
                for j, i in enumerate(kept)]  # fmt: skip
    if wiring.batch_topic is not None and healths:
        healths = [health_batch_message(wiring.batch_topic, wiring.agent_id, healths, qos=wiring.health_qos)]
    out.outbox = alerts + healths
    return out


def _reset_after_nonfinite(out: Composed, pending: PendingResets, key: str, seq: int, reset: bool) -> None:
    """The scorer reset a sensor after a non-finite output: its next window says so."""
    if reset:
        pending.mark([key], "nonfinite")
        out.nonfinite.append((key, seq))


def window_row(
    item: Inbound,
    features: npt.NDArray[np.float32],
    score: float,
    state: str,
    model: str,
    raw: npt.NDArray[np.float32] | None,
) -> WindowRow:
    """The stored row of one scored window."""
    w = item.window
    return WindowRow(
        sensor=item.key, seq=w.seq, ts_ns=w.ts_ns, features=features, score=score, state=state,
        model=model, fs=w.fs, rpm=w.rpm, raw=raw,
    )  # fmt: skip
