"""Retraining's parts: the champion read back from ONNX, labels and lives from events, the decision,
a month of one sensor at default settings as a training set, checks before long work, events-out.

The whole loop over MQTT (agent → export → retrain → deploy → swap) is tests/test_loop_e2e.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edge_agent.bundle import load_bundle, make_session
from edge_agent.raw_ring import sampled as _sampled
from edge_agent.settings import AgentSettings
from edge_agent.store import Store, WindowRow
from gruwatch.demo_model import SHIPPED
from simulator.events_out import fleet_events
from simulator.fleet_model import build_fleet
from trainer.champion import _matches, model_from_bundle
from trainer.data.agent import load_agent_features
from trainer.data.events import MaintenanceEvent
from trainer.export import write_model_bundle
from trainer.model import HealthModel
from trainer.retrain import decide, label_streams
from trainer.retrain_cli import main as retrain_main

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
F_SHIPPED = load_bundle(SHIPPED, allow_unsigned=True).n_features


# The shipped demo bundle as exported before 34eecbb (the cell's biases named, its matrices anonymous
# transposes): the form of the bundles deployed before then, which must stay fine-tunable.
BEFORE_STEP_FORM = Path(__file__).resolve().parent / "bundle_before_34eecbb"


@pytest.mark.parametrize("path", [SHIPPED, BEFORE_STEP_FORM], ids=["shipped", "before-34eecbb"])
def test_the_champion_is_read_back_from_its_onnx_graph(path: Path) -> None:
    import onnx

    bundle = load_bundle(path, allow_unsigned=True)
    names = {i.name for i in onnx.load(str(path / "model.onnx")).graph.initializer}
    if path == BEFORE_STEP_FORM:
        assert "model.gru.bias_ih_l0" in names
        assert "l0_0" not in names
    else:  # rebuilt by today's exporter: the step form
        assert "l0_0" in names
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


def _fresh(cell: str, mode: str, layers: int, seed: int = 0) -> HealthModel:
    """A tiny untrained model of the shipped feature spec, its scaler far from (0, 1)."""
    torch.manual_seed(seed)
    classes = ("healthy", "outer") if mode == "supervised" else ()
    model = HealthModel(F_SHIPPED, cell=cell, hidden=4, layers=layers, mode=mode, fault_classes=classes)
    rng = np.random.default_rng(seed)
    model.set_scaler(rng.normal(size=F_SHIPPED) * 5, rng.uniform(0.05, 20.0, size=F_SHIPPED))
    if mode == "forecast":
        model.set_error_calibration(-1.3, 0.4)
    return model.eval()


def _write_fresh(out: Path, model: HealthModel, signing_key: Path | None = None) -> Path:
    """`model` exported by today's trainer into a bundle (the shipped card's spec and thresholds)."""
    card = json.loads((SHIPPED / "card.json").read_text())
    rng = np.random.default_rng(5)
    held_out = [
        (
            model.feature_mean.numpy() + model.feature_scale.numpy() * rng.standard_normal((300, F_SHIPPED))
        ).astype(np.float32)
    ]
    return write_model_bundle(
        out,
        model,
        held_out=held_out,
        feature_spec=card["feature_spec"],
        thresholds=card["thresholds"],
        validation={"mode": model.mode},
        training_data={"fingerprint": hashlib.sha256(b"test").hexdigest(), "runs": 1, "sources": ["test"]},
        training={"horizon_s": 3600.0, "hidden": model.hidden, "layers": model.layers},
        trained_on=card["trained_on"],
        signing_key=signing_key,
        parity_steps=200,
    )


def _steps_differ(a: HealthModel, b: HealthModel, steps: int = 40) -> float:
    """Largest |a.step − b.step| (scores and carried states) over `steps` windows of 3 sensors."""
    rng = np.random.default_rng(2)
    ha, hb = a.initial_state(3), b.initial_state(3)
    worst = 0.0
    with torch.no_grad():
        for _ in range(steps):
            x = a.feature_mean + a.feature_scale * torch.as_tensor(rng.standard_normal((3, a.n_features)))
            sa, ha = a.step(x.float(), ha)
            sb, hb = b.step(x.float(), hb)
            worst = max(worst, float((sa - sb).abs().max()), float((ha - hb).abs().max()))
    return worst


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("mode", ["supervised", "forecast"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_freshly_exported_bundle_is_read_back(tmp_path: Path, cell: str, mode: str, layers: int) -> None:
    """Today's step form (one Gemm per gate: 34eecbb; the scaler by name again: 637a899) read back
    into the model that was exported, for each cell, mode and depth."""
    model = _fresh(cell, mode, layers)
    bundle = load_bundle(_write_fresh(tmp_path / "b", model), allow_unsigned=True)
    back = model_from_bundle(bundle)
    assert (back.cell, back.mode, back.layers, back.outputs) == (cell, mode, layers, model.outputs)
    assert _matches(back, bundle.session, bundle.n_features, steps=50) <= 1e-5
    assert _steps_differ(back, model) <= 1e-5
    # The parameters themselves, not only the function: what fine-tuning starts from and trains.
    assert torch.equal(back.feature_scale, model.feature_scale)
    assert torch.equal(back.feature_mean, model.feature_mean)
    if mode == "forecast":
        assert (float(back.err_center), float(back.err_width)) == (
            float(model.err_center),
            float(model.err_width),
        )
    H = model.hidden
    for layer in range(layers):
        got = [getattr(back.rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        want = [getattr(model.rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        assert torch.allclose(got[0], want[0], rtol=1e-6, atol=1e-7)
        assert torch.equal(got[1], want[1])
        assert torch.allclose(got[2] + got[3], want[2] + want[3], atol=1e-7)  # the sum is what the cell uses
        if cell == "gru":  # n's input and h biases act apart (r multiplies the h part): kept apart
            assert torch.equal(got[2][2 * H :], want[2][2 * H :])
            assert torch.equal(got[3][2 * H :], want[3][2 * H :])


def test_a_graph_with_the_scale_folded_in_reads_back_as_the_same_function(tmp_path: Path) -> None:
    """Supervised bundles exported between 487f6b6 and 637a899: no Div, 1/feature_scale folded into
    layer 0's input weights, no feature_scale initializer. Made here from today's graph (the Div
    removed, the weights folded as 487f6b6 did); read back with feature_scale = 1 and the folded
    weights, the same step. An initializer missing is refused with a clear message."""
    import onnx
    from onnx import numpy_helper

    from trainer.champion import ChampionError

    model = _fresh("gru", "supervised", 2)
    bundle = load_bundle(_write_fresh(tmp_path / "b", model), allow_unsigned=True)
    proto = onnx.load(str(bundle.path / "model.onnx"))
    graph = proto.graph
    (div,) = [n for n in graph.node if n.op_type == "Div" and "model.feature_scale" in n.input]
    for node in graph.node:  # what read the scaled features now reads features − mean
        node.input[:] = [div.input[0] if x == div.output[0] else x for x in node.input]
    graph.node.remove(div)
    scale = model.feature_scale.numpy()
    F = F_SHIPPED
    changed = []
    for init in list(graph.initializer):
        arr = numpy_helper.to_array(init).copy()
        if init.name == "model.feature_scale":
            graph.initializer.remove(init)
            continue
        if init.name in ("l0_0", "l0_2"):  # [input + h, H]: the input rows
            arr[:F] /= scale[:, None]
        elif init.name == "l0_4":  # [input, H]
            arr /= scale[:, None]
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        changed.append(init.name)
    assert sorted(changed) == ["l0_0", "l0_2", "l0_4"]
    folded = proto.SerializeToString()
    (tmp_path / "folded").mkdir()
    (tmp_path / "folded" / "model.onnx").write_bytes(folded)
    older = SimpleNamespace(
        card=bundle.card, n_features=F, path=tmp_path / "folded", session=make_session(folded)
    )
    back = model_from_bundle(older)
    assert torch.equal(back.feature_scale, torch.ones(F))
    assert _matches(back, older.session, F, steps=50) <= 1e-5
    assert _steps_differ(back, model) <= 1e-5
    # One Gemm's weights gone: refused, naming what is missing, not a traceback.
    keep = [i for i in graph.initializer if i.name != "l1_3"]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    (tmp_path / "folded" / "model.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ChampionError, match=r"lacks l1_3.*--from-scratch"):
        model_from_bundle(older)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_step_weights_load_back_into_the_cell(cell: str) -> None:
    """`load_step_weights` is `step_weights`' inverse (up to how b_ih + b_hh is split)."""
    model = _fresh(cell, "supervised", 2, seed=4)
    back = HealthModel.from_checkpoint(model.checkpoint()).eval()
    with torch.no_grad():  # the cell's parameters scrambled, the scaler and heads kept
        for param in back.rnn.parameters():
            param.normal_()
    assert _steps_differ(back, model) > 1e-2
    back.load_step_weights(model.step_weights())
    for got, want in zip(back.step_weights(), model.step_weights(), strict=True):
        for g, w in zip(got, want, strict=True):
            assert torch.allclose(g, w, rtol=1e-6, atol=1e-7)
    assert _steps_differ(back, model) <= 1e-6


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


def test_retrain_fine_tunes_a_freshly_exported_bundle(tmp_path: Path) -> None:
    """`gruwatch retrain`'s default path (fine-tune, no --from-scratch) from a champion exported by
    today's trainer, end to end: collected windows of six machines, three failing, in an agent
    export; the challenger is the champion's model read back from model.onnx and trained on."""
    from edge_agent.signing import generate_keypair

    key, pub = generate_keypair(tmp_path / "keys")
    model = _fresh("gru", "supervised", 1)
    champion = _write_fresh(tmp_path / "champion", model, signing_key=key)
    champion_card = json.loads((champion / "card.json").read_text())
    n, interval_s = 240, 60.0
    rng = np.random.default_rng(11)
    mean = np.asarray(champion_card["trained_on"]["rms_g"][0])  # any level: the scaler is the champion's
    with Store.open(tmp_path / "agent.sqlite", budget_bytes=1 << 30) as store:
        for m in range(6):
            drift = np.linspace(0.0, 3.0 if m < 3 else 0.0, n)[:, None]  # machines 0-2 degrade, then fail
            feats = (mean + rng.standard_normal((n, F_SHIPPED)) + drift).astype(np.float32)
            store.record_batch(
                [
                    WindowRow(
                        f"m{m}/s0", k, int((T0 + k * interval_s) * 1e9), feats[k], 0.1, "ok", "v1", fs=25600.0
                    )
                    for k in range(n)
                ]
            )
        store.export_runs(tmp_path / "collected")
    failed_at = datetime.fromtimestamp(T0 + (n - 1) * interval_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    events = tmp_path / "events.csv"
    events.write_text(
        "machine,sensor,ts,event\n" + "".join(f"m{m},s0,{failed_at},failure\n" for m in range(3))
    )
    out = tmp_path / "out"
    argv = [
        "--collected", str(tmp_path / "collected"), "--events", str(events), "--current", str(champion),
        "--out", str(out), "--signing-key", str(key), "--trusted-keys", str(pub),
        "--horizon", "1h", "--epochs", "2", "--no-progress",
        "--min-improvement", "-1", "--allow-more-false-alarms",  # about the path, not which model wins
    ]  # fmt: skip
    assert retrain_main(argv) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["fine_tuned"] is True
    assert comparison["winner"] == "challenger"
    challenger = load_bundle(out / "bundle", trusted_keys=[pub])
    assert challenger.card["parent_version"] == champion_card["model_version"]
    assert challenger.card["training"]["retrain"]["fine_tuned_from"] == champion_card["model_version"]
    # The champion's accepted ranges (no creep from retrain to retrain), the challenger's own count.
    ranges = {k: v for k, v in challenger.card["trained_on"].items() if k != "windows"}
    assert ranges == {k: v for k, v in champion_card["trained_on"].items() if k != "windows"}
    trained = len(challenger.card["training_data"]["train_runs"]) + len(
        challenger.card["training_data"]["validation_runs"]
    )
    assert challenger.card["trained_on"]["windows"] == trained * n  # its training and validation runs
    assert trained < 6  # the others were held out to compare champion and challenger
    # Fine-tuned, so the scaler is the champion's; and the challenger can be fine-tuned in its turn.
    again = model_from_bundle(challenger)
    assert torch.equal(again.feature_scale, model.feature_scale)
    assert _matches(again, challenger.session, challenger.n_features, steps=30) <= 1e-5
