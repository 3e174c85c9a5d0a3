"""Per-sensor healthy baseline: features normalised against the sensor's own healthy start (numpy only).

Bearings differ from each other more than one bearing differs from its own failure, so a model that
sees absolute levels learns the bearings of its training set. Instead each sensor learns its own
baseline on the gateway: after `skip_windows` run-in windows it averages the next `learn_windows`
windows' features (Welford's running mean and variance), and from then on every window's features
are expressed as deviations from that baseline,

    z = (x - mean) / max(std, std_floor)          y = sign(z) * log1p(|z|)    (y = 0 while learning)

so a change of 1σ reads as 0.69, 6σ as 1.95 and 40σ as 3.7: large deviations stay ordered without
dominating the model's input scale.

This module is the ONE implementation: the trainer (`trainer.sequences`), the evaluation and the
agent's `Scorer` all call `step` window by window, with the per-sensor state kept next to the GRU's
hidden state (so the agent's state persistence carries it over a restart). A maintenance event
(bearing replaced) zeroes the state: the sensor learns a new baseline.

A sensor installed on an already failing bearing would learn "failing" as its baseline. Two guards:
`mean_ceiling` (set by the trainer from its healthy training baselines, declared in the bundle) caps
each feature's baseline mean, so a bearing that starts far louder than any healthy bearing seen in
training is measured against that ceiling and still alarms; and `suspect(state)` tells the agent
such a baseline was capped, so it can say so. See docs/features.md ("Per-sensor baseline").

>>> spec = BaselineSpec(skip_windows=1, learn_windows=3)
>>> state = init_state(1, 2)
>>> for v in ([9.0, 9.0], [1.0, 5.0], [1.2, 5.0], [0.8, 5.0]):
...     y, state = step(spec, state, np.array([v]))
>>> bool(ready(spec, state)[0]), [round(float(a), 3) for a in y[0]]
(True, [-0.693, 0.0])
>>> y, state = step(spec, state, np.array([[1.4, 5.0]]))
>>> [round(float(a), 3) for a in y[0]]
[1.099, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.errors import FeatureError

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BaselineSpec:
    """How a sensor learns its healthy baseline (windows, not seconds: the agent counts windows)."""

    skip_windows: int = 30  # run-in windows ignored (FEMTO: 5 minutes at one snapshot per 10 s)
    learn_windows: int = 60  # windows averaged into the baseline after the run-in
    std_floor: float = 0.02  # lower bound of each feature's baseline spread (feature units)
    mean_ceiling: tuple[float, ...] | None = None  # per feature: cap on the baseline mean (None: none)

    def __post_init__(self) -> None:
        if (
            isinstance(self.skip_windows, bool)
            or not isinstance(self.skip_windows, int)
            or self.skip_windows < 0
        ):
            raise FeatureError(f"baseline skip_windows must be an integer >= 0, got {self.skip_windows!r}")
        if (
            isinstance(self.learn_windows, bool)
            or not isinstance(self.learn_windows, int)
            or self.learn_windows < 2
        ):
            raise FeatureError(f"baseline learn_windows must be an integer >= 2, got {self.learn_windows!r}")
        if not (
            isinstance(self.std_floor, int | float) and math.isfinite(self.std_floor) and self.std_floor > 0
        ):
            raise FeatureError(f"baseline std_floor must be a finite number > 0, got {self.std_floor!r}")
        if self.mean_ceiling is not None:
            ceiling = tuple(float(v) for v in self.mean_ceiling)
            if not all(math.isfinite(v) for v in ceiling):
                raise FeatureError("baseline mean_ceiling must hold finite numbers")
            object.__setattr__(self, "mean_ceiling", ceiling)

    @property
    def ready_after(self) -> int:
        """Windows a sensor must have seen before its baseline is complete."""
        return self.skip_windows + self.learn_windows

    def to_dict(self) -> dict[str, Any]:
        return {
            "skip_windows": self.skip_windows,
            "learn_windows": self.learn_windows,
            "std_floor": self.std_floor,
            "mean_ceiling": None if self.mean_ceiling is None else list(self.mean_ceiling),
        }

    @classmethod
    def from_dict(cls, data: Any) -> BaselineSpec:
        if not isinstance(data, dict):
            raise FeatureError(f"feature spec 'baseline' must be an object, got {type(data).__name__}")
        unknown = set(data) - {"skip_windows", "learn_windows", "std_floor", "mean_ceiling"}
        if unknown:
            raise FeatureError(
                f"feature spec 'baseline' has parameters this build does not know: {sorted(unknown)}; "
                "update gruwatch on this machine"
            )
        ceiling = data.get("mean_ceiling")
        if ceiling is not None and not isinstance(ceiling, list):
            raise FeatureError("feature spec baseline mean_ceiling must be a list of numbers or null")
        try:
            return cls(
                skip_windows=data.get("skip_windows", 30),
                learn_windows=data.get("learn_windows", 60),
                std_floor=float(data.get("std_floor", 0.02)),
                mean_ceiling=None if ceiling is None else tuple(float(v) for v in ceiling),
            )
        except (TypeError, ValueError) as exc:
            raise FeatureError(f"feature spec 'baseline' is malformed: {exc}") from exc


def state_size(n_features: int) -> int:
    """Floats per sensor: windows seen, then the running mean [F] and sum of squared deviations [F]."""
    return 1 + 2 * n_features


def init_state(n_sensors: int, n_features: int) -> F64:
    """Fresh (learning) states [B, 1 + 2F]."""
    return np.zeros((n_sensors, state_size(n_features)), np.float64)


def _split(state: F64, n_features: int) -> tuple[F64, F64, F64]:
    if state.ndim != 2 or state.shape[1] != state_size(n_features):
        raise ValueError(f"baseline state must be [B, {state_size(n_features)}], got {state.shape}")
    return state[:, 0], state[:, 1 : 1 + n_features], state[:, 1 + n_features :]


def ready(spec: BaselineSpec, state: F64) -> npt.NDArray[np.bool_]:
    """[B] True where the sensor's baseline is complete."""
    return np.asarray(state[:, 0] >= spec.ready_after)


def baseline_mean_std(spec: BaselineSpec, state: F64, n_features: int) -> tuple[F64, F64]:
    """The baseline each window is compared with: (mean capped by mean_ceiling, std floored)."""
    seen, mean, m2 = _split(state, n_features)
    count = np.clip(seen - spec.skip_windows, 1.0, None)[:, None]
    std = np.sqrt(m2 / np.maximum(count - 1.0, 1.0))
    if spec.mean_ceiling is not None:
        if len(spec.mean_ceiling) != n_features:
            raise FeatureError(
                f"baseline mean_ceiling has {len(spec.mean_ceiling)} values for {n_features} features"
            )
        mean = np.minimum(mean, np.asarray(spec.mean_ceiling, np.float64)[None, :])
    return mean, np.maximum(std, spec.std_floor)


def suspect(spec: BaselineSpec, state: F64) -> npt.NDArray[np.bool_]:
    """[B] True where a complete baseline was capped by mean_ceiling (a sensor on a failing bearing?)."""
    if spec.mean_ceiling is None:
        return np.zeros(state.shape[0], bool)
    n_features = (state.shape[1] - 1) // 2
    _, mean, _ = _split(state, n_features)
    capped = np.any(mean > np.asarray(spec.mean_ceiling, np.float64)[None, :], axis=1)
    return np.asarray(ready(spec, state) & capped)


def step(spec: BaselineSpec, state: F64, x: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], F64]:
    """One window per sensor: (normalised features float32 [B, F], new state [B, 1 + 2F]).

    `state` is not modified. Rows still learning (or in run-in) give zeros.
    """
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 2:
        raise ValueError(f"features must be [B, F], got shape {xs.shape}")
    n_features = xs.shape[1]
    new = np.array(state, dtype=np.float64, copy=True)
    if new.shape[0] != xs.shape[0]:
        raise ValueError(f"{new.shape[0]} baseline states for {xs.shape[0]} feature rows")
    seen, mean, m2 = _split(new, n_features)
    learning = (seen >= spec.skip_windows) & (seen < spec.ready_after)
    if learning.any():  # Welford's update on the rows still learning
        k = (seen[learning] - spec.skip_windows + 1.0)[:, None]
        delta = xs[learning] - mean[learning]
        mean[learning] += delta / k
        m2[learning] += delta * (xs[learning] - mean[learning])
    np.minimum(seen + 1.0, float(spec.ready_after), out=seen)
    out = np.zeros_like(xs)
    done = seen >= spec.ready_after
    if done.any():
        mu, sd = baseline_mean_std(spec, new[done], n_features)
        z = (xs[done] - mu) / sd
        out[done] = np.sign(z) * np.log1p(np.abs(z))
    return out.astype(np.float32), new


def normalise_run(spec: BaselineSpec, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A whole run [N, F] from a fresh state, window by window exactly as `step` (for training)."""
    x = np.asarray(features, dtype=np.float64)
    state = init_state(1, x.shape[1])
    out = np.zeros(x.shape, np.float32)
    for i in range(x.shape[0]):
        y, state = step(spec, state, x[i : i + 1])
        out[i] = y[0]
    return out
