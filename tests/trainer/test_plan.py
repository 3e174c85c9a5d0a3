"""trainer.data.plan: the kind of data is decided from the data; no class is lost in the split."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from trainer.data.plan import (
    FAULT_CLASSES,
    LABELLED,
    RUN_TO_FAILURE,
    UNLABELLED,
    apply_kind_settings,
    check_classes,
    data_kind,
    plan_training,
    split_in_time,
)
from trainer.data.runs import DataError, Run, RunLabels


def _run(
    name: str,
    n: int,
    *,
    cls: str = "unknown",
    fails: bool = False,
    degraded: bool = False,
    labelled: bool = True,
    fs: float = 25600.0,
    scale: float = 1.0,
    rng: np.random.Generator | None = None,
) -> Run:
    rng = rng or np.random.default_rng(abs(hash(name)) % 2**32)
    windows = (rng.normal(size=(n, 256)) * scale).astype(np.float32)
    if fails:  # the last fifth grows louder, as a bearing that fails
        windows[int(0.8 * n) :] *= np.linspace(1.0, 20.0, n - int(0.8 * n))[:, None].astype(np.float32)
    ts = np.arange(n) * 10.0
    labels = None
    if labelled:
        labels = RunLabels(
            rul_s=(ts[-1] - ts) if fails else np.full(n, np.inf),
            degraded=np.full(n, degraded),
            fault=np.full(n, cls, dtype=object),
            severity=None,
            failed_at_end=fails,
        )
    return Run(
        run_id=name,
        machine=name.split("-")[0],
        sensor="s",
        source="sim",
        fs=fs,
        rpm=0.0,
        windows=windows,
        ts=ts,
        geometry=None,
        labels=labels,
    )


def test_kinds_are_decided_from_labels() -> None:
    classes = [
        _run(f"m{i}-a", 20, cls=c, degraded=c != "normal") for i, c in enumerate(["normal", "IR", "OR"])
    ]
    assert data_kind(classes)[0] == FAULT_CLASSES
    femto = [_run(f"b{i}-h", 150, fails=True) for i in range(3)]
    assert data_kind(femto)[0] == RUN_TO_FAILURE
    onset = [_run("m1-a", 30, cls="outer", fails=True, degraded=True), _run("m2-a", 30, cls="healthy")]
    assert data_kind(onset)[0] == LABELLED
    assert data_kind([_run("m1-a", 10, labelled=False)])[0] == UNLABELLED


def test_fault_classes_split_in_time_keeps_every_class_on_both_sides() -> None:
    runs = [
        _run(f"m{i}-a", 59, cls=c, degraded=c != "normal") for i, c in enumerate(["normal", "IR007", "OR007"])
    ]
    plan = plan_training(runs, val_fraction=0.2, seed=0)
    assert plan.kind == FAULT_CLASSES
    assert set(plan.classes) == {"normal", "IR007", "OR007"}
    for side in (plan.train_runs, plan.val_runs):
        assert {str(r.labels.fault[0]) for r in side if r.labels is not None} == set(plan.classes)
    for r, t, v in zip(runs, plan.train_runs, plan.val_runs, strict=True):
        assert t.n_windows + v.n_windows == r.n_windows
        assert v.n_windows == 12
        assert t.ts[-1] < v.ts[0]  # validation is the later block of the same recording


def test_a_class_without_training_windows_is_an_error_naming_it() -> None:
    runs = [_run("m0-a", 10, cls="normal"), _run("m1-a", 10, cls="B021", degraded=True)]
    train, _ = split_in_time(runs, 0.2)
    with pytest.raises(DataError, match="B021"):
        check_classes((), [train[0]], runs)


def test_run_to_failure_gets_a_baseline_a_wider_band_and_a_horizon_from_the_data() -> None:
    runs = [_run(f"b{i}-h", 200, fails=True) for i in range(3)]
    plan = plan_training(runs, val_fraction=0.34, seed=0)
    assert plan.kind == RUN_TO_FAILURE
    assert plan.spec.baseline is not None
    assert plan.spec.version == 2
    assert plan.spec.band_edges_hz[-1] == 12800.0
    life = 199 * 10.0
    assert plan.horizon_s is not None
    assert 0.1 * life <= plan.horizon_s <= 0.4 * life
    assert "median" in plan.horizon_reason
    assert plan.settings["synthetic_failures"] > 0  # few failures to learn from: made-up ones too
    assert plan.settings["synthetic_steps"] > 0
    assert plan.settings["health_target"] == "binary"  # the loss target is a decision the card records
    assert any("synthetic failures" in n for n in plan.notes)
    assert plan.describe()["kind"] == RUN_TO_FAILURE
    given = plan_training(runs, val_fraction=0.34, seed=0, horizon_s=300.0)
    assert given.horizon_s == 300.0
    assert not any(n.startswith("sk_") for n in plan.spec.names)  # spectral kurtosis is off by default
    sk = plan_training(runs, val_fraction=0.34, seed=0, spectral_kurtosis=True, sk_segment_s=0.005)
    assert sk.spec.version == 3
    assert sk.spec.sk_band_edges_hz == (500.0, 1600.0, 3200.0, 6400.0, 12800.0)
    assert sk.spec.sk_segment_s == 0.005
    assert any("spectral kurtosis in 4 bands" in n for n in sk.notes)
    assert sk.spec.baseline is not None
    assert sk.spec.baseline.mean_ceiling is not None
    assert len(sk.spec.baseline.mean_ceiling) == sk.spec.n_features == plan.spec.n_features + 4


def test_kind_settings_never_override_an_option_the_user_gave() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(["--hidden", "16"])
    applied = apply_kind_settings(args, {"hidden": 32, "epochs": 100}, parser)
    assert args.hidden == 16
    assert args.epochs == 100
    assert applied == {"epochs": 100}


def test_a_class_only_validation_holds_moves_its_machine_to_training() -> None:
    from trainer.data.plan import keep_classes_in_training

    train = [_run("m1-a", 10, cls="healthy")]
    val = [_run("m2-a", 10, cls="outer", degraded=True), _run("m3-a", 10, cls="healthy")]
    tr, va, moved = keep_classes_in_training(train, val)
    assert moved == [("m2", "outer")]
    assert {r.machine for r in tr} == {"m1", "m2"}
    assert [r.machine for r in va] == ["m3"]
