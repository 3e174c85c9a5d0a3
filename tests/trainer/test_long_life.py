"""trainer.long_life: a healthy life far longer than training, scored as the agent scores.

The mechanics on a hand-made bundle and synthetic windows (always run); then the question itself on
real FEMTO data with `gruwatch train` defaults (skipped with the reason when ../shared/data is absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.scorer import Scorer
from tests.edge_agent.gru_fixtures import build_bundle
from trainer.data.runs import Run
from trainer.long_life import RUN_IN, long_life


def _run(n: int, seed: int) -> Run:
    rng = np.random.default_rng(seed)
    windows = (0.05 * rng.standard_normal((n, 2560))).astype(np.float32)
    return Run(
        f"r{seed}", "m", f"s{seed}", "sim", 25_600.0, 1_500.0, windows, np.arange(n) * 10.0, None, None
    )


def test_stretches_have_the_asked_lengths_and_the_runs_step_together(tmp_path: Path) -> None:
    bundle, _ = build_bundle(tmp_path / "b", hidden=8)
    runs = [_run(80, 1), _run(101, 2)]
    out = long_life(Scorer.from_bundle(bundle, allow_unsigned=True), runs, 500)
    assert list(out) == ["r1", "r2"]
    assert [(s.name, s.windows) for s in out["r1"]] == [
        ("first half", 40),
        ("long healthy", 500),
        ("second half", 40),
    ]
    assert [s.windows for s in out["r2"]] == [50, 500, 51]
    for parts in out.values():
        for s in parts:
            assert 0.0 <= s.median <= s.p99 <= s.max <= 1.0
            assert len(s.quarter_medians) == 4
            assert (s.first_alarm is None) == (s.alarm_windows == 0)
            assert s.rms_rule_first_alarm is None  # this bundle's spec has no per-sensor baseline
    with pytest.raises(ValueError, match="too short"):
        long_life(Scorer.from_bundle(bundle, allow_unsigned=True), [_run(2 * RUN_IN, 3)], 10)


def test_defaults_stay_quiet_through_a_long_healthy_femto_life(real_data: Path, tmp_path: Path) -> None:
    """`gruwatch train` defaults on three FEMTO bearings; the fourth's healthy half stretched by 20,000
    windows (2.3 days, ~25x the longest training run): no alarm and no drift in that stretch, and its
    real degradation still alarms as it does without the stretch."""
    from trainer.cli import main as train_main
    from trainer.data.femto import load_femto_bearing

    femto = real_data / "femto" / "Learning_set"
    missing = [
        b for b in ("Bearing1_2", "Bearing2_1", "Bearing2_2", "Bearing3_1") if not (femto / b).is_dir()
    ]
    if missing:  # the real data folder holds CWRU only, or part of FEMTO
        pytest.skip(f"FEMTO bearings {missing} are absent from {femto}")
    bundle = tmp_path / "bundle"
    train = [str(femto / b) for b in ("Bearing1_2", "Bearing2_1", "Bearing3_1")]
    assert train_main(["--data", *train, "--out", str(bundle), "--no-progress", "--json"]) == 0
    runs = load_femto_bearing(femto / "Bearing2_2")
    stretched = long_life(Scorer.from_bundle(bundle, allow_unsigned=True), runs, 20_000)
    plain = long_life(Scorer.from_bundle(bundle, allow_unsigned=True), runs, 0)
    for rid, (first, long, end) in stretched.items():
        assert long.alarm_raises == 0, (rid, long)
        assert max(abs(q - first.median) for q in long.quarter_medians) < 0.05, (rid, first, long)
        assert long.p99 <= first.p99 + 0.05, (rid, first, long)
        base_end = plain[rid][-1]
        assert (end.first_alarm is None) == (base_end.first_alarm is None), (rid, end, base_end)
        if end.first_alarm is not None and base_end.first_alarm is not None:
            assert abs(end.first_alarm - base_end.first_alarm) <= 3, (rid, end, base_end)


def test_the_rms_rule_fires_on_the_third_window_in_a_row_above_6_sigma() -> None:
    from trainer import rms_rule

    level = rms_rule.LEVEL
    assert rms_rule.first_alarm(np.array([0.0, level, level, 0.0, level, level, level, level])) == 6
    assert rms_rule.first_alarm(np.array([level, level, 0.0] * 5)) is None
    assert rms_rule.first_alarm(np.zeros(0)) is None
