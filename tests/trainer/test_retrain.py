"""Retraining's parts: the champion read back from ONNX, labels and lives from events, the decision,
a month of one sensor at default settings as a training set, checks before long work, events-out.

The whole loop over MQTT (agent → export → retrain → deploy → swap) is tests/test_loop_e2e.py.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.bundle import load_bundle
from edge_agent.raw_ring import sampled as _sampled
from edge_agent.settings import AgentSettings
from edge_agent.store import Store, WindowRow
from gruwatch.demo_model import SHIPPED
from simulator.events_out import fleet_events
from simulator.fleet_model import build_fleet
from trainer.champion import _matches, model_from_bundle
from trainer.data.agent import load_agent_features
from trainer.data.events import MaintenanceEvent
from trainer.retrain import decide, label_streams
from trainer.retrain_cli import main as retrain_main

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_the_champion_is_read_back_from_its_onnx_graph() -> None:
    bundle = load_bundle(SHIPPED, allow_unsigned=True)
    model = model_from_bundle(bundle)
    assert model.mode == bundle.card["mode"]
    assert [model.state_rows, model.hidden] == bundle.card["state_shape"]
    assert model.outputs == list(bundle.outputs)
    assert _matches(model, bundle.session, bundle.n_features, steps=50) < 1e-5
    # Whole sequences (what fine-tuning trains) agree with the ONNX graph stepped window by window.
    rng = np.random.default_rng(1)
    x = model.feature_mean.numpy() + model.feature_scale.numpy() * rng.standard_normal(
        (30, bundle.n_features)
    )
    x = x.astype(np.float32)
    with torch.no_grad():
        seq_scores, _ = model(torch.as_tensor(x[None]))
    h = np.zeros((model.layers, 1, model.hidden), np.float32)
    for t in range(30):
        score, h = bundle.session.run(["score", "h_out"], {"features": x[t : t + 1], "h": h})
        assert np.allclose(seq_scores[0, t].numpy(), score[0], atol=1e-5)


def _stream(tmp_path: Path, n: int, *, interval_s: float = 60.0, fraction: float = 0.01) -> Path:
    """An agent store holding `n` windows of one sensor, raw samples for the agent's sampled share."""
    settings_budget = AgentSettings.model_fields["store_budget_bytes"].default
    rng = np.random.default_rng(0)
    with Store.open(tmp_path / "agent.sqlite", budget_bytes=settings_budget) as store:
        for start in range(0, n, 512):
            rows = []
            for k in range(start, min(start + 512, n)):
                raw = rng.standard_normal(2560).astype(np.float32) if _sampled("m1/s0", k, fraction) else None
                rows.append(
                    WindowRow(
                        "m1/s0",
                        k,
                        int((T0 + k * interval_s) * 1e9),
                        rng.standard_normal(25).astype(np.float32),
                        0.1,
                        "ok",
                        "v1",
                        fs=25600.0,
                        raw=raw,
                    )
                )
            store.record_batch(rows)
        assert store.size_bytes() < settings_budget / 20
        assert not store.enforce_budget().any, "a month fits the default disk budget without eviction"
        store.export_runs(tmp_path / "collected")
    return tmp_path / "collected"


@pytest.mark.slow
def test_a_month_of_one_sensor_at_defaults_is_a_training_set(tmp_path: Path) -> None:
    """One window a minute for 30 days at the default raw_sample_fraction: every window trains."""
    n = 30 * 24 * 60
    collected = _stream(tmp_path, n, fraction=AgentSettings.model_fields["raw_sample_fraction"].default)
    manifest = json.loads((collected / "manifest.json").read_text())
    assert manifest["files"][0]["raw_windows"] < n * 0.02  # raw samples: about 1 % only
    (stream,) = load_agent_features(collected)
    assert len(stream) == n
    assert stream.n_features == 25
    failure = MaintenanceEvent("m1", "s0", T0 + (n - 1) * 60.0, "failure")
    (item,) = label_streams([stream], [failure], horizon_s=2 * 86400.0)
    assert len(item.seq) == n  # the agent's cadence: one step per window, no gaps
    assert int(item.seq.target.sum()) == 2 * 24 * 60 + 1  # the last two days (and the failure window)
    assert item.lives == [(0, n, True)]


def test_labels_and_lives_from_events() -> None:
    from trainer.data.agent import CollectedStream

    ts = (T0 + np.arange(10) * 100.0) * 1e9
    s = CollectedStream(
        export="x",
        agent_id="gw",
        machine="m1",
        sensor="s0",
        file="m1__s0.npz",
        features=np.zeros((10, 3), np.float32),
        ts_ns=ts.astype(np.int64),
        seq=np.arange(10),
        score=np.zeros(10, np.float32),
        state=np.array(["ok"] * 10),
        model=np.array(["v1"] * 10),
        raw_windows=0,
    )
    events = [
        MaintenanceEvent("m1", "s0", T0 + 300.0, "failure"),  # ends life 0 at window 3
        MaintenanceEvent("m1", None, T0 + 450.0, "inspection_ok"),  # changes nothing
        MaintenanceEvent("m1", "s0", T0 + 650.0, "replacement"),  # ends life 1 without a failure
        MaintenanceEvent("m2", "s0", T0 + 500.0, "failure"),  # another machine
    ]
    (item,) = label_streams([s], events, horizon_s=150.0)
    assert item.seq.target.tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert item.lives == [(0, 4, True), (4, 7, False), (7, 10, False)]
    assert item.labels.failed_at_end


def test_each_life_learns_its_own_baseline_as_the_agent_does() -> None:
    """With a per-sensor baseline, retraining's inputs restart the baseline at each replacement or
    failure in the maintenance log: what `gruwatch agent reset-baseline` does on the gateway."""
    from edge_agent.baseline import BaselineSpec, normalise_run
    from trainer.data.agent import CollectedStream

    rng = np.random.default_rng(3)
    feats = rng.normal(size=(12, 3)).astype(np.float32) + np.repeat([0.0, 5.0], 6)[:, None].astype(np.float32)
    ts = ((T0 + np.arange(12) * 100.0) * 1e9).astype(np.int64)
    s = CollectedStream("x", "gw", "m1", "s0", "f.npz", feats, ts, np.arange(12), np.zeros(12, np.float32),
                        np.array(["ok"] * 12), np.array(["v1"] * 12), 0)  # fmt: skip
    spec = BaselineSpec(skip_windows=1, learn_windows=2)
    replaced = [MaintenanceEvent("m1", "s0", T0 + 550.0, "replacement")]  # after window 5
    (item,) = label_streams([s], replaced, horizon_s=None, baseline=spec)
    assert item.lives == [(0, 6, False), (6, 12, False)]
    np.testing.assert_array_equal(item.seq.features[:6], normalise_run(spec, feats[:6]))
    np.testing.assert_array_equal(item.seq.features[6:], normalise_run(spec, feats[6:]))
    assert not item.seq.features[6:8].any()  # the new bearing learns: zeros until its baseline is complete
    (whole,) = label_streams([s], [], horizon_s=None, baseline=spec)
    assert np.abs(whole.seq.features[6:]).min() > 1.0  # without the event, one baseline: a 5σ jump


def test_the_challenger_must_be_better() -> None:
    champ = {"auroc": 0.90, "false_alarms": 1, "false_alarms_per_machine_day": 0.5}
    assert decide(champ, {**champ, "auroc": 0.95}, "auroc", 0.0, False)[0] == "challenger"
    assert decide(champ, {**champ, "auroc": 0.90}, "auroc", 0.0, False)[0] == "champion"
    assert decide(champ, {**champ, "auroc": 0.92}, "auroc", 0.05, False)[0] == "champion"
    worse_fa = {**champ, "auroc": 0.99, "false_alarms": 2}
    winner, why = decide(champ, worse_fa, "auroc", 0.0, False)
    assert winner == "champion"
    assert "false alarms" in why
    assert decide(champ, worse_fa, "auroc", 0.0, True)[0] == "challenger"
    lower = {**champ, "false_alarms_per_machine_day": 0.1}
    assert decide(champ, lower, "false_alarms_per_machine_day", 0.0, False)[0] == "challenger"
    assert decide(champ, {**champ, "auroc": None}, "auroc", 0.0, False)[0] == "champion"


def test_retrain_checks_its_inputs_before_long_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.signing import generate_keypair

    key, _ = generate_keypair(tmp_path / "keys")
    collected = _stream(tmp_path, 50)
    base = ["--collected", str(collected), "--current", str(SHIPPED), "--signing-key", str(key)]

    def run(*extra: str) -> str:
        assert retrain_main([*base, *extra]) == 1
        return capsys.readouterr().err

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert "is not empty" in run("--out", str(tmp_path / "busy"))
    assert "--events CSV is needed" in run("--out", str(tmp_path / "o1"), "--horizon", "1h")
    assert "not trained with a horizon" in run("--out", str(tmp_path / "o2"))
    events = tmp_path / "events.csv"
    events.write_text("machine,sensor,ts,event\nm1,s0,2026-01-01T00:10:00Z,broken\n")
    assert "broken" in run("--out", str(tmp_path / "o3"), "--events", str(events), "--horizon", "60s")
    events.write_text("machine,sensor,ts,event\nm9,s0,2026-01-01T00:10:00Z,failure\n")
    err = run("--out", str(tmp_path / "o4"), "--events", str(events), "--horizon-s", "60")  # older spelling
    assert "no failure in the events falls within the collected data" in err
    assert "Traceback" not in err
    assert "not an agent export" in run("--out", str(tmp_path / "o5"), "--collected", str(tmp_path))
    assert "is a public key" in run(
        "--out", str(tmp_path / "o6"), "--signing-key", str(key.with_suffix(".pub"))
    )
    (tmp_path / "file").write_text("x")
    assert "is a file" in run("--out", str(tmp_path / "file" / "under"))


def test_fleet_events_are_what_a_plant_records(tmp_path: Path) -> None:
    fleet = build_fleet(6, 5, horizon_s=3 * 3600.0, interval_s=30.0, healthy_fraction=0.5)
    offered = [r.n_windows for r in fleet]
    offered[0] = 10  # a sensor stopped early: inspected, not failed
    start_ns = int(T0 * 1e9)
    rows = fleet_events(fleet, offered, start_ns)
    failures = {(r["machine"], r["sensor"]) for r in rows if r["event"] == "failure"}
    expected = {(r.machine, r.sensor) for i, r in enumerate(fleet) if r.failure_s is not None and i != 0}
    assert failures == expected
    by_id = {(r["machine"], r["sensor"]): r for r in rows}
    first = fleet[0]
    assert by_id[(first.machine, first.sensor)]["event"] == "inspection_ok"
    for r in fleet[1:]:
        row = by_id[(r.machine, r.sensor)]
        when = datetime.fromisoformat(row["ts"].replace("Z", "+00:00")).timestamp() - T0
        expect = r.failure_s if r.failure_s is not None else r.t(r.n_windows - 1)
        assert math.isclose(when, expect, abs_tol=1e-3)
    path = tmp_path / "events.csv"
    from simulator.events_out import write_fleet_events
    from trainer.data.events import load_events_csv

    assert write_fleet_events(path, fleet, offered, start_ns) == len(expected)
    assert len(load_events_csv(path)) == len(rows)
    with path.open() as fh:
        assert next(csv.reader(ln for ln in fh if not ln.startswith("#"))) == [
            "machine",
            "sensor",
            "ts",
            "event",
        ]
