"""Training, calibration and `gruwatch train` end to end: the model learns, and the bundle scores like torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.alarms import ALARM, AlarmState, Thresholds, step
from trainer.calibrate import ScoredRun, _in_alarm, alarm_metrics, calibrate, median_run_alarm
from trainer.data.runs import Run, RunLabels, split_by_machine
from trainer.model import HealthModel
from trainer.sequences import (
    FeatureSequence,
    build_sequences,
    chunk_slices,
    fault_classes,
    pad_batch,
    spec_for_runs,
)
from trainer.train import TrainConfig, _batches, _run_epoch, score_sequences, train

torch.set_num_threads(1)

FS = 12_800.0
L = 1024
INTERVAL_S = 10.0


# --------------------------------------------------------------------------- synthetic runs
def synthetic_run(machine: str, *, fault: str, n: int, onset: int | None, seed: int) -> Run:
    """Noise plus, after `onset`, growing bearing-like impulses (resonance ringing at a defect rate)."""
    rng = np.random.default_rng(seed)
    t = np.arange(L) / FS
    windows = np.empty((n, L), np.float32)
    severity = np.zeros(n)
    rate = {"outer": 107.0, "inner": 162.0}.get(fault, 0.0)
    for k in range(n):
        x = 0.05 * rng.standard_normal(L)
        if onset is not None and k >= onset:
            sev = min(1.0, 0.3 + (k - onset) / max(n - onset, 1))
            severity[k] = sev
            phase = rng.uniform(0, 1 / rate)
            for t0 in np.arange(phase, t[-1], 1 / rate):
                m = t >= t0
                x[m] += sev * 0.6 * np.exp(-(t[m] - t0) * 900.0) * np.sin(2 * np.pi * 3000.0 * (t[m] - t0))
        windows[k] = x
    ts = np.arange(n) * INTERVAL_S
    degraded = severity > 0
    failed = onset is not None
    rul = (n - 1 - np.arange(n)) * INTERVAL_S if failed else np.full(n, np.inf)
    faults = np.where(degraded, fault, "healthy").astype(object)
    return Run(
        run_id=f"syn-{machine}",
        machine=machine,
        sensor="s0",
        source="sim",
        fs=FS,
        rpm=1800.0,
        windows=windows,
        ts=ts,
        geometry=None,
        labels=RunLabels(rul_s=rul, degraded=degraded, fault=faults, severity=severity, failed_at_end=failed),
    )


def synthetic_fleet(machines: int = 12, n: int = 60, seed: int = 0) -> list[Run]:
    rng = np.random.default_rng(seed)
    runs = []
    for m in range(machines):
        kind = ("healthy", "outer", "inner")[m % 3]
        onset = None if kind == "healthy" else int(rng.integers(n // 3, 2 * n // 3))
        runs.append(synthetic_run(f"m{m:03d}", fault=kind, n=n, onset=onset, seed=seed * 1000 + m))
    return runs


@pytest.fixture(scope="module")
def fleet() -> tuple[list[FeatureSequence], list[FeatureSequence], tuple[str, ...]]:
    runs = synthetic_fleet()
    tr, va = split_by_machine(runs, val_fraction=0.34, seed=0)
    spec = spec_for_runs(runs)
    classes = fault_classes(tr)
    return (
        build_sequences(tr, spec, classes=classes, progress=False),
        build_sequences(va, spec, classes=classes, progress=False),
        classes,
    )


# --------------------------------------------------------------------------- sequences
def test_sequences_targets_and_padding() -> None:
    run = synthetic_run("m1", fault="outer", n=20, onset=12, seed=1)
    spec = spec_for_runs([run])
    (seq,) = build_sequences([run], spec, classes=("healthy", "outer"), progress=False)
    assert seq.features.shape == (20, spec.n_features)
    assert seq.features.dtype == np.float32
    assert seq.target.tolist() == [0.0] * 12 + [1.0] * 8
    assert seq.fault.tolist() == [0] * 12 + [1] * 8
    assert seq.interval_s == INTERVAL_S
    # A horizon makes the last windows before the failure degraded even without onset labels.
    run.labels.degraded[:] = False  # type: ignore[union-attr]
    (seq,) = build_sequences([run], spec, horizon_s=30.0, progress=False)
    assert seq.target.tolist() == [0.0] * 16 + [1.0] * 4
    short = FeatureSequence("b", "m2", "sim", seq.features[:5], seq.ts[:5], seq.target[:5], seq.fault[:5])
    batch = pad_batch([seq, short], offsets=[3, 0])
    assert batch.x.shape == (2, 17, spec.n_features)
    assert batch.mask.sum(axis=1).tolist() == [17, 5]
    assert np.isnan(batch.target[1, 5:]).all()
    np.testing.assert_array_equal(batch.x[0], seq.features[3:])
    assert [(s.start, s.stop) for s in chunk_slices(10, 4)] == [(0, 4), (4, 8), (8, 10)]


def test_truncated_bptt_carries_the_state_across_chunks(
    fleet: tuple[list[FeatureSequence], list[FeatureSequence], tuple[str, ...]],
) -> None:
    """The loss over chunks of 7 windows equals the loss over whole runs only if the state is carried."""
    train_seqs, _, classes = fleet
    torch.manual_seed(0)
    model = HealthModel(train_seqs[0].features.shape[1], hidden=8, mode="supervised", fault_classes=classes)
    pw = torch.tensor(1.0)
    rng = np.random.default_rng(0)
    whole = _run_epoch(
        model,
        _batches(train_seqs, TrainConfig(chunk_len=10_000), rng, train=False),
        TrainConfig(chunk_len=10_000),
        pw,
        None,
    )
    chunked = _run_epoch(
        model,
        _batches(train_seqs, TrainConfig(chunk_len=7), rng, train=False),
        TrainConfig(chunk_len=7),
        pw,
        None,
    )
    assert abs(whole - chunked) < 1e-5 * max(1.0, abs(whole))


# --------------------------------------------------------------------------- calibration
def test_vectorised_alarm_state_matches_the_agent() -> None:
    rng = np.random.default_rng(4)
    scores = np.clip(rng.normal(0.4, 0.25, size=300), 0, 1)
    thr = np.array([0.3, 0.5, 0.7])
    for n_raise, n_clear in [(1, 1), (2, 3), (5, 2)]:
        got = _in_alarm(scores, thr, n_raise, n_clear)
        for i, a in enumerate(thr):
            t = Thresholds(warning=a, alarm=a, raise_windows=n_raise, clear_windows=n_clear)
            st = AlarmState.fresh(1)
            want = [step(st, np.array([s]), t)[1][0] == ALARM for s in scores]
            assert got[i].tolist() == want


def test_calibrate_meets_the_false_alarm_target_and_prefers_detection() -> None:
    rng = np.random.default_rng(7)
    runs = []
    for r in range(6):
        n = 800
        s = np.clip(rng.normal(0.2, 0.08, n), 0, 1)
        target = np.zeros(n, np.float32)
        if r % 2:  # degraded tail with higher scores
            s[600:] = np.clip(rng.normal(0.7, 0.1, 200), 0, 1)
            target[600:] = 1
        s[rng.integers(0, 600, 5)] = 0.95  # isolated spikes in healthy time: hysteresis must absorb them
        runs.append(ScoredRun(s, target, interval_s=150.0))
    thresholds, metrics = calibrate(runs, target_false_alarms_per_day=0.1)
    assert metrics["healthy_machine_days"] > 0
    assert metrics["false_alarms_per_day"] <= 0.1
    assert thresholds["raise_windows"] >= 2  # one-window spikes would otherwise alarm
    assert 0.0 <= thresholds["warning"] <= thresholds["alarm"] <= 1.0
    assert metrics["degraded_runs_detected"] == 3
    assert metrics["degraded_windows_in_alarm"] > 0.9
    again = alarm_metrics(runs, thresholds)
    assert again["false_alarms"] == metrics["false_alarms"]


def test_calibration_margin_and_minimum_raise_windows() -> None:
    rng = np.random.default_rng(3)
    runs = []
    for r in range(4):
        s = np.clip(rng.normal(0.2, 0.05, 600), 0, 1)
        target = np.zeros(600, np.float32)
        if r % 2:
            s[450:] = np.clip(rng.normal(0.8, 0.05, 150), 0, 1)
            target[450:] = 1
        runs.append(ScoredRun(s, target, interval_s=60.0))  # < 10 healthy days: no false alarm allowed
    plain, _ = calibrate(runs, target_false_alarms_per_day=0.1)
    assert plain["raise_windows"] == 1  # without the floor, clean data gets the fastest raise
    safe, metrics = calibrate(runs, target_false_alarms_per_day=0.1, min_raise_windows=3, margin=0.1)
    assert safe["raise_windows"] >= 3
    # With every validation score raised by the margin, the chosen alarm still raises nothing in
    # healthy time, so it sits at least `margin` above what the healthy windows sustain.
    shifted = [ScoredRun(np.clip(r.scores + 0.1, 0, 1), r.target, r.interval_s) for r in runs]
    assert alarm_metrics(shifted, safe)["false_alarms"] == 0
    assert metrics["degraded_runs_detected"] == 2
    with pytest.raises(ValueError, match="margin"):
        calibrate(runs, margin=-0.1)


def test_calibration_with_mostly_degraded_validation_places_the_alarm_above_the_healthy_scores() -> None:
    """Seeded-fault data (CWRU): one short healthy recording among many faulty ones. The degraded
    windows' scores fill the upper half of the pooled scores, so a grid from the pooled scores alone
    started above every healthy score and put the alarm at ~0.9996, under half the faulty windows."""
    rng = np.random.default_rng(5)
    healthy = ScoredRun(np.clip(rng.normal(0.002, 0.001, 6), 0, 1), np.zeros(6, np.float32), 0.2)
    faulty = [
        ScoredRun(np.clip(rng.normal(0.9995, 0.0003, 10), 0, 1), np.ones(10, np.float32), 0.2)
        for _ in range(36)
    ]
    thresholds, metrics = calibrate([healthy, *faulty], min_raise_windows=2, margin=0.05)
    assert thresholds["alarm"] < 0.1
    # ... and still the margin above what the healthy windows sustain (as in the test above).
    shifted = ScoredRun(healthy.scores + 0.05, healthy.target, healthy.interval_s)
    assert alarm_metrics([shifted], thresholds)["false_alarms"] == 0
    # The warning keeps the same margin: no warning on the shifted healthy scores either.
    n, m = thresholds["raise_windows"], thresholds["clear_windows"]
    assert not _in_alarm(shifted.scores, np.array([thresholds["warning"]]), n, m).any()
    assert metrics["false_alarms"] == 0
    assert metrics["degraded_runs_detected"] == 36
    assert metrics["degraded_windows_in_alarm"] == pytest.approx(0.9)  # all but each run's first window


def test_a_fixed_clear_count_keeps_a_failing_runs_alarm_on_through_one_low_window() -> None:
    """--clear-windows N (run-to-failure data: 12): the alarm does not flicker off and on again."""
    from trainer.calibrate import _in_alarm

    healthy = np.full(400, 0.1)
    failing = np.r_[np.full(300, 0.1), np.tile([0.9, 0.9, 0.9, 0.05], 25)]  # a dip every 4th window
    target = np.r_[np.zeros(300), np.ones(100)].astype(np.float32)
    runs = [ScoredRun(healthy, np.zeros(400, np.float32), 60.0), ScoredRun(failing, target, 60.0)]
    fixed, metrics = calibrate(runs, min_raise_windows=3, clear_choices=(12,))
    assert fixed["clear_windows"] == 12
    assert metrics["false_alarms"] == 0

    def raises(clear: int) -> int:
        on = _in_alarm(failing, np.array([fixed["alarm"]]), fixed["raise_windows"], clear)[0]
        return int(np.sum(on[1:] & ~on[:-1]))

    assert raises(1) == 25  # cleared by every dip, raised again after it
    assert raises(12) == 1  # raised once, on until the end


# --------------------------------------------------------------------------- training
def test_supervised_training_learns(
    fleet: tuple[list[FeatureSequence], list[FeatureSequence], tuple[str, ...]],
) -> None:
    train_seqs, val_seqs, classes = fleet
    cfg = TrainConfig(mode="auto", hidden=16, epochs=12, chunk_len=16, batch_size=8, progress=False, seed=1)
    res = train(train_seqs, val_seqs, cfg, classes=classes)
    assert res.config.mode == "supervised"
    assert res.validation["auroc"] > 0.9
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.model.outputs == ["health", *(f"p_{c}" for c in classes)]
    assert set(res.thresholds) == {"warning", "alarm", "raise_windows", "clear_windows"}
    assert res.validation["alarms"]["degraded_runs_detected"] >= 1
    # Same seed, same model.
    again = train(train_seqs, val_seqs, cfg, classes=classes)
    for a, b in zip(res.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_forecast_training_on_healthy_data_flags_degradation(
    fleet: tuple[list[FeatureSequence], list[FeatureSequence], tuple[str, ...]],
) -> None:
    train_seqs, val_seqs, _ = fleet
    # Healthy-only training data: cut every training run before its onset, and drop the labels.
    healthy = []
    for s in train_seqs:
        keep = s.target == 0
        healthy.append(
            FeatureSequence(
                s.run_id,
                s.machine,
                s.source,
                s.features[keep],
                s.ts[keep],
                np.full(int(keep.sum()), np.nan, np.float32),
                s.fault[keep],
            )
        )
    cfg = TrainConfig(mode="auto", hidden=16, epochs=12, chunk_len=16, batch_size=8, progress=False)
    res = train(healthy, val_seqs, cfg)
    assert res.config.mode == "forecast"
    assert res.model.outputs == ["health"]
    assert res.validation["auroc"] > 0.8
    scores = score_sequences(res.model, val_seqs)
    assert all(float(s.min()) >= 0.0 and float(s.max()) <= 1.0 for s in scores)


# --------------------------------------------------------------------------- gruwatch train, end to end
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gruwatch_train_writes_a_signed_bundle_the_scorer_reproduces(
    sim_dataset: Path, tmp_path: Path, cell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Either cell (--cell): the card says which, and the agent's scorer carries its state (an
    LSTM's holds h and c: two rows per layer) and reproduces torch's full-sequence scores."""
    from edge_agent.bundle import generate_keypair, load_bundle
    from edge_agent.features import extract_batch
    from edge_agent.scorer import Scorer
    from trainer.cli import main
    from trainer.data import load_runs
    from trainer.export import torch_sequence

    priv, pub = generate_keypair(tmp_path / "keys")
    out = tmp_path / "bundle"
    ckpt = tmp_path / "model.pt"
    argv = ["--data", str(sim_dataset), "--out", str(out), "--signing-key", str(priv), "--hidden", "16"]
    argv += ["--epochs", "8", "--chunk-len", "16", "--val-fraction", "0.3", "--seed", "2", "--no-progress"]
    argv += ["--checkpoint", str(ckpt), "--device", "cpu", "--cell", cell]
    target = "life-fraction" if cell == "lstm" else "binary"  # the loss target option, end to end
    argv += ["--health-target", target, "--hi-cap", "1.5"]
    if cell == "lstm":  # simulator onsets give no horizon for the piecewise-linear indicator to rise over
        assert main([*argv[:-3], "hi-linear", *argv[-2:], "--out", str(tmp_path / "no")]) == 1
        assert "no horizon" in capsys.readouterr().err
    assert main(argv) == 0
    card = json.loads((out / "card.json").read_text())
    said = capsys.readouterr().out  # the summary for a person: the alarm rule, validation, what next
    t = card["thresholds"]
    assert f"wrote {out}: model {card['model_version']}, {cell.upper()}, supervised, signed" in said
    assert f"health >= {t['alarm']:.3f} for {t['raise_windows']} window(s) raises it" in said
    assert all(run in said for run in card["training_data"]["validation_runs"][:4])
    assert f"window AUROC {card['validation']['auroc']:.3f}" in said
    assert f"gruwatch evaluate --model {out}" in said
    assert " s on cpu (" in said  # where it trained (--device)
    assert card["training"]["health_target"] == target
    assert card["training"]["hi_cap"] == 1.5
    assert card["mode"] == "supervised"
    assert card["cell"] == cell
    assert card["training"]["cell"] == cell
    assert card["outputs"][0] == "health"
    assert card["state_shape"] == [1 if cell == "gru" else 2, 16]
    assert len(card["training_data"]["fingerprint"]) == 64
    assert card["training_data"]["runs"] == 10
    assert card["validation"]["onnx_parity"]["steps"] == 1000
    assert "auroc" in card["validation"]
    assert card["validation"]["alarms"]["target_false_alarms_per_day"] == 0.1

    bundle = load_bundle(out, trusted_keys=[pub])
    assert bundle.verified
    # The card says what the model was fitted and calibrated on; the agent holds windows to it.
    runs = {r.run_id: r for r in load_runs([sim_dataset], progress=False)}
    val_ids = card["training_data"]["validation_runs"]
    seen = [runs[i] for i in card["training_data"]["train_runs"] + val_ids]
    rms = np.concatenate([np.sqrt(np.mean(r.windows.astype(np.float64) ** 2, axis=1)) for r in seen])
    assert card["trained_on"] == {
        "sample_rates_hz": [12800.0],
        "window_samples": [1024, 1024],
        "rpm": [min(r.rpm for r in seen), max(r.rpm for r in seen)],
        "rms_g": [pytest.approx(rms.min()), pytest.approx(rms.max())],
        "windows": sum(r.n_windows for r in seen),
    }
    assert bundle.trained_on is not None
    assert bundle.trained_on.mismatch(1024, 12800.0, seen[0].rpm) is None
    assert "not one the model was trained on" in str(bundle.trained_on.mismatch(1024, 25600.0, 0.0))
    # The agent's scorer, stepping window by window, reproduces torch's full-sequence scores.
    model = HealthModel.from_checkpoint(torch.load(ckpt, weights_only=True))
    assert model.cell == cell
    scorer = Scorer.from_loaded(bundle)
    for rid in val_ids[:2]:
        run = runs[rid]
        x = extract_batch(run.windows, run.fs, run.rpm, bundle.spec)
        want, _ = torch_sequence(model, x[None])
        got = np.stack([scorer.score_features([rid], x[k : k + 1]).scores[0] for k in range(len(x))])
        np.testing.assert_allclose(got, want[0], atol=1e-5)

    # A second training refuses to overwrite the bundle folder.
    assert main(argv) == 1


def test_forecast_calibration_treats_unlabelled_validation_as_healthy(
    fleet: tuple[list[FeatureSequence], list[FeatureSequence], tuple[str, ...]],
) -> None:
    """Healthy-only users have no labels at all: thresholds must still keep false alarms at the target."""
    train_seqs, val_seqs, _ = fleet

    def unlabelled(seqs: list[FeatureSequence]) -> list[FeatureSequence]:
        out = []
        for s in seqs:
            keep = s.target == 0
            nan = np.full(int(keep.sum()), np.nan, np.float32)
            out.append(
                FeatureSequence(
                    s.run_id, s.machine, s.source, s.features[keep], s.ts[keep], nan, s.fault[keep]
                )
            )
        return out

    cfg = TrainConfig(hidden=8, epochs=3, chunk_len=16, batch_size=8, progress=False)
    res = train(unlabelled(train_seqs), unlabelled(val_seqs), cfg)
    alarms = res.validation["alarms"]
    assert alarms["healthy_machine_days"] > 0
    assert alarms["false_alarms"] == 0
    scores = np.concatenate([s[:, 0] for s in score_sequences(res.model, unlabelled(val_seqs))])
    assert res.thresholds["alarm"] > np.median(scores)


def test_supervised_mode_without_degraded_labels_says_what_to_do(
    fleet: tuple[list[FeatureSequence], list[FeatureSequence], tuple[str, ...]],
) -> None:
    from trainer.data.runs import DataError
    from trainer.train import choose_mode

    train_seqs, _, _ = fleet
    healthy = [
        FeatureSequence(
            s.run_id, s.machine, s.source, s.features, s.ts, np.zeros(len(s), np.float32), s.fault
        )
        for s in train_seqs
    ]
    assert choose_mode("auto", healthy) == "forecast"
    assert choose_mode("auto", train_seqs) == "supervised"
    with pytest.raises(DataError, match="--horizon "):
        choose_mode("supervised", healthy)


def test_calibration_grace_makes_the_windows_just_before_the_horizon_neither_healthy_nor_degraded() -> None:
    from trainer.train import calibration_targets

    target = np.zeros(100, np.float32)
    target[80:] = 1.0
    seq = FeatureSequence(
        "r",
        "m",
        "femto",
        np.zeros((100, 2), np.float32),
        np.arange(100) * 10.0,
        target,
        np.full(100, -1, np.int64),
    )
    cal = calibration_targets(seq, grace_s=200.0)
    assert np.all(cal[:60] == 0.0)
    assert np.all(np.isnan(cal[60:80]))  # 200 s = 20 windows before the degraded stretch
    assert np.all(cal[80:] == 1.0)
    np.testing.assert_array_equal(calibration_targets(seq, 0.0), target)
    healthy_run = FeatureSequence(
        "h", "m", "femto", seq.features, seq.ts, np.zeros(100, np.float32), seq.fault
    )  # no degradation at the end: nothing to be early for
    np.testing.assert_array_equal(calibration_targets(healthy_run, 200.0), 0.0)
    # An alarm raised in the grace zone and held to the end is no false alarm.
    scores = np.where(np.arange(100) >= 65, 0.9, 0.1)
    strict, _ = calibrate([ScoredRun(scores, target, 10.0)], min_raise_windows=2)
    graced, _ = calibrate([ScoredRun(scores, cal, 10.0)], min_raise_windows=2)
    assert graced["alarm"] <= 0.9 < strict["alarm"]


def test_median_run_alarm_is_not_set_by_one_run_with_a_high_healthy_step() -> None:
    quiet = [ScoredRun(np.r_[np.full(50, 0.2), np.full(10, 0.9)], np.r_[np.zeros(50), np.ones(10)], 10.0)] * 2
    step = ScoredRun(
        np.r_[np.full(20, 0.2), np.full(30, 0.8), np.full(10, 0.9)], np.r_[np.zeros(50), np.ones(10)], 10.0
    )
    pooled, _ = calibrate([*quiet, step], min_raise_windows=3, margin=0.05)
    med = median_run_alarm([*quiet, step], 3, 1, margin=0.05)
    assert pooled["alarm"] > 0.8 + 0.05 - 1e-9  # the step run sets the pooled threshold
    assert med is not None
    assert 0.2 + 0.05 <= med < 0.8  # the median follows the two quiet runs
    assert median_run_alarm([ScoredRun(np.full(5, 0.9), np.ones(5), 10.0)], 3, 1) is None  # no healthy time


def test_the_printed_summary_claims_no_false_alarm_rate_from_seconds_of_healthy_data() -> None:
    """CWRU's one healthy recording gives ~1 s of healthy validation: "0 false alarms in 0 healthy
    machine-days = 0 per machine-day" read like a measured rate. Below the time the target needs to
    allow a single raise, the summary says so and names what guards the alarm instead."""
    from trainer.cli import human_summary

    def summary(days: float, false: int) -> str:
        alarms = {
            "false_alarms": false,
            "false_alarms_per_day": false / days,
            "healthy_machine_days": days,
            "target_false_alarms_per_day": 0.1,
            "margin": 0.05,
            "min_raise_windows": 2,
        }
        return human_summary(
            {
                "bundle": "B",
                "model_version": "v",
                "cell": "gru",
                "mode": "supervised",
                "signed": False,
                "thresholds": {"alarm": 0.05, "warning": 0.05, "raise_windows": 3, "clear_windows": 1},
                "validation": {"alarms": alarms},
                "validation_runs": ["r"],
                "seconds": {"fit": 1.0},
            }
        )

    short = summary(1.2 / 86_400, 0)
    assert "0 false alarm(s) in 1 s of healthy validation data: too little to measure a rate" in short
    assert "alarm margin (0.05) and the 3-window raise" in short
    assert "per machine-day (target" not in short
    long = summary(20.0, 1)
    assert "1 false alarm(s) in 20 healthy machine-days = 0.05 per machine-day (target 0.1)" in long
