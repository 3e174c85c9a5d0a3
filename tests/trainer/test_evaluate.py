"""`gruwatch evaluate`: metric functions on hand-computed cases, and the command end to end on a tiny bundle."""

from __future__ import annotations

import doctest
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from trainer import metrics
from trainer.evaluate_cli import _summary

torch.set_num_threads(1)


# --------------------------------------------------------------------------- metric functions
def test_metrics_doctests_pass() -> None:
    result = doctest.testmod(metrics)
    assert result.attempted >= 2
    assert result.failed == 0


def test_auroc_of_known_rankings() -> None:
    y = np.array([0, 0, 0, 1, 1])
    assert metrics.auroc(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0  # perfect ranking
    assert metrics.auroc(y, np.array([0.9, 0.8, 0.7, 0.2, 0.1])) == 0.0  # reversed
    assert metrics.auroc(y, np.full(5, 0.5)) == 0.5  # all tied: one half per pair
    # 6 pairs: (0.35 vs 0.1, 0.4, 0.35) -> 1 + 0 + 0.5; (0.8 vs all) -> 3 => 4.5 / 6
    assert metrics.auroc(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.35, 0.8])) == 0.75
    assert metrics.auroc(np.array([1, 1]), np.array([0.1, 0.2])) is None  # one class only
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # rounding makes ties
    assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_runs_from_origin_to_one() -> None:
    roc = metrics.roc_points(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.6]))
    assert roc["fpr"][0] == 0.0
    assert roc["tpr"][0] == 0.0
    assert roc["fpr"][-1] == 1.0
    assert roc["tpr"][-1] == 1.0
    assert roc["tpr"][2] == 1.0
    assert roc["fpr"][2] == 0.0
    assert all(np.diff(roc["fpr"]) >= 0)
    assert all(np.diff(roc["tpr"]) >= 0)


def test_lead_time_of_a_hand_made_alarm_sequence() -> None:
    ts = np.arange(10) * 60.0  # ten windows a minute apart: life 540 s
    #                 0  1  2  3  4  5  6  7  8  9
    states = np.array([0, 1, 2, 2, 0, 1, 2, 1, 2, 2], np.int8)
    assert metrics.alarm_raises(states).tolist() == [2, 6, 8]
    assert metrics.sustained_alarm_start(states) == 8
    assert metrics.lead_time(ts, states) == (60.0, 60.0 / 540.0)
    always = np.full(10, 2, np.int8)
    assert metrics.lead_time(ts, always) == (540.0, 1.0)  # lead time never exceeds the life
    cleared = states.copy()
    cleared[-1] = 0
    assert metrics.lead_time(ts, cleared) == (None, None)  # alarm off at end of life: missed
    assert metrics.sustained_alarm_start(np.zeros(0, np.int8)) is None


def test_false_alarms_per_machine_day() -> None:
    # Two runs, one window a minute; run A: 1440 healthy windows (1 day) then 60 degraded ones.
    n = 1500
    ts = np.arange(n) * 60.0
    target_a = np.zeros(n, np.float32)
    target_a[1440:] = 1
    states_a = np.zeros(n, np.int8)
    states_a[[100, 101, 500, 1450]] = 2  # raises at 100 and 500 (healthy) and 1450 (degraded)
    # Run B: 720 healthy windows (half a day), one raise; then unknown labels with another raise.
    target_b = np.full(n, np.nan, np.float32)
    target_b[:720] = 0
    states_b = np.zeros(n, np.int8)
    states_b[[10, 900]] = 2
    assert metrics.false_alarms(states_a, target_a) == 2
    assert metrics.false_alarms(states_b, target_b) == 1
    count, days, rate = metrics.false_alarms_per_machine_day(
        [states_a, states_b], [target_a, target_b], [ts, ts]
    )
    assert count == 3
    assert days == pytest.approx(1.5)
    assert rate == pytest.approx(2.0)
    assert metrics.false_alarms_per_machine_day([states_b], [np.full(n, np.nan)], [ts])[2] is None


def test_confusion_matrix_and_fault_accuracy() -> None:
    true = np.array([0, 0, 1, 1, 2, -1])
    pred = np.array([0, 1, 1, 1, 0, 2])
    n = len(true)
    scores = np.zeros((n, 4), np.float32)
    scores[np.arange(n), 1 + pred] = 1.0  # score[:, 1:] are the class probabilities
    run = metrics.RunEval(
        "r", "m", "s", "sim", np.arange(n) * 10.0, scores, np.zeros(n, np.int8),
        np.ones(n, np.float32), true, False,
    )  # fmt: skip
    ft = metrics.quality([run], ("a", "b", "c"))["fault_types"]
    assert ft["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert ft["windows"] == 5
    assert ft["accuracy"] == pytest.approx(3 / 5)
    assert ft["accuracy_degraded"] == pytest.approx(3 / 5)
    run.fault = np.full(n, -1)  # no window with a known class: no accuracy, an empty matrix
    ft = metrics.quality([run], ("a", "b", "c"))["fault_types"]
    assert ft["accuracy"] is None
    assert ft["confusion"] == [[0, 0, 0]] * 3


def test_a_recording_cut_short_counts_how_long_before_its_known_failure_the_alarm_stood() -> None:
    """FEMTO's Test_set: the recording stops before the failure, so no lead time; the alarm standing
    at its end is reported with the time to the known failure added."""
    n = 10
    states = np.array([0, 0, 2, 0, 0, 0, 2, 2, 2, 2], np.int8)  # a false raise, then one that stands

    def cut(after: float | None, st: np.ndarray) -> metrics.RunEval:
        return metrics.RunEval(
            "r", "m", "s", "femto", np.arange(n) * 10.0, np.zeros((n, 1), np.float32), st,
            np.zeros(n, np.float32), np.full(n, -1), False, after,
        )  # fmt: skip

    row = metrics.run_row(cut(339.0, states))
    assert row["lead_time_s"] is None  # not a run that ends in its failure
    assert row["failure_after_end_s"] == 339.0
    assert row["alarm_before_failure_s"] == pytest.approx(
        30.0 + 339.0
    )  # raised at t=60, recording ends at 90
    q = metrics.quality([cut(339.0, states), cut(5730.0, np.zeros(n, np.int8)), cut(None, states)])
    assert q["alarms"]["failing_runs"] == 0
    assert q["alarms"]["cut_short"]["runs"] == 2
    assert q["alarms"]["cut_short"]["alarm_at_end"] == 1
    assert q["alarms"]["cut_short"]["alarm_before_failure_s"]["median"] == pytest.approx(369.0)
    summary = _summary(
        {"model": {"model_version": "v"}, "signature": "verified", "data": {"runs": 3}, **q}, "E"
    )
    assert (
        "  runs cut short          2 (stopped before their known failure); alarm on at the end of 1, "
        "raised 369 s before the failure (median)\n"
    ) in summary


# --------------------------------------------------------------------------- a tiny bundle, once
@dataclass(frozen=True)
class Tiny:
    data: Path
    bundle: Path
    pub: Path
    other_pub: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A small simulated dataset and a signed bundle trained on it with the trainer's own command."""
    from edge_agent.bundle import generate_keypair
    from simulator.cli import main as simulate
    from trainer.cli import main as train

    root = tmp_path_factory.mktemp("evaluate")
    data = root / "sim"
    args = ["dataset", "--out", str(data), "--machines", "6", "--seed", "3", "--horizon", "900"]
    args += ["--fs", "12800", "--window", "1024", "--interval", "10", "--no-progress"]
    assert simulate(args) == 0
    priv, pub = generate_keypair(root / "keys")
    _, other_pub = generate_keypair(root / "other")
    bundle = root / "bundle"
    argv = ["--data", str(data), "--out", str(bundle), "--signing-key", str(priv), "--hidden", "8"]
    argv += ["--epochs", "4", "--chunk-len", "16", "--val-fraction", "0.34", "--seed", "1"]
    argv += ["--no-progress", "--device", "cpu"]
    assert train(argv) == 0
    return Tiny(data, bundle, pub, other_pub)


@pytest.fixture(scope="session")
def evaluated(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from trainer.evaluate_cli import main

    out = tmp_path_factory.mktemp("eval") / "out"
    argv = ["--model", str(tiny.bundle), "--data", str(tiny.data), "--out", str(out)]
    argv += ["--trusted-keys", str(tiny.pub), "--no-progress"]
    assert main(argv) == 0
    return out, json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------------------- the command
TOP_KEYS = {
    "schema",
    "generated",
    "signature",
    "signature_key_id",
    "model",
    "data",
    "windows",
    "alarms",
    "fault_types",
    "runs",
    "timing",
    "baselines",
}
RUN_KEYS = {
    "run_id",
    "machine",
    "sensor",
    "source",
    "windows",
    "life_s",
    "failed_at_end",
    "degraded_from_s",
    "first_alarm_s",
    "alarm_raises",
    "alarm_at_end",
    "lead_time_s",
    "failure_after_end_s",
    "alarm_before_failure_s",
    "lead_fraction",
    "detection_delay_s",
    "false_alarms",
    "healthy_days",
    "max_health",
}


def test_metrics_json_has_the_documented_keys_and_sane_values(
    evaluated: tuple[Path, dict], tiny: Tiny
) -> None:
    _, m = evaluated
    assert set(m) == TOP_KEYS
    assert m["schema"] == 1
    assert m["signature"] == "verified"
    assert isinstance(m["signature_key_id"], str)
    assert len(m["signature_key_id"]) == 16
    card = json.loads((tiny.bundle / "card.json").read_text())
    assert m["model"]["model_version"] == card["model_version"]
    assert m["model"]["thresholds"] == card["thresholds"]
    assert m["data"]["runs"] == 6 == len(m["runs"])

    w = m["windows"]
    assert w["count"] == sum(r["windows"] for r in m["runs"])
    assert w["degraded"] + w["healthy"] == w["labelled"] <= w["count"]
    assert w["degraded"] > 0
    assert w["healthy"] > 0
    assert 0.0 <= w["auroc"] <= 1.0
    assert len(w["roc"]["fpr"]) == len(w["roc"]["tpr"]) >= 2

    a = m["alarms"]
    failing = [r for r in m["runs"] if r["failed_at_end"]]
    assert a["failing_runs"] == len(failing) >= 1
    assert a["detected"] + a["missed"] == a["failing_runs"]
    assert a["detected"] == sum(1 for r in failing if r["alarm_at_end"])
    assert a["false_alarms"] == sum(r["false_alarms"] for r in m["runs"])
    assert a["healthy_machine_days"] == pytest.approx(sum(r["healthy_days"] for r in m["runs"]))
    assert a["false_alarms_per_machine_day"] == pytest.approx(a["false_alarms"] / a["healthy_machine_days"])
    assert 0.0 <= a["degraded_windows_in_alarm"] <= 1.0
    assert a["cut_short"] == {"runs": 0, "alarm_at_end": 0, "alarm_before_failure_s": metrics.describe([])}
    for r in m["runs"]:
        assert set(r) == RUN_KEYS
        assert 0 <= r["false_alarms"] <= r["alarm_raises"]
        if r["lead_time_s"] is not None:
            assert r["failed_at_end"]
            assert r["alarm_at_end"]
            assert 0.0 <= r["lead_time_s"] <= r["life_s"]
            assert 0.0 <= r["lead_fraction"] <= 1.0
            assert r["lead_fraction"] == pytest.approx(r["lead_time_s"] / r["life_s"])
        if r["first_alarm_s"] is not None:
            assert 0.0 <= r["first_alarm_s"] <= r["life_s"]
        assert 0.0 <= r["max_health"] <= 1.0

    ft = m["fault_types"]
    assert ft["classes"] == [o.removeprefix("p_") for o in card["outputs"][1:]]
    cm = np.array(ft["confusion"])
    assert cm.shape == (len(ft["classes"]),) * 2
    assert cm.sum() == ft["windows"]
    assert ft["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert 0.0 <= ft["accuracy_degraded"] <= 1.0


def test_evaluate_scores_equal_a_direct_scorer_run(tiny: Tiny) -> None:
    """Runs stepped side by side give each run the scores and alarm states of a scorer fed alone."""
    from edge_agent.features import extract_batch
    from edge_agent.protocol import Window
    from edge_agent.scorer import Scorer
    from trainer.data import load_runs
    from trainer.evaluate import STATE_CODES, evaluate_runs

    runs = load_runs([tiny.data], progress=False)
    scorer = Scorer.from_bundle(tiny.bundle, trusted_keys=[tiny.pub])
    results, _, _ = evaluate_runs(scorer, runs, progress=False)
    assert scorer.n_tracked == 0  # evaluation leaves no state behind
    for i, (run, res) in enumerate(zip(runs, results, strict=True)):
        alone = Scorer.from_bundle(tiny.bundle, trusted_keys=[tiny.pub])
        if i == 0:  # the agent's own path: decoded windows in, one at a time
            got = [
                alone.score_one("s", Window(k, int(run.ts[k] * 1e9), run.fs, run.rpm, run.windows[k]))
                for k in range(run.n_windows)
            ]
            want, states = np.stack([g.scores for g in got]), [g.state for g in got]
        else:
            x = extract_batch(run.windows, run.fs, run.rpm, alone.spec)
            batches = [alone.score_features(["s"], x[k : k + 1]) for k in range(len(x))]
            want, states = np.concatenate([b.scores for b in batches]), [b.states[0] for b in batches]
        np.testing.assert_allclose(res.scores, want, atol=1e-6, rtol=0)
        assert res.states.tolist() == [STATE_CODES[s] for s in states]
        assert res.scores.shape == (run.n_windows, len(alone.outputs))


def test_report_is_self_contained_with_an_svg_per_plot(evaluated: tuple[Path, dict]) -> None:
    out, m = evaluated
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", page)
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    # one per run, the ROC curve and the confusion matrix
    assert len(svgs) == len(m["runs"]) + 2
    for svg in svgs:
        ET.fromstring(svg)  # each plot is well-formed XML
    assert "ROC curve" in page
    assert "confusion matrix" in page
    assert "Lead time per failing run" in page
    for r in m["runs"]:
        assert r["run_id"] in page


def test_without_trusted_keys_it_says_the_signature_was_not_verified(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.evaluate_cli import main

    out = tmp_path / "eval"
    argv = ["--model", str(tiny.bundle), "--data", str(tiny.data), "--out", str(out), "--no-progress"]
    argv += ["--held-out"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "NOT verified" in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["signature"] == "not verified"
    assert m["signature_key_id"] is None
    card = json.loads((tiny.bundle / "card.json").read_text())
    assert sorted(r["run_id"] for r in m["runs"]) == sorted(card["training_data"]["validation_runs"])
    assert "not verified" in (out / "report.html").read_text(encoding="utf-8")


def test_a_bundle_signed_by_an_untrusted_key_is_refused(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.evaluate_cli import main

    out = tmp_path / "eval"
    argv = ["--model", str(tiny.bundle), "--data", str(tiny.data), "--out", str(out)]
    argv += ["--trusted-keys", str(tiny.other_pub), "--no-progress"]
    assert main(argv) == 1
    assert "gruwatch evaluate:" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()


def test_baselines_need_training_runs(tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.evaluate_cli import main

    argv = ["--model", str(tiny.bundle), "--data", str(tiny.data), "--out", str(tmp_path / "e")]
    argv += ["--baselines", "--no-progress"]
    assert main(argv) == 1
    assert "--train-data" in capsys.readouterr().err


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("mode", ["supervised", "forecast"])
def test_lstm_baseline_steps_in_onnx_like_torch(mode: str) -> None:
    from edge_agent.bundle import make_session
    from trainer.export import export_onnx, onnx_sequence, torch_sequence
    from trainer.model import HealthModel

    torch.manual_seed(0)
    classes = ("healthy", "outer", "inner") if mode == "supervised" else ()
    model = HealthModel(5, cell="lstm", hidden=6, layers=2, mode=mode, fault_classes=classes)
    if mode == "forecast":
        model.set_error_calibration(-1.0, 0.5)
    assert model.state_shape == [4, 6]
    x = np.random.default_rng(0).normal(size=(3, 40, 5)).astype(np.float32)
    want, h_want = torch_sequence(model, x)
    got, h_got, _ = onnx_sequence(make_session(export_onnx(model)), x, np.zeros((4, 3, 6), np.float32))
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(h_got, h_want, atol=1e-5)
    gru = HealthModel(5, hidden=6, layers=2)
    lstm = HealthModel(5, cell="lstm", hidden=6, layers=2)
    rec = lambda m: sum(p.numel() for n, p in m.named_parameters() if n.startswith(("gru", "lstm")))  # noqa: E731
    assert rec(lstm) * 3 == rec(gru) * 4  # an LSTM has a third more recurrent weights than a GRU


def test_an_lstm_bundle_is_named_as_one_and_compared_with_a_gru(tiny: Tiny, tmp_path: Path) -> None:
    from trainer.cli import main as train
    from trainer.evaluate_cli import main

    bundle = tmp_path / "lstm"
    argv = [
        "--data",
        str(tiny.data),
        "--out",
        str(bundle),
        "--hidden",
        "8",
        "--epochs",
        "2",
        "--cell",
        "lstm",
    ]
    argv += ["--chunk-len", "16", "--val-fraction", "0.34", "--seed", "1", "--no-progress", "--device", "cpu"]
    assert train(argv) == 0
    out = tmp_path / "eval"
    argv = ["--model", str(bundle), "--data", str(tiny.data), "--out", str(out), "--held-out"]
    argv += ["--baselines", "--lstm-epochs", "2", "--no-progress"]
    assert main(argv) == 0
    rows = {b["name"]: b for b in json.loads((out / "metrics.json").read_text())["baselines"]}
    assert next(iter(rows)) == "LSTM (bundle)"
    assert "GRU (same hidden size)" in rows
    assert "LSTM (same hidden size)" not in rows
    # Equal hidden size: the LSTM (the bundle's retrain) has a third more recurrent weights than the GRU.
    assert rows["LSTM (bundle)"]["parameters"] > rows["GRU (same hidden size)"]["parameters"]


def test_replayed_alarms_match_the_agent_state_machine() -> None:
    from edge_agent.alarms import AlarmState, Thresholds, step
    from trainer.baselines import replay_alarms

    rng = np.random.default_rng(3)
    health = [rng.uniform(size=n) for n in (5, 40, 17)]
    thr = {"warning": 0.5, "alarm": 0.7, "raise_windows": 2, "clear_windows": 3}
    got = replay_alarms(health, thr)
    for h, states in zip(health, got, strict=True):
        st = AlarmState.fresh(1)
        want = [int(step(st, np.array([v]), Thresholds.from_dict(thr))[1][0]) for v in h]
        assert states.tolist() == want


def test_baselines_on_the_same_split(tiny: Tiny, tmp_path: Path) -> None:
    from trainer.evaluate_cli import main

    out = tmp_path / "eval"
    argv = ["--model", str(tiny.bundle), "--data", str(tiny.data), "--out", str(out), "--held-out"]
    argv += ["--baselines", "--lstm-epochs", "2", "--no-progress"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = {b["name"]: b for b in m["baselines"]}
    assert next(iter(rows)) == "GRU (bundle)"
    assert {
        "rms threshold",
        "kurtosis threshold",
        "isolation forest",
        "logistic regression",
        "LSTM (same hidden size)",
    } <= set(rows)
    gru = rows["GRU (bundle)"]
    assert gru["auroc"] == m["windows"]["auroc"]  # the bundle's row is the step-wise evaluation
    assert gru["detected"] == m["alarms"]["detected"]
    card = json.loads((tiny.bundle / "card.json").read_text())
    layers, H = card["state_shape"]
    F, C = len(card["feature_spec"]["names"]), len(card["outputs"]) - 1
    gru_params = 3 * (F * H + H * H + 2 * H) + (H + 1) + (H * C + C if C else 0)
    assert layers == 1
    assert gru["parameters"] == gru_params
    assert rows["LSTM (same hidden size)"]["parameters"] == gru_params + (F * H + H * H + 2 * H)
    for b in rows.values():
        assert b["auroc"] is None or 0.0 <= b["auroc"] <= 1.0
        assert b["failing_runs"] == m["alarms"]["failing_runs"]
        assert 0 <= b["detected"] <= b["failing_runs"]
        assert b["train_s"] > 0
        assert b["step_latency_us"] > 0
        assert b["parameters"] > 0
        if b["lead_fraction_median"] is not None:
            assert 0.0 <= b["lead_fraction_median"] <= 1.0
    assert rows["logistic regression"]["fault_accuracy"] is not None
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Baselines" in page
    assert "isolation forest" in page


def test_help_teaches_the_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.evaluate_cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("lead time", "false alarms", "AUROC", "--trusted-keys", "--baselines", "examples:"):
        assert word in text


def test_runs_the_agent_would_refuse_are_left_out_and_named(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run at a sample rate the model never saw is not scored (the agent says model_mismatch)."""
    from simulator.cli import main as simulate
    from trainer.evaluate_cli import main

    fast = tmp_path / "sim25k"
    args = ["dataset", "--out", str(fast), "--machines", "2", "--seed", "9", "--horizon", "900"]
    args += ["--fs", "25600", "--window", "1024", "--interval", "10", "--no-progress"]
    assert simulate(args) == 0
    out = tmp_path / "eval"
    argv = [
        "--model",
        str(tiny.bundle),
        "--data",
        str(tiny.data),
        str(fast),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    io = capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    left = m["data"]["left_out"]
    assert len(left) == 2
    assert all("fs=25600 Hz" in row["reason"] and row["windows"] > 0 for row in left)
    assert m["data"]["runs"] == 6 == len(m["runs"])  # tiny's own six runs, scored as before
    assert not {r["run_id"] for r in m["runs"]} & {row["run_id"] for row in left}
    assert "2 of 8 runs left out" in io.err
    assert "--target-fs" in io.err
    assert "runs left out           2" in io.out
    assert "left out" in (out / "report.html").read_text(encoding="utf-8")

    # Only such runs: refused before any scoring, saying what to do.
    assert (
        main(
            ["--model", str(tiny.bundle), "--data", str(fast), "--out", str(tmp_path / "e2"), "--no-progress"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "none of the 2 runs" in err
    assert "--target-fs" in err
    assert not (tmp_path / "e2" / "metrics.json").exists()

    # Resampled to the trained rate they are scored.
    argv = ["--model", str(tiny.bundle), "--data", str(fast), "--out", str(tmp_path / "e3"), "--no-progress"]
    assert main([*argv, "--target-fs", "12800"]) == 0
    m3 = json.loads((tmp_path / "e3" / "metrics.json").read_text())
    assert m3["data"]["left_out"] == []
    assert m3["data"]["runs"] == 2
