"""The step-wise scorer: one GRU step per window per sensor, many sensors per onnxruntime call.

`Scorer` is the scoring core the agent's daemon and the trainer's evaluation share (river's
`score_one` / `score_many`). It has no I/O: windows or features in, scores and alarm states out.
Each sensor's hidden state lives in one bounded `StateTable` (rows = sensors), is advanced exactly
once per window in the order given, and is created fresh on first sight. A sensor appearing more
than once in a batch is stepped once per appearance, in order, by splitting the batch into passes.

>>> scorer = Scorer.from_bundle("bundle/", trusted_keys=["keys/signing.pub"])   # doctest: +SKIP
>>> batch = scorer.score_many(["m1-s0", "m2-s0"], [window_a, window_b])          # doctest: +SKIP
>>> batch.health, batch.states                                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from edge_agent import alarms, baseline
from edge_agent.alarms import STATE_NAMES, AlarmState, Thresholds, Transition
from edge_agent.bundle import Bundle, load_bundle
from edge_agent.errors import FeatureError, ProtocolError
from edge_agent.features import FeatureSpec, extract_batch
from edge_agent.protocol import Window
from edge_agent.states import StateColumns, StateTable

log = structlog.get_logger("edge_agent.scorer")

DEFAULT_MAX_SENSORS = 10_000
#: Windows per feature-extraction call. extract_batch works in cache-sized blocks itself, so a slice
#: bounds only its float64 copy of the input (20 KB per window): 256 windows = 5 MB.
FEATURE_SLICE = 256
_STATE_ARRAY = np.array(STATE_NAMES, dtype=object)


@dataclass(frozen=True, slots=True)
class Score:
    """One window's result."""

    sensor_id: str
    scores: npt.NDArray[np.float32]  # [K], named by Scorer.outputs
    health: float
    state: str
    transition: Transition | None
    step: int  # how many windows this sensor's state has now seen (1 = first after a fresh state)


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """Results for a batch, in input order. `transitions`: batch index -> change (changed windows only)."""

    sensor_ids: tuple[str, ...]
    scores: npt.NDArray[np.float32]  # [B, K]
    health: npt.NDArray[np.float32]  # [B] = scores[:, 0]
    states: list[str]
    steps: npt.NDArray[np.int64]  # [B]
    transitions: dict[int, Transition] = field(default_factory=dict)
    #: [B] True where the model gave a non-finite score or state: that sensor was reset after it.
    nonfinite: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.sensor_ids)

    def item(self, i: int) -> Score:
        tr = self.transitions.get(i)
        return Score(
            self.sensor_ids[i],
            self.scores[i].copy(),
            float(self.health[i]),
            self.states[i],
            tr,
            int(self.steps[i]),
        )


def _passes(sensor_ids: Sequence[str]) -> list[list[int]]:
    """Split batch positions into passes with distinct ids; the k-th appearance of an id is in pass k."""
    seen: dict[str, int] = defaultdict(int)
    passes: list[list[int]] = []
    for i, sid in enumerate(sensor_ids):
        k = seen[sid]
        seen[sid] = k + 1
        if k == len(passes):
            passes.append([])
        passes[k].append(i)
    return passes


class Scorer:
    """Steps a one-step GRU ONNX model per sensor and runs the alarm state machine.

    The constructor only stores its arguments; build one with `Scorer.from_bundle(path)` (which
    validates the bundle) or `Scorer.from_loaded(bundle)`.
    """

    def __init__(
        self,
        session: Any,
        *,
        spec: FeatureSpec,
        state_shape: tuple[int, int],
        outputs: Sequence[str],
        thresholds: Thresholds,
        model_version: str,
        max_sensors: int = DEFAULT_MAX_SENSORS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.session = session
        self.spec = spec
        self.state_shape = (int(state_shape[0]), int(state_shape[1]))
        self.outputs = tuple(outputs)
        self.thresholds = thresholds
        self.model_version = model_version
        self.max_sensors = max_sensors
        #: One row per tracked sensor (hidden state, alarm state and counters, steps).
        #: With a per-sensor healthy baseline (spec v2, edge_agent.baseline) its state shares the row.
        width = baseline.state_size(spec.n_features) if spec.baseline is not None else 0
        self.table = (
            StateTable(self.state_shape, capacity=max_sensors, baseline_width=width)
            if clock is None
            else StateTable(self.state_shape, capacity=max_sensors, clock=clock, baseline_width=width)
        )

    @classmethod
    def from_loaded(
        cls,
        bundle: Bundle,
        *,
        max_sensors: int = DEFAULT_MAX_SENSORS,
        clock: Callable[[], float] | None = None,
    ) -> Scorer:
        """A scorer over an already validated bundle."""
        return cls(
            bundle.session,
            spec=bundle.spec,
            state_shape=bundle.state_shape,
            outputs=bundle.outputs,
            thresholds=bundle.thresholds,
            model_version=bundle.model_version,
            max_sensors=max_sensors,
            clock=clock,
        )

    @classmethod
    def from_bundle(
        cls,
        path: Path | str,
        *,
        trusted_keys: Sequence[Path | str] = (),
        allow_unsigned: bool = False,
        max_sensors: int = DEFAULT_MAX_SENSORS,
        clock: Callable[[], float] | None = None,
    ) -> Scorer:
        """Load and validate a bundle (edge_agent.bundle.load_bundle; BundleError on refusal)."""
        bundle = load_bundle(path, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned)
        return cls.from_loaded(bundle, max_sensors=max_sensors, clock=clock)

    # ------------------------------------------------------------------------------------ state

    @property
    def n_features(self) -> int:
        return int(self.spec.n_features)

    @property
    def n_tracked(self) -> int:
        """How many sensors have a state."""
        return len(self.table)

    def reset(self, sensor_id: str) -> bool:
        """Start a sensor's hidden and alarm state afresh (a gap, a restarted sequence, a non-finite
        output); its healthy baseline stays, it belongs to the bearing. True if it was tracked."""
        return self.table.reset(sensor_id)

    def forget(self, sensor_id: str) -> bool:
        """Forget all of a sensor's state, healthy baseline included (a bearing replaced: it relearns
        the baseline from its next windows). True if it was tracked."""
        return self.table.discard(sensor_id)

    def state_of(self, sensor_id: str) -> str:
        """The alarm state of a sensor ("ok" for one never seen)."""
        if sensor_id not in self.table:
            return "ok"
        return STATE_NAMES[int(self.table.data["alarm"][self.table.row(sensor_id)])]

    def export_states(self) -> StateColumns:
        """Every sensor's state (hidden state, alarm state and counters), tagged with the model version."""
        return self.table.export(self.model_version)

    def import_states(self, exported: StateColumns) -> int:
        """Replace all states with an `export_states()`; returns how many sensors it holds.

        ValueError when the states come from another model version or state shape: hidden states
        of one model mean nothing to another, so the caller should start from fresh states.
        """
        if exported.model_version != self.model_version:
            raise ValueError(
                f"saved states belong to model {exported.model_version!r}, this scorer runs "
                f"{self.model_version!r}; start from fresh states"
            )
        self.table.restore(exported)
        return len(self.table)

    # ---------------------------------------------------------------------------------- scoring

    def score_features(
        self,
        sensor_ids: Sequence[str],
        features: npt.ArrayLike,
        *,
        seqs: Sequence[int] | None = None,
        ts_ns: Sequence[int] | None = None,
    ) -> ScoreBatch:
        """Step each sensor once per row of `features` [B, F] (float32; not modified), in order.

        `seqs` / `ts_ns` (per row) only label the transitions; without them a transition's seq is
        the sensor's step count and its ts_ns 0.
        """
        ids = list(sensor_ids)
        x = np.array(features, dtype=np.float32, copy=True, order="C")
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"features must be [B, {self.n_features}], got shape {x.shape}")
        if x.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} sensor ids for {x.shape[0]} feature rows")
        if not np.isfinite(x).all():
            raise ValueError("features hold NaN or infinity")
        B, K = len(ids), len(self.outputs)
        scores = np.empty((B, K), dtype=np.float32)
        states = np.empty(B, dtype=np.int8)
        previous = np.empty(B, dtype=np.int8)
        steps = np.empty(B, dtype=np.int64)
        if B == 0:
            return ScoreBatch((), scores, scores[:, 0].copy(), [], np.zeros(0, np.int64), {})
        bad = np.zeros(B, dtype=bool)
        if len(set(ids)) == B:  # the usual case: one pass, no index shuffling
            self._step(ids, x, slice(None), scores, states, previous, steps, bad)
        else:
            for positions in _passes(ids):
                pos = np.asarray(positions, dtype=np.intp)
                self._step([ids[i] for i in positions], x[pos], pos, scores, states, previous, steps, bad)
        changed = np.flatnonzero(states != previous)
        transitions = {
            int(i): self._transition(
                ids[i],
                int(seqs[i]) if seqs is not None else int(steps[i]),
                int(ts_ns[i]) if ts_ns is not None else 0,
                previous[i],
                states[i],
                scores[i, 0],
            )
            for i in changed.tolist()
        }
        return ScoreBatch(
            sensor_ids=tuple(ids),
            scores=scores,
            health=scores[:, 0].copy(),
            states=_STATE_ARRAY[states].tolist(),
            steps=steps,
            transitions=transitions,
            nonfinite=bad,
        )

    def _step(
        self,
        ids: list[str],
        x: npt.NDArray[np.float32],
        pos: npt.NDArray[np.intp] | slice,
        scores: npt.NDArray[np.float32],
        states: npt.NDArray[np.int8],
        previous: npt.NDArray[np.int8],
        steps: npt.NDArray[np.int64],
        bad: npt.NDArray[np.bool_],
    ) -> None:
        table = self.table
        rows = table.rows_for(ids)
        if self.spec.baseline is not None:  # features -> deviations from each sensor's own baseline
            x = self._baseline_step(ids, rows, x)
        h = table.gather_h(rows)
        score, h_out = self.session.run(["score", "h_out"], {"features": x, "h": h})
        table.scatter_h(rows, h_out)
        data = table.data
        st = AlarmState(data["alarm"][rows], data["above"][rows], data["below"][rows])
        prev, new = alarms.step(st, score[:, 0], self.thresholds)
        data["alarm"][rows] = new
        data["above"][rows] = st.above
        data["below"][rows] = st.below
        n = data["steps"][rows] + 1
        data["steps"][rows] = n
        scores[pos] = score
        states[pos] = new
        previous[pos] = prev
        steps[pos] = n
        poisoned = ~(np.isfinite(score).all(axis=1) & np.isfinite(h_out).all(axis=(0, 2)))
        if poisoned.any():
            # A non-finite state would poison every later window of the sensor: start it afresh
            # (its next window, in this batch or a later one, steps from a zero state).
            bad[pos] = poisoned
            for j in np.flatnonzero(poisoned).tolist():
                table.reset(ids[j])

    def _baseline_step(
        self, ids: list[str], rows: npt.NDArray[np.intp], x: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Advance the sensors' baselines; say so when one completes above the healthy ceiling."""
        spec, data = self.spec.baseline, self.table.data
        assert spec is not None
        was = baseline.ready(spec, data["baseline"][rows])
        y, data["baseline"][rows] = baseline.step(spec, data["baseline"][rows], x)
        if spec.mean_ceiling is not None:
            new = data["baseline"][rows]
            for j in np.flatnonzero(baseline.suspect(spec, new) & ~was).tolist():
                # Installed on an already failing bearing? It is measured against the ceiling instead.
                log.warning("baseline_suspect", sensor=ids[j], model=self.model_version)
        return y

    def _transition(
        self, sid: str, seq: int, ts_ns: int, prev: np.int8, new: np.int8, score: np.float32
    ) -> Transition:
        t = self.thresholds
        before, after = STATE_NAMES[int(prev)], STATE_NAMES[int(new)]
        if new > prev:
            limit = t.alarm if int(new) == alarms.ALARM else t.warning
            reason = f"health {float(score):.3f} >= {after} threshold {limit:g} for {t.raise_windows} windows"
        else:
            limit = t.warning if int(new) == alarms.OK else t.alarm
            reason = f"health < {limit:g} for {t.clear_windows} windows (now {float(score):.3f})"
        return Transition(sid, seq, ts_ns, before, after, float(score), self.model_version, reason)

    def features_of(self, windows: Sequence[Window]) -> npt.NDArray[np.float32]:
        """Features [N, F] of windows with the bundle's spec, batched per (sample rate, length)."""
        n = len(windows)
        out = np.empty((n, self.n_features), dtype=np.float32)
        groups: dict[tuple[float, int], list[int]] = defaultdict(list)
        for i, w in enumerate(windows):
            groups[(float(w.fs), int(np.asarray(w.samples).shape[-1]))].append(i)
        for (fs, _length), idx in groups.items():
            block = np.stack([np.asarray(windows[i].samples, dtype=np.float32) for i in idx])
            rpm = np.array([float(windows[i].rpm) for i in idx], dtype=np.float64)
            out[idx] = extract_batch(block, fs, rpm, self.spec)
        return out

    def usable_features(
        self, windows: Sequence[Window]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Features [N, F] of windows and which rows are usable (computable and finite); never raises
        for a bad window: the culprits are found one by one and the others computed as usual."""
        try:
            feats = np.concatenate(
                [
                    self.features_of(windows[i : i + FEATURE_SLICE])
                    for i in range(0, len(windows), FEATURE_SLICE)
                ]
            )
        except (ProtocolError, FeatureError, ValueError):
            feats = np.zeros((len(windows), self.n_features), dtype=np.float32)
            ok = np.ones(len(windows), dtype=bool)
            for i, w in enumerate(windows):
                try:
                    feats[i] = self.features_of([w])[0]
                except (ProtocolError, FeatureError, ValueError) as exc:
                    ok[i] = False
                    log.debug("features_failed", seq=w.seq, error=str(exc))
            return feats, np.asarray(ok & np.isfinite(feats).all(axis=1), dtype=bool)
        return feats, np.asarray(np.isfinite(feats).all(axis=1), dtype=bool)

    def score_windows(self, sensor_ids: Sequence[str], windows: Sequence[Window]) -> ScoreBatch:
        """Features from windows (edge_agent.features), then `score_features`. Windows are not modified."""
        if len(sensor_ids) != len(windows):
            raise ValueError(f"{len(sensor_ids)} sensor ids for {len(windows)} windows")
        return self.score_features(
            sensor_ids,
            self.features_of(windows),
            seqs=[w.seq for w in windows],
            ts_ns=[w.ts_ns for w in windows],
        )

    def score_many(self, sensor_ids: Sequence[str], windows: Sequence[Window]) -> ScoreBatch:
        """Alias of `score_windows` (river's naming)."""
        return self.score_windows(sensor_ids, windows)

    def score_one(self, sensor_id: str, window: Window) -> Score:
        """One window of one sensor."""
        return self.score_windows([sensor_id], [window]).item(0)
