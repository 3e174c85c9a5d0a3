"""trainer.targets: health-indicator loss targets for runs that end in a failure; alarms keep the 0/1 target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data.runs import DataError
from trainer.sequences import FeatureSequence, pad_batch
from trainer.targets import check_health_target, health_index, with_health_targets
from trainer.train import TrainConfig, train

torch.set_num_threads(1)


def _seq(name: str, n: int = 100, failing_from: int | None = 90, seed: int = 0) -> FeatureSequence:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(n, 4)).astype(np.float32)
    target = np.zeros(n, np.float32)
    if failing_from is not None:
        target[failing_from:] = 1.0
        x[failing_from - 20 :] += np.linspace(0.0, 4.0, n - failing_from + 20, dtype=np.float32)[:, None]
    return FeatureSequence(name, name, "test", x, np.arange(n) * 10.0, target, np.full(n, -1, np.int64))


def test_piecewise_linear_indicator_rises_from_cap_horizons_before_the_end() -> None:
    s = _seq("a")  # 100 windows, 10 s apart: the end of life is at 990 s
    s.target[50] = np.nan  # unknown stays unknown
    hi = health_index(s, "hi-linear", horizon_s=100.0, cap=2.0)
    rul = 990.0 - s.ts
    assert hi.dtype == np.float32
    assert np.all(hi[(rul >= 200.0) & ~np.isnan(s.target)] == 0.0)
    assert hi[-1] == 1.0
    assert hi[np.flatnonzero(rul == 100.0)[0]] == pytest.approx(0.5)
    assert np.isnan(hi[50])
    assert np.all(np.diff(hi[60:]) >= 0.0)
    one = health_index(s, "hi-linear", horizon_s=100.0, cap=1.0)
    assert np.all(one[rul >= 100.0][~np.isnan(s.target[rul >= 100.0])] == 0.0)


def test_life_fraction_runs_from_zero_to_one_and_healthy_runs_keep_their_target() -> None:
    s = _seq("a")
    frac = health_index(s, "life-fraction", horizon_s=None, cap=2.0)
    assert frac[0] == 0.0
    assert frac[-1] == 1.0
    np.testing.assert_allclose(frac, s.ts / s.ts[-1], rtol=1e-6)
    healthy = _seq("h", failing_from=None)
    for kind in ("hi-linear", "life-fraction", "binary"):
        assert health_index(healthy, kind, horizon_s=100.0, cap=2.0) is healthy.target
    with pytest.raises(ValueError, match="health target"):
        health_index(s, "rul", horizon_s=100.0, cap=2.0)
    with pytest.raises(ValueError, match="horizon"):
        health_index(s, "hi-linear", horizon_s=None, cap=2.0)
    with pytest.raises(DataError, match="no horizon"):
        check_health_target("hi-linear", None)
    with pytest.raises(DataError, match="must be one of"):
        check_health_target("rul", 100.0)
    check_health_target("life-fraction", None)  # needs no horizon


def test_the_batch_carries_the_indicator_and_the_sequence_keeps_its_labels() -> None:
    s = _seq("a")
    (soft,) = with_health_targets([s], "hi-linear", 100.0, 2.0)
    batch = pad_batch([soft])
    np.testing.assert_array_equal(batch.target[0], health_index(s, "hi-linear", 100.0, 2.0))
    np.testing.assert_array_equal(soft.target, s.target)  # calibration still sees 0/1
    assert with_health_targets([s], "binary", 100.0, 2.0)[0] is s


def test_training_on_an_indicator_calibrates_alarms_on_the_binary_labels() -> None:
    tr = [_seq(f"t{i}", failing_from=80 + i, seed=i) for i in range(6)] + [
        _seq("th", failing_from=None, seed=9)
    ]
    va = [_seq(f"v{i}", failing_from=85, seed=20 + i) for i in range(2)]
    base = TrainConfig(mode="supervised", hidden=8, epochs=6, chunk_len=32, batch_size=8, progress=False)
    cfg = TrainConfig(**{**base.__dict__, "health_target": "hi-linear", "hi_cap": 2.0, "horizon_s": 150.0})
    res = train(tr, va, cfg)
    binary = train(tr, va, base)
    assert res.config.health_target == "hi-linear"
    assert res.validation["labelled_windows"] == sum(int(np.sum(~np.isnan(s.target))) for s in va)
    assert res.validation["auroc"] > 0.8  # against the 0/1 labels
    assert set(res.thresholds) == {"warning", "alarm", "raise_windows", "clear_windows"}
    assert all(np.isfinite(h["train_loss"]) for h in res.history)
    a, b = res.model.state_dict(), binary.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the target changed what was learned
