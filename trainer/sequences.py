"""Feature sequences from Runs: features once per run, per-window targets, padded batches and TBPTT chunks.

A `FeatureSequence` is one run seen the way the agent sees it: window features in time order (from
`edge_agent.features.extract_batch`, computed ONCE per run, so training and scoring share one
implementation), plus the targets the trainer learns:

- `target` float32 [N]: 1.0 = degraded, 0.0 = healthy, NaN = unknown. Degraded := the loader's
  `labels.degraded` (simulator onset, CWRU fault files) OR `labels.rul_s <= horizon_s` when a horizon
  is given (run-to-failure data such as FEMTO, or failures from a maintenance-events CSV).
- `fault` int64 [N]: index into the fault classes, -1 where unknown.

When the spec declares a per-sensor baseline (`spec.baseline`, edge_agent/baseline.py), `features` is
what the model sees — each window normalised against the run's own healthy start, stepped window by
window with the same `edge_agent.baseline.step` the agent runs — and `raw` keeps the extracted
features (what the agent's Scorer receives and normalises itself).

`pad_batch` stacks sequences (optionally cut at random start offsets, so the model also learns to
score a sensor first seen mid-life) and `chunk_slices` cuts time into truncated-BPTT chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from edge_agent.baseline import normalise_run
from edge_agent.features import FeatureSpec, extract_batch
from trainer.data.runs import DataError, Run

UNKNOWN_FAULTS = frozenset({"unknown", ""})


@dataclass
class FeatureSequence:
    """One run as features and targets (arrays aligned, time order)."""

    run_id: str
    machine: str
    source: str
    features: np.ndarray  # float32 [N, F]
    ts: np.ndarray  # float64 [N] seconds since the run's start
    target: np.ndarray  # float32 [N]: 1 degraded, 0 healthy, NaN unknown
    fault: np.ndarray  # int64 [N]: fault class index, -1 unknown
    raw: np.ndarray | None = None  # float32 [N, F] extracted features when `features` are baseline-normalised
    # float32 [N] what the loss fits when it is not `target` (a health indicator, trainer/targets.py)
    loss_target: np.ndarray | None = None

    @property
    def extracted(self) -> np.ndarray:
        """The features as extracted (what a Scorer is fed); `features` when there is no baseline."""
        return self.features if self.raw is None else self.raw

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def interval_s(self) -> float:
        """Typical time between windows (median spacing; 0 for a single window)."""
        if len(self.ts) < 2:
            return 0.0
        return float(np.median(np.diff(self.ts)))


def shared_geometry(runs: Sequence[Run]) -> object | None:
    """The bearing geometry every run shares, else None (features then use no bearing orders)."""
    geoms = {None if r.geometry is None else repr(sorted(r.geometry.to_dict().items())) for r in runs}
    if len(geoms) == 1 and runs and runs[0].geometry is not None:
        return runs[0].geometry
    return None


def spec_for_runs(runs: Sequence[Run]) -> FeatureSpec:
    """The feature spec for training on `runs`: default parameters with their shared bearing geometry."""
    return FeatureSpec.with_geometry(shared_geometry(runs))  # type: ignore[arg-type]


def run_features(run: Run, spec: FeatureSpec) -> np.ndarray:
    """float32 [N, F]: one `extract_batch` call for the whole run."""
    if run.n_windows == 0:
        return np.zeros((0, spec.n_features), np.float32)
    feats = np.asarray(extract_batch(run.windows, run.fs, run.rpm, spec), dtype=np.float32)
    if not np.all(np.isfinite(feats)):
        raise DataError(
            f"run {run.run_id}: features are not finite; check the windows for constant or broken signals"
        )
    return feats


def degraded_targets(run: Run, horizon_s: float | None) -> np.ndarray:
    """float32 [N]: 1 degraded, 0 healthy, NaN unknown (unlabelled run)."""
    if run.labels is None:
        return np.full(run.n_windows, np.nan, np.float32)
    deg = run.labels.degraded.copy()
    if horizon_s is not None and horizon_s > 0:
        deg |= run.labels.rul_s <= horizon_s
    return deg.astype(np.float32)


def fault_classes(runs: Sequence[Run]) -> tuple[str, ...]:
    """Sorted fault class names the labels know ("healthy" first); () when fewer than two classes."""
    names: set[str] = set()
    for run in runs:
        if run.labels is not None:
            names.update(str(f) for f in np.unique(run.labels.fault.astype(str)))
    names -= UNKNOWN_FAULTS
    if len(names) < 2:
        return ()
    first = [n for n in ("healthy", "normal") if n in names]
    return tuple(first + sorted(names - set(first)))


def fault_targets(run: Run, classes: Sequence[str]) -> np.ndarray:
    if run.labels is None or not classes:
        return np.full(run.n_windows, -1, np.int64)
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(str(f), -1) for f in run.labels.fault], dtype=np.int64)


def build_sequences(
    runs: Sequence[Run],
    spec: FeatureSpec,
    *,
    horizon_s: float | None = None,
    classes: Sequence[str] = (),
    progress: bool = True,
    desc: str = "features",
) -> list[FeatureSequence]:
    """Features (once per run) and targets for every run."""
    out = []
    for run in tqdm(runs, desc=desc, unit="run", disable=not progress):
        raw = run_features(run, spec)
        out.append(
            FeatureSequence(
                run_id=run.run_id,
                machine=run.machine,
                source=run.source,
                features=raw if spec.baseline is None else normalise_run(spec.baseline, raw),
                raw=None if spec.baseline is None else raw,
                ts=np.asarray(run.ts, np.float64),
                target=degraded_targets(run, horizon_s),
                fault=fault_targets(run, classes),
            )
        )
    return out


@dataclass
class Batch:
    """Padded sequences: x [B, T, F], target [B, T] (NaN = unknown or padding), fault [B, T], mask [B, T]."""

    x: np.ndarray
    target: np.ndarray
    fault: np.ndarray
    mask: np.ndarray


def pad_batch(seqs: Sequence[FeatureSequence], offsets: Sequence[int] | None = None) -> Batch:
    """Stack sequences, each from its offset on, padded at the end to the longest.

    The batch's target is each sequence's `loss_target` where it has one, else its `target`.
    """
    offsets = list(offsets) if offsets is not None else [0] * len(seqs)
    lengths = [len(s) - o for s, o in zip(seqs, offsets, strict=True)]
    T = max(lengths) if lengths else 0
    F = seqs[0].features.shape[1]
    x = np.zeros((len(seqs), T, F), np.float32)
    target = np.full((len(seqs), T), np.nan, np.float32)
    fault = np.full((len(seqs), T), -1, np.int64)
    mask = np.zeros((len(seqs), T), bool)
    for i, (s, o, n) in enumerate(zip(seqs, offsets, lengths, strict=True)):
        x[i, :n] = s.features[o:]
        if n < T:  # repeat the last window in the padding: keeps the state finite and harmless
            x[i, n:] = s.features[-1]
        target[i, :n] = (s.target if s.loss_target is None else s.loss_target)[o:]
        fault[i, :n] = s.fault[o:]
        mask[i, :n] = True
    return Batch(x, target, fault, mask)


def chunk_slices(length: int, chunk_len: int) -> list[slice]:
    """Consecutive time slices of at most chunk_len windows covering [0, length)."""
    if chunk_len < 1:
        raise ValueError("chunk_len must be >= 1")
    return [slice(s, min(s + chunk_len, length)) for s in range(0, length, chunk_len)]
