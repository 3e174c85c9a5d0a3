"""What kind of data this is, and what training it therefore gets: decided from the data, printed, recorded.

`plan_training(runs, ...)` looks at the loaded runs and returns a `DataPlan`:

- **fault classes** (seeded-fault recordings such as CWRU: every run labelled, one fault class per
  recording, no run ends in a failure). Each class may have a single recording, so splitting by
  machine would take whole classes away from training. Instead every recording's windows are split
  in time (the first part trains, the last `val_fraction` validates), so every class is on both
  sides; the epoch count is chosen on that split and the model is then refitted on everything. No
  per-sensor baseline (a recording's own start is already faulty); instead the spectrum's *shape*:
  60 log-spaced bands from 50 Hz to just below Nyquist, each relative to the window's variance
  (`relative_bands`), which transfers across motor loads where absolute band levels do not
  (CWRU, training-side check: trained on one load, scored on the other of loads 0/1, logistic
  regression 0.95 with the default 16 absolute bands, 1.00 with 40 of these). 60 rather than 40:
  over every direction between loads 0-2 and six seeds the GRU's ball-fault classes stopped
  trading places (docs/training.md "Defaults per kind of data").
- **run-to-failure** (FEMTO-style lives ending in a failure, no degraded labels): split by machine;
  features normalised against each sensor's own healthy start (`edge_agent.baseline`, declared in the
  feature spec), band powers extended to the highest frequency every run's sample rate allows, and
  the degradation horizon chosen from the training runs (below) instead of a hand-picked one.
- **labelled** (simulator onsets, maintenance events) and **unlabelled**: split by machine, default
  features, as before.

A class that cannot be learned (no training windows) is an error naming it, never silently dropped.

The horizon for run-to-failure data: for each training run, a health indicator — the baseline
deviation that three quarters of the features exceed (a broad change, not one band's step), smoothed
over `HI_SMOOTH` windows — and the time from its last rise above `HI_THRESHOLD` (6σ) to the end of
life. The horizon is the median of these leads over
the runs, kept within [`HORIZON_MIN_FRACTION`, `HORIZON_MAX_FRACTION`] of the median life (so the
first half of a life is never labelled degraded). The card records the value and how it was chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_agent.baseline import BaselineSpec, normalise_run
from edge_agent.features import DEFAULT_BAND_EDGES_HZ, FeatureSpec, extract_batch
from trainer.data.runs import DataError, Run, RunLabels, split_by_machine

FAULT_CLASSES = "fault classes"
RUN_TO_FAILURE = "run-to-failure"
LABELLED = "labelled"
UNLABELLED = "unlabelled"

# Band edges above the v1 default's 5 kHz, used where every run's Nyquist frequency reaches them
# (FEMTO at 25.6 kHz: its degradation shows first at high frequency).
HIGH_BAND_EDGES_HZ = (7400.0, 10900.0, 12800.0)
# Spectral kurtosis bands (feature spec v3) for run-to-failure data, where every run's Nyquist allows:
# impulsive wear shows as a heavy-tailed short-time spectrum before the level rises. Off by default
# (SPECTRAL_KURTOSIS): on FEMTO's training side (inner leave-one-bearing-out) it gave no longer lead
# and 4-10x the first-half false alarms (docs/evaluation.md).
SK_BAND_EDGES_HZ = (500.0, 1600.0, 3200.0, 6400.0, 12800.0)
SK_SEGMENT_S = 0.0025
SPECTRAL_KURTOSIS = False
# Fault classes: log-spaced relative bands from SHAPE_LOW_HZ to just below Nyquist. 60 (8 % wide at
# 12 kHz): CWRU, every load -> every other of loads 0-2, 6 seeds, `benchmarks/tune_real.py --only cwru
# --all-directions`: 40 bands mean 0.990, 9/42 splits < 99 %; 60 bands 0.9996, none (docs/training.md).
SHAPE_BANDS = 60
SHAPE_LOW_HZ = 50.0
BASELINE_SKIP_S = 300.0  # run-in ignored: FEMTO's first snapshots vibrate more than mid-life
BASELINE_LEARN_S = 600.0  # healthy time averaged into each sensor's baseline
HI_THRESHOLD = math.log1p(6.0)  # 6σ on the baseline's scale (y = sign(z)·log1p|z|)
HI_SMOOTH = 6
HI_FEATURE_SHARE = 0.75  # the indicator is the deviation this share of the features exceeds
HORIZON_MIN_FRACTION = 0.10
HORIZON_MAX_FRACTION = 0.40
CEILING_MARGIN_LOG10 = 1.0  # a baseline 10x above every healthy training baseline's level is capped

# TrainConfig settings per kind where the user kept the default (chosen on training-side validation:
# docs/training.md "Defaults per kind of data").
KIND_SETTINGS: dict[str, dict[str, Any]] = {
    FAULT_CLASSES: {
        "batch_size": 8,
        "epochs": 100,
        "keep": "last",
        "refit": True,
        "input_noise": 0.2,
        "run_offset_noise": 0.5,
        "early_weight": 3.0,
    },
    RUN_TO_FAILURE: {
        "mode": "supervised",
        "hidden": 32,
        "min_raise_windows": 3,
        # 0.12: inner leave-one-bearing-out on FEMTO, first-half false alarms 5 (0.1) -> 2, same detections
        "alarm_margin": 0.12,
        # 12: inner leave-one-bearing-out on FEMTO over 3 seeds, the same models and sustained alarms,
        # first-half false alarms 13 -> 9 (no re-raise after a one-window dip)
        "clear_windows": 12,
        "alarm_pool": "median-run",
        "synthetic_failures": 6,
        "synthetic_steps": 3,
        # The loss fits the 0/1 horizon target, not a health indicator: on FEMTO's training side
        # (inner leave-one-bearing-out) hi-linear and life-fraction targets alarmed later or falsely.
        "health_target": "binary",
    },
}


@dataclass
class DataPlan:
    kind: str
    reason: str
    train_runs: list[Run]
    val_runs: list[Run]
    spec: FeatureSpec
    classes: tuple[str, ...] = ()
    horizon_s: float | None = None
    horizon_reason: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """For the card (`training_data.plan`) and the printed summary."""
        return {
            "kind": self.kind,
            "reason": self.reason,
            "horizon_s": self.horizon_s,
            "horizon_reason": self.horizon_reason,
            "baseline": None if self.spec.baseline is None else self.spec.baseline.to_dict(),
            "classes": list(self.classes),
            "settings": dict(self.settings),
            "notes": list(self.notes),
        }


def data_kind(runs: Sequence[Run]) -> tuple[str, str]:
    """(kind, why) decided from the runs' labels alone."""
    labelled = [r for r in runs if r.labels is not None]
    if not labelled:
        return UNLABELLED, "no run carries labels: healthy-only data, the model forecasts its features"
    if len(labelled) == len(runs) and not any(r.labels.failed_at_end for r in labelled):  # type: ignore[union-attr]
        per_run = [set(map(str, np.unique(r.labels.fault.astype(str)))) for r in labelled]  # type: ignore[union-attr]
        names = set().union(*per_run) - {"unknown", ""}
        if len(names) >= 2 and all(len(s) == 1 for s in per_run):
            return FAULT_CLASSES, (
                f"every run is one recording of one labelled class ({len(names)} classes) and none ends in "
                "a failure: seeded-fault recordings, classified window by window"
            )
    failing = [r for r in labelled if r.labels.failed_at_end]  # type: ignore[union-attr]
    cut = [r for r in labelled if r.labels.failure_after_end_s is not None]  # type: ignore[union-attr]
    if (failing or cut) and not any(bool(r.labels.degraded.any()) for r in labelled):  # type: ignore[union-attr]
        also = f" ({len(cut)} more stop before a known failure)" if cut else ""
        return RUN_TO_FAILURE, (
            f"{len(failing)} run(s) end in a failure{also} and no window is labelled degraded: "
            "run-to-failure histories; each sensor is compared with its own healthy start"
        )
    return LABELLED, "windows are labelled degraded/healthy (fault onsets or maintenance events)"


def split_in_time(runs: Sequence[Run], val_fraction: float) -> tuple[list[Run], list[Run]]:
    """Every run's first windows to training and its last `val_fraction` to validation (≥ 1 each)."""
    train, val = [], []
    for r in runs:
        n = r.n_windows
        k = round(n * val_fraction)
        k = min(max(k, 1), n - 1) if val_fraction > 0 and n >= 2 else 0
        train.append(_slice(r, 0, n - k, ""))
        if k:
            val.append(_slice(r, n - k, n, "#val"))
    return train, val


def _slice(r: Run, a: int, b: int, suffix: str) -> Run:
    labels = None
    if r.labels is not None:
        lab = r.labels
        labels = RunLabels(
            rul_s=lab.rul_s[a:b],
            degraded=lab.degraded[a:b],
            fault=lab.fault[a:b],
            severity=None if lab.severity is None else lab.severity[a:b],
            failed_at_end=lab.failed_at_end and b == r.n_windows,
        )
    return replace(r, run_id=r.run_id + suffix, windows=r.windows[a:b], ts=r.ts[a:b], labels=labels)


def _classes_of(runs: Sequence[Run]) -> set[str]:
    out: set[str] = set()
    for r in runs:
        if r.labels is not None and r.n_windows:
            out.update(map(str, np.unique(r.labels.fault.astype(str))))
    return out - {"unknown", ""}


def keep_classes_in_training(
    train: Sequence[Run], val: Sequence[Run]
) -> tuple[list[Run], list[Run], list[tuple[str, str]]]:
    """Move whole validation machines to training until every labelled class has a training machine.

    Returns (train, val, [(machine, class), ...] moved). Validation keeps at least one machine when it
    can; a class only validation holds (and only on its last machine) is left for `check_classes`.
    """
    train, val = list(train), list(val)
    moved: list[tuple[str, str]] = []
    for cls in sorted(_classes_of(val) - _classes_of(train)):
        holders = sorted({r.machine for r in val if cls in _classes_of([r])})
        machines = {r.machine for r in val}
        if not holders or len(machines) <= 1:
            continue
        m = holders[0]
        train += [r for r in val if r.machine == m]
        val = [r for r in val if r.machine != m]
        moved.append((m, cls))
    return train, val, moved


def check_classes(classes: Sequence[str], train_runs: Sequence[Run], all_runs: Sequence[Run]) -> None:
    """DataError naming every labelled class without a training window."""
    have: set[str] = set()
    for r in train_runs:
        if r.labels is not None and r.n_windows:
            have.update(map(str, np.unique(r.labels.fault.astype(str))))
    seen: set[str] = set()
    for r in all_runs:
        if r.labels is not None:
            seen.update(map(str, np.unique(r.labels.fault.astype(str))))
    missing = sorted((seen - have) - {"unknown", ""})
    if missing:
        raise DataError(
            f"fault class(es) {', '.join(missing)} have no training window after the split, so the model "
            "could not learn them; add recordings of them, or lower --val-fraction"
        )
    if classes:
        absent = sorted(set(classes) - have)
        if absent:
            raise DataError(f"fault class(es) {', '.join(absent)} have no training window")


def high_band_edges(runs: Sequence[Run]) -> tuple[float, ...]:
    """The default band edges, extended by the high bands every run's Nyquist frequency covers."""
    nyquist = min(r.fs for r in runs) / 2.0 if runs else 0.0
    return DEFAULT_BAND_EDGES_HZ + tuple(e for e in HIGH_BAND_EDGES_HZ if e <= nyquist)


def sk_band_edges(runs: Sequence[Run]) -> tuple[float, ...]:
    """SK_BAND_EDGES_HZ up to the lowest Nyquist frequency of the runs (at least one band, else ())."""
    nyquist = min(r.fs for r in runs) / 2.0 if runs else 0.0
    edges = tuple(e for e in SK_BAND_EDGES_HZ if e <= nyquist)
    return edges if len(edges) >= 2 else ()


def shape_band_edges(runs: Sequence[Run], bands: int = SHAPE_BANDS) -> tuple[float, ...]:
    """`bands` log-spaced edges from SHAPE_LOW_HZ to 98 % of the lowest Nyquist frequency (3 digits)."""
    top = 0.49 * min(r.fs for r in runs)
    edges = np.geomspace(SHAPE_LOW_HZ, top, bands + 1)
    return tuple(float(f"{e:.3g}") for e in edges)


def _interval_s(runs: Sequence[Run]) -> float:
    gaps = [float(np.median(np.diff(r.ts))) for r in runs if r.n_windows > 1]
    return float(np.median(gaps)) if gaps else 1.0


def baseline_for(runs: Sequence[Run], spec: FeatureSpec) -> tuple[BaselineSpec, list[np.ndarray]]:
    """Baseline parameters in windows for these runs' spacing, the level ceiling, and each run's features."""
    interval = _interval_s(runs)
    skip = max(round(BASELINE_SKIP_S / interval), 0)
    learn = max(round(BASELINE_LEARN_S / interval), 10)
    feats = [np.asarray(extract_batch(r.windows, r.fs, r.rpm, spec), np.float64) for r in runs]
    means = [f[skip : skip + learn].mean(axis=0) for f in feats if f.shape[0] >= skip + learn]
    ceiling = None
    if means:
        top = np.max(np.stack(means), axis=0)
        ceiling = tuple(
            float(t + CEILING_MARGIN_LOG10) if name.startswith("log_") else 1e9
            for t, name in zip(top, spec.names, strict=True)
        )
    return BaselineSpec(skip_windows=skip, learn_windows=learn, mean_ceiling=ceiling), feats


def choose_horizon(
    runs: Sequence[Run], normalised: Sequence[np.ndarray], baseline: BaselineSpec
) -> tuple[float | None, str]:
    """(horizon_s, how it was chosen) from the failing runs' health indicator (module docstring)."""
    leads, lives = [], []
    for r, y in zip(runs, normalised, strict=True):
        if r.labels is None or not r.labels.failed_at_end or r.n_windows <= baseline.ready_after + HI_SMOOTH:
            continue
        hi = np.quantile(np.abs(y), 1.0 - HI_FEATURE_SHARE, axis=1)
        smooth = np.convolve(hi, np.ones(HI_SMOOTH) / HI_SMOOTH, mode="full")[: len(hi)]
        life = float(r.ts[-1] - r.ts[0])
        below = np.flatnonzero(smooth[baseline.ready_after :] < HI_THRESHOLD)
        onset = baseline.ready_after + (int(below[-1]) + 1 if below.size else 0)
        onset = min(onset, len(hi) - 1)
        leads.append(float(r.ts[-1] - r.ts[onset]))
        lives.append(life)
    if not leads:
        return None, "no failing run is long enough to learn a baseline and see a degradation"
    med_life = float(np.median(lives))
    raw = float(np.median(leads))
    lo, hi_ = HORIZON_MIN_FRACTION * med_life, HORIZON_MAX_FRACTION * med_life
    horizon = float(min(max(raw, lo), hi_))
    seen = f"on {len(leads)} failing training runs (median) {HI_FEATURE_SHARE:.0%} of the features " + (
        f"stood above 6 sigma of the sensor's baseline for the last {raw:.0f} s of life"
        if raw > 0
        else "were not yet all above 6 sigma of the sensor's baseline at the failure"
    )
    if raw < lo:
        return horizon, (
            f"{horizon:.0f} s, the floor of {HORIZON_MIN_FRACTION:.0%} of the median life ({med_life:.0f} s): {seen}, "
            "too late a change to set the horizon"
        )
    if raw > hi_:
        return horizon, (
            f"{horizon:.0f} s, the ceiling of {HORIZON_MAX_FRACTION:.0%} of the median life ({med_life:.0f} s): {seen}"
        )
    return horizon, (
        f"{horizon:.0f} s: {seen} (within {HORIZON_MIN_FRACTION:.0%}-{HORIZON_MAX_FRACTION:.0%} of the "
        f"median life, {med_life:.0f} s)"
    )


def plan_training(
    runs: Sequence[Run],
    *,
    val_fraction: float,
    seed: int,
    horizon_s: float | None = None,
    spec: FeatureSpec | None = None,
    spectral_kurtosis: bool | None = None,
    sk_segment_s: float = SK_SEGMENT_S,
    shape_bands: int = SHAPE_BANDS,
) -> DataPlan:
    """Decide the kind of data, split it, and choose the feature spec, classes and horizon (docstring)."""
    from trainer.sequences import fault_classes, spec_for_runs

    if not runs:
        raise DataError("no runs to train on")
    kind, reason = data_kind(runs)
    base_spec = spec or spec_for_runs(runs)
    if kind == FAULT_CLASSES:
        if spec is None:
            base_spec = FeatureSpec.with_geometry(
                base_spec.geometry, band_edges_hz=shape_band_edges(runs, shape_bands), relative_bands=True
            )
        train_runs, val_runs = split_in_time(runs, val_fraction)
        classes = fault_classes(runs)
        check_classes(classes, train_runs, runs)
        return DataPlan(
            kind,
            reason,
            train_runs,
            val_runs,
            base_spec,
            classes=classes,
            horizon_s=horizon_s,
            settings=dict(KIND_SETTINGS[kind]),
            notes=[
                f"each recording split in time: the last {val_fraction:.0%} of its windows validate",
                f"features: spectral shape, {base_spec.n_bands} bands {base_spec.band_edges_hz[0]:g}-"
                f"{base_spec.band_edges_hz[-1]:g} Hz relative to the window's power, plus envelope lines",
            ],
        )
    train_runs, val_runs = split_by_machine(runs, val_fraction=val_fraction, seed=seed)
    train_runs, val_runs, moved = keep_classes_in_training(train_runs, val_runs)
    classes = fault_classes(train_runs)
    check_classes(classes, train_runs, runs)
    notes = [f"machine {m} moved to training: its class {c} had no other training machine" for m, c in moved]
    if kind != RUN_TO_FAILURE or spec is not None:
        return DataPlan(
            kind, reason, train_runs, val_runs, base_spec, classes=classes, horizon_s=horizon_s, notes=notes
        )
    sk = SPECTRAL_KURTOSIS if spectral_kurtosis is None else spectral_kurtosis
    extra: dict[str, Any] = (
        {"sk_band_edges_hz": sk_band_edges(runs), "sk_segment_s": sk_segment_s} if sk else {}
    )
    wide = FeatureSpec.with_geometry(base_spec.geometry, band_edges_hz=high_band_edges(runs), **extra)
    baseline, feats = baseline_for(train_runs, wide)
    full = FeatureSpec.with_geometry(
        base_spec.geometry, band_edges_hz=wide.band_edges_hz, baseline=baseline, **extra
    )
    if full.n_sk_bands:
        notes.append(f"spectral kurtosis in {full.n_sk_bands} bands up to {full.sk_band_edges_hz[-1]:g} Hz")
    notes += [
        f"bands up to {full.band_edges_hz[-1]:g} Hz; baseline: skip {baseline.skip_windows} run-in windows, "
        f"learn over the next {baseline.learn_windows}",
        "few failures to learn from: each training run also gives synthetic failures "
        "(--synthetic-failures; a healthy stretch whose level features then rise far above the "
        "sensor's baseline) and healthy copies with a lasting step in a few level features "
        "(--synthetic-steps; trainer/synthetic.py)",
    ]
    if horizon_s is None:
        normalised = [normalise_run(baseline, f) for f in feats]
        horizon_s, how = choose_horizon(train_runs, normalised, baseline)
    else:
        how = "given with --horizon"
    if horizon_s is None:
        raise DataError(
            f"run-to-failure data, but {how}; pass --horizon (how long before a failure a window counts "
            "as degraded, e.g. --horizon 15m)"
        )
    return DataPlan(
        kind,
        reason,
        train_runs,
        val_runs,
        full,
        classes=classes,
        horizon_s=horizon_s,
        horizon_reason=how,
        settings=dict(KIND_SETTINGS[kind]),
        notes=notes,
    )


def apply_kind_settings(args: Any, settings: dict[str, Any], parser: Any) -> dict[str, Any]:
    """Set each of the kind's settings on `args` where the user left the option at its default.

    Returns the settings applied; an option given on the command line (any value other than the
    default) always wins.
    """
    applied = {}
    for key, value in settings.items():
        if hasattr(args, key) and getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)
            applied[key] = value
    return applied


def describe_plan(plan: DataPlan, applied: dict[str, Any]) -> str:
    """What the trainer decided from the data, and why (printed before training starts)."""
    lines = [f"data: {plan.kind} — {plan.reason}"]
    lines.append(
        f"split: {len(plan.train_runs)} training run(s), {len(plan.val_runs)} validation run(s)"
        + (f"; {len(plan.classes)} classes: {', '.join(plan.classes)}" if plan.classes else "")
    )
    lines.extend(f"  {n}" for n in plan.notes)
    if plan.horizon_s is not None and plan.horizon_reason:
        lines.append(f"horizon: {plan.horizon_reason}")
    if applied:
        lines.append(
            "settings for this kind of data (options you give override them): "
            + ", ".join(f"{k}={v}" for k, v in applied.items())
        )
    return "\n".join(lines)
