"""Run-to-failure data end to end: `gruwatch train` defaults decide the kind, declare the per-sensor
baseline in the bundle, and the agent's Scorer applies exactly the trainer's normalisation; its state
survives a restart (export/import) and a reset makes the sensor learn a new baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.baseline import normalise_run
from edge_agent.bundle import load_bundle
from edge_agent.features import extract_batch
from edge_agent.scorer import Scorer
from trainer.data import load_runs

SNAPSHOTS = 130


def _write_bearing(folder: Path, seed: int) -> None:
    """A FEMTO-format bearing folder: acc_NNNNN.csv, 2,560 rows, louder and ringing near the end."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    t = np.arange(2560) / 25600.0
    for i in range(SNAPSHOTS):
        grow = 1.0 + 8.0 * max(0.0, (i - 0.85 * SNAPSHOTS) / (0.15 * SNAPSHOTS)) ** 2
        ring = 0.3 * grow * np.sin(2 * np.pi * 9000.0 * t) * (i > 0.85 * SNAPSHOTS)
        h = rng.normal(0.0, 0.4, 2560) * (1.5 if i < 20 else 1.0) + ring
        v = rng.normal(0.0, 0.3, 2560) * grow
        clock = np.tile([9.0, 30.0, 1.0, 0.0], (2560, 1))
        np.savetxt(folder / f"acc_{i + 1:05d}.csv", np.column_stack([clock, h, v]), fmt="%.5f", delimiter=",")


@pytest.fixture(scope="module")
def femto_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("femto") / "Learning_set"
    for k in range(3):
        _write_bearing(root / f"Bearing1_{k + 1}", seed=k)
    return root


def test_defaults_on_run_to_failure_data_declare_a_baseline_the_scorer_applies(
    femto_like: Path, tmp_path: Path
) -> None:
    from trainer.cli import main

    out = tmp_path / "bundle"
    assert (
        main(
            ["--data", str(femto_like), "--out", str(out), "--epochs", "2", "--hidden", "8", "--no-progress"]
        )
        == 0
    )
    card = json.loads((out / "card.json").read_text())
    plan = card["training_data"]["plan"]
    assert plan["kind"] == "run-to-failure"
    assert plan["horizon_s"] > 0
    assert plan["horizon_reason"]
    assert card["feature_spec"]["version"] == 2
    assert card["feature_spec"]["baseline"]["learn_windows"] == 60
    assert card["feature_spec"]["band_edges_hz"][-1] == 12800.0

    bundle = load_bundle(out, allow_unsigned=True)
    spec = bundle.spec
    assert spec.baseline is not None
    run = load_runs([femto_like / "Bearing1_1"], progress=False)[0]
    raw = extract_batch(run.windows, run.fs, run.rpm, spec)
    # What the trainer fed the model: the run normalised window by window (edge_agent.baseline).
    y = normalise_run(spec.baseline, raw)
    h = np.zeros((bundle.state_shape[0], 1, bundle.state_shape[1]), np.float32)
    want = []
    for k in range(len(y)):
        score, h = bundle.session.run(["score", "h_out"], {"features": y[k : k + 1], "h": h})
        want.append(score[0])
    scorer = Scorer.from_loaded(bundle)
    got = [scorer.score_features(["m/s"], raw[k : k + 1]).scores[0] for k in range(len(raw))]
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-6)

    # Restart: states exported after 100 windows and imported into a new scorer resume the baseline.
    first = Scorer.from_loaded(bundle)
    for k in range(100):
        first.score_features(["m/s"], raw[k : k + 1])
    saved = first.export_states()
    assert saved.baseline is not None
    assert saved.baseline.shape == (1, 1 + 2 * spec.n_features)
    assert saved.baseline[0, 0] == 90
    second = Scorer.from_loaded(bundle)
    second.import_states(saved)
    resumed = [second.score_features(["m/s"], raw[k : k + 1]).scores[0] for k in range(100, len(raw))]
    np.testing.assert_allclose(np.array(resumed), np.array(got[100:]), atol=1e-6)

    # A gap or a restarted sequence resets the hidden state only: the baseline belongs to the bearing.
    kept = second.table.data["baseline"][second.table.row("m/s")].copy()
    assert second.reset("m/s")
    np.testing.assert_array_equal(second.table.data["baseline"][second.table.row("m/s")], kept)
    assert second.table.data["steps"][second.table.row("m/s")] == 0
    assert not second.table.data["h"][second.table.row("m/s")].any()

    # Maintenance (bearing replaced): forget drops the baseline; the sensor scores as a new one.
    assert second.forget("m/s")
    fresh = Scorer.from_loaded(bundle)
    after = [second.score_features(["m/s"], raw[k : k + 1]).scores[0] for k in range(95)]
    again = [fresh.score_features(["m/s"], raw[k : k + 1]).scores[0] for k in range(95)]
    np.testing.assert_allclose(np.array(after), np.array(again), atol=1e-7)


def test_the_agent_store_keeps_the_baseline_over_a_restart(femto_like: Path, tmp_path: Path) -> None:
    """The daemon's saved states (SQLite) carry each sensor's baseline; a restart resumes it."""
    from edge_agent import saved_states
    from edge_agent.sequencing import SequenceTracker
    from edge_agent.store import Store
    from trainer.cli import main

    out = tmp_path / "bundle"
    assert (
        main(
            ["--data", str(femto_like), "--out", str(out), "--epochs", "1", "--hidden", "8", "--no-progress"]
        )
        == 0
    )
    bundle = load_bundle(out, allow_unsigned=True)
    run = load_runs([femto_like / "Bearing1_2"], progress=False)[0]
    raw = extract_batch(run.windows, run.fs, run.rpm, bundle.spec)
    live = Scorer.from_loaded(bundle)
    tracker = SequenceTracker(gap_reset_s=3600.0, max_sensors=10)
    for k in range(100):
        live.score_features(["m/s"], raw[k : k + 1])
    tracker.put("m/s", 100, 100 * 10**10)
    with Store.open(tmp_path / "agent.db", budget_bytes=1 << 28) as store:
        saved_states.save_all(store, live, tracker)
    restarted, tracker2 = Scorer.from_loaded(bundle), SequenceTracker(gap_reset_s=3600.0, max_sensors=10)
    with Store.open(tmp_path / "agent.db", budget_bytes=1 << 28) as store:
        saved_states.restore(store, restarted, tracker2)
    before = live.table.data["baseline"][live.table.row("m/s")]
    after = restarted.table.data["baseline"][restarted.table.row("m/s")]
    np.testing.assert_array_equal(after, before)
    assert after[0] == 90  # complete: 30 run-in + 60 learned windows
    want = [live.score_features(["m/s"], raw[k : k + 1]).scores[0] for k in range(100, 110)]
    got = [restarted.score_features(["m/s"], raw[k : k + 1]).scores[0] for k in range(100, 110)]
    np.testing.assert_allclose(got, want, atol=1e-6)
