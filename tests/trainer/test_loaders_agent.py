"""Agent exports as training data: a real Store filled like the daemon does, exported, loaded, labelled, trained."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.features import DEFAULT_SPEC, extract
from edge_agent.store import Store, Transition, WindowRow
from trainer.data import DataError, apply_events, load_events_csv, load_runs

T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
FS = 2560.0
LENGTH = 256
INTERVAL_S = 60.0
N_WINDOWS = 48
RING = 4  # windows before a transition that get their raw samples attached afterwards (daemon's ring)


@dataclass
class Recorded:
    """What the test fed the store for one sensor, to compare the loaded runs with."""

    seqs: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    raw_seqs: set[int] = field(default_factory=set)


def window(rng: np.random.Generator, k: int, failing: bool) -> np.ndarray:
    """Noise plus, for a failing bearing, growing 400 Hz impacts over the last third of its life."""
    t = np.arange(LENGTH) / FS
    x = 0.05 * rng.standard_normal(LENGTH)
    if failing and k >= 2 * N_WINDOWS // 3:
        grow = (k - 2 * N_WINDOWS // 3 + 1) / (N_WINDOWS / 3)
        x += 0.5 * grow * np.sin(2 * np.pi * 400.0 * t) * (np.sin(2 * np.pi * 40.0 * t) > 0.9)
    return x.astype(np.float32)


def record_sensor(
    store: Store,
    key: str,
    *,
    failing: bool,
    seed: int,
    batch: int = 8,
    fs: float = FS,
    n: int = N_WINDOWS,
    seq0: int = 0,
    t0_ns: int = T0_NS,
) -> Recorded:
    """Score and store windows the way edge_agent.daemon does.

    Per batch: WindowRow with the model's features, score, state, model, fs, rpm, and raw samples
    only for a sampled share (seq % 3 == 0), for windows not "ok", and after a transition; at a
    transition the RING windows before it that were stored without samples get them via attach_raw
    (the daemon's ring of recent windows), all in one record_batch transaction with the transition.
    """
    rng = np.random.default_rng(seed)
    rec = Recorded()
    ring: list[tuple[int, int, np.ndarray]] = []  # (window id, seq, samples) stored without raw
    state = "ok"
    for start in range(0, n, batch):
        rows: list[WindowRow] = []
        transitions: list[Transition] = []
        attach: list[tuple[int, np.ndarray]] = []
        kept: list[bool] = []
        for k in range(start, min(start + batch, n)):
            seq, ts = seq0 + k, t0_ns + int(k * INTERVAL_S * 1e9)
            x = window(rng, k, failing)
            feats = extract(x, fs, 1800.0, DEFAULT_SPEC)
            score = float(min(1.0, float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) * 4.0))
            new_state = "alarm" if score > 0.5 else "ok"
            tr = None
            if new_state != state:
                tr = Transition(key, seq, ts, state, new_state, score, "v1", "score above alarm")
                transitions.append(tr)
                # Earlier batches: attach by window id; this batch: give the rows their samples.
                attach.extend((wid, s) for wid, q, s in ring if seq - q <= RING)
                rec.raw_seqs.update(q for _, q, s in ring if seq - q <= RING)
                ring.clear()
                for j, row in enumerate(rows):
                    if row.raw is None and seq - row.seq <= RING:
                        rows[j] = replace(row, raw=rec.samples[rec.seqs.index(row.seq)])
                        kept[j] = True
                        rec.raw_seqs.add(row.seq)
            state = new_state
            keep = state != "ok" or tr is not None or seq % 3 == 0
            rows.append(
                WindowRow(key, seq, ts, feats, score, state, "v1", fs=fs, rpm=1800.0, raw=x if keep else None)
            )
            kept.append(keep)
            rec.seqs.append(seq)
            rec.ts_ns.append(ts)
            rec.features.append(feats)
            rec.samples.append(x)
            if keep:
                rec.raw_seqs.add(seq)
        store.record_batch(rows, transitions=transitions, attach_raw=attach)
        for wid, row, keep in zip(store.last_window_ids, rows, kept, strict=True):
            if not keep:
                assert row.raw is None
                ring.append((wid, row.seq, rec.samples[rec.seqs.index(row.seq)]))
    return rec


MACHINES = {"m0": True, "m1": False, "m2": True, "m3": False}  # machine -> fails at the end


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Recorded]]:
    root = tmp_path_factory.mktemp("agent")
    recorded: dict[str, Recorded] = {}
    with Store.open(root / "store.sqlite", budget_bytes=64 * 2**20) as store:
        store.set_meta("agent_id", "gw1")
        for i, (machine, failing) in enumerate(MACHINES.items()):
            recorded[f"{machine}/s0"] = record_sensor(store, f"{machine}/s0", failing=failing, seed=i)
        summary = store.export_runs(root / "export")
    assert summary.windows == N_WINDOWS * len(MACHINES)
    return root / "export", recorded


def test_export_loads_as_one_run_per_sensor_of_raw_windows_in_time_order(
    export: tuple[Path, dict[str, Recorded]],
) -> None:
    path, recorded = export
    runs = load_runs([path], progress=False)
    assert [(r.machine, r.sensor) for r in runs] == [(m, "s0") for m in MACHINES]
    for run in runs:
        rec = recorded[f"{run.machine}/{run.sensor}"]
        raw = [i for i, s in enumerate(rec.seqs) if s in rec.raw_seqs]
        assert run.run_id == f"agent-export-{run.machine}-s0"
        assert run.source == "agent"
        assert run.labels is None
        assert run.geometry is None
        assert run.fs == FS
        assert run.rpm == 1800.0
        assert run.windows.shape == (len(raw), LENGTH)
        np.testing.assert_array_equal(run.windows, np.stack([rec.samples[i] for i in raw]))
        first = rec.ts_ns[raw[0]]
        np.testing.assert_allclose(run.ts, [(rec.ts_ns[i] - first) / 1e9 for i in raw])
        assert run.meta["start_epoch_s"] == first / 1e9
        assert run.meta["seq"].tolist() == [rec.seqs[i] for i in raw]
        assert run.meta["agent_id"] == "gw1"
        # Stored features of ALL windows ride along; raw_index places each run window among them.
        assert run.meta["features"].shape == (N_WINDOWS, DEFAULT_SPEC.n_features)
        np.testing.assert_array_equal(run.meta["features"], np.stack(rec.features))
        assert run.meta["raw_index"].tolist() == raw
        assert run.meta["feature_seq"].tolist() == rec.seqs
        assert set(run.meta["feature_model"].tolist()) == {"v1"}
    # The failing machines reached alarm: their raw windows include the RING windows before it.
    m0 = runs[0]
    (tr,) = m0.meta["transitions"]
    assert tr["state"] == "alarm"
    before = set(range(tr["seq"] - RING, tr["seq"]))
    assert not set(recorded["m0/s0"].seqs[: tr["seq"] - RING]) <= set(m0.meta["seq"].tolist())
    assert before <= set(m0.meta["seq"].tolist())
    assert any(s % 3 != 0 for s in before)  # kept because of the alarm, not the sampling
    assert not runs[1].meta["transitions"]


def test_events_label_the_export_and_gruwatch_train_fits_a_bundle_from_it(
    export: tuple[Path, dict[str, Recorded]], tmp_path: Path
) -> None:
    path, _ = export
    horizon_s = 900.0
    end_s = T0_NS / 1e9 + N_WINDOWS * INTERVAL_S  # one interval after the last window
    csv = tmp_path / "events.csv"
    csv.write_text(
        "machine,sensor,ts,event\n"
        f"m0,s0,{end_s},failure\n"
        f"m2,,{end_s},failure\n"
        f"m1,s0,{end_s - 600},inspection\n"
    )
    runs = apply_events(load_runs([path], progress=False), load_events_csv(csv), horizon_s=horizon_s)
    by_machine = {r.machine: r for r in runs}
    for machine, failing in MACHINES.items():
        run = by_machine[machine]
        assert run.labels is not None
        assert run.labels.failed_at_end is failing
        t_abs = run.meta["start_epoch_s"] + run.ts
        want = np.where(end_s - t_abs <= horizon_s, end_s - t_abs, np.inf) if failing else np.inf
        np.testing.assert_allclose(run.labels.rul_s, np.broadcast_to(want, t_abs.shape))
    assert np.isfinite(by_machine["m0"].labels.rul_s).sum() >= 5  # type: ignore[union-attr]

    from edge_agent.bundle import load_bundle
    from trainer.cli import main

    out = tmp_path / "bundle"
    argv = ["--data", str(path), "--events", str(csv), "--horizon-s", str(horizon_s), "--out", str(out)]
    argv += ["--hidden", "8", "--epochs", "2", "--chunk-len", "16", "--val-fraction", "0.5", "--seed", "1"]
    argv += ["--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["mode"] == "supervised"
    assert card["training_data"]["sources"] == ["agent"]
    assert card["training_data"]["runs"] == len(MACHINES)
    assert sorted(card["training_data"]["train_runs"] + card["training_data"]["validation_runs"]) == sorted(
        r.run_id for r in runs
    )
    bundle = load_bundle(out, allow_unsigned=True)
    assert bundle.card["state_shape"] == [1, 8]


def test_windows_are_sorted_by_sensor_time_and_split_by_rate(tmp_path: Path) -> None:
    """A sensor restarted with a new rate: arrival order is not time order, and two rates give two runs."""
    with Store.open(tmp_path / "store.sqlite", budget_bytes=2**20) as store:
        late = record_sensor(store, "m5/s1", failing=False, seed=7, n=6, seq0=100, t0_ns=T0_NS + 10**12)
        early = record_sensor(store, "m5/s1", failing=False, seed=8, n=6, fs=5120.0)
        store.export_runs(tmp_path / "out")
    runs = load_runs([tmp_path / "out"], progress=False)
    assert [r.run_id for r in runs] == ["agent-out-m5-s1-fs5120-L256", "agent-out-m5-s1-fs2560-L256"]
    assert [r.fs for r in runs] == [5120.0, 2560.0]
    for run, rec in zip(runs, (early, late), strict=True):
        raw = [i for i, s in enumerate(rec.seqs) if s in rec.raw_seqs]
        np.testing.assert_array_equal(run.windows, np.stack([rec.samples[i] for i in raw]))
        assert run.meta["start_epoch_s"] == rec.ts_ns[raw[0]] / 1e9
        assert np.all(np.diff(run.ts) > 0)
        # Every run of the file carries the same time-sorted features of all 12 windows.
        assert run.meta["feature_seq"].tolist() == early.seqs + late.seqs
    assert runs[0].meta["raw_index"].tolist() == raw_positions(early, offset=0)
    assert runs[1].meta["raw_index"].tolist() == raw_positions(late, offset=6)
    # --target-fs puts both on one rate (window length scales with it).
    resampled = load_runs([tmp_path / "out"], target_fs=2560.0, progress=False)
    assert [r.windows.shape[1] for r in resampled] == [128, 256]


def raw_positions(rec: Recorded, *, offset: int) -> list[int]:
    return [offset + i for i, s in enumerate(rec.seqs) if s in rec.raw_seqs]


def test_a_sensor_without_raw_samples_gives_no_run_and_a_warning(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite", budget_bytes=2**20) as store:
        feats = np.zeros(DEFAULT_SPEC.n_features, np.float32)
        store.record_batch(
            [WindowRow("m1/s0", k, T0_NS + k, feats, 0.1, "ok", "v1", fs=FS) for k in range(3)]
        )
        record_sensor(store, "m2/s0", failing=False, seed=3, n=6)
        store.export_runs(tmp_path / "out")
    with pytest.warns(UserWarning, match=r"1 of 2 sensors have no window with raw samples \(m1/s0\)") as got:
        runs = load_runs([tmp_path / "out"], progress=False)
    assert [r.machine for r in runs] == ["m2"]
    assert len(got) == 1, "one warning for the export, not one per sensor"
    (tmp_path / "out" / "m2__s0.npz").unlink()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest["files"] = manifest["files"][:1]
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"none with raw samples.*gruwatch retrain"):
        load_runs([tmp_path / "out"], progress=False)


@pytest.fixture
def small_export(tmp_path: Path) -> Path:
    with Store.open(tmp_path / "store.sqlite", budget_bytes=2**20) as store:
        record_sensor(store, "m1/s0", failing=False, seed=1, n=6)
        store.export_runs(tmp_path / "out")
    return tmp_path / "out"


def rewrite_npz(path: Path, **changes: np.ndarray | None) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez_compressed(path, **arrays)


def test_malformed_exports_raise_data_errors_that_name_the_file_and_the_fix(small_export: Path) -> None:
    npz, manifest = small_export / "m1__s0.npz", small_export / "manifest.json"
    good_manifest = manifest.read_text()
    assert len(load_runs([small_export], progress=False)) == 1

    manifest.unlink()
    with pytest.raises(DataError, match=r"no manifest\.json.*gruwatch agent export --store"):
        load_runs([small_export], progress=False)
    manifest.write_text("{not json")
    with pytest.raises(DataError, match=r"manifest\.json: not readable JSON"):
        load_runs([small_export], progress=False)
    doc = json.loads(good_manifest)
    manifest.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(DataError, match=r"export version 99.*Update gruwatch"):
        load_runs([small_export], progress=False)
    manifest.write_text(json.dumps({**doc, "files": [{"file": "m1__s0.npz", "machine": "m1"}]}))
    with pytest.raises(DataError, match=r"files\[0\] lacks sensor"):
        load_runs([small_export], progress=False)
    manifest.write_text(json.dumps({**doc, "files": [{**doc["files"][0], "windows": 7}]}))
    with pytest.raises(DataError, match=r"m1__s0\.npz: manifest\.json says 7 windows but the file holds 6"):
        load_runs([small_export], progress=False)
    manifest.write_text(json.dumps({**doc, "files": []}))
    with pytest.raises(DataError, match="lists no files"):
        load_runs([small_export], progress=False)
    manifest.write_text(good_manifest)

    original = npz.read_bytes()
    with np.load(npz, allow_pickle=False) as z:
        offsets, ts = z["raw_offsets"], z["ts_ns"]
    cases: list[tuple[dict[str, np.ndarray | None], str]] = [
        ({"raw_samples": None}, r"m1__s0\.npz: lacks arrays raw_samples"),
        ({"ts_ns": ts[:-1]}, r"m1__s0\.npz: ts_ns has shape \(5,\) but features has 6 windows"),
        ({"raw_offsets": offsets[:-1]}, r"m1__s0\.npz: raw_rows .*expected \[M\], \[M\+1\]"),
        ({"raw_offsets": offsets + 1}, r"raw_offsets must rise strictly from 0"),
        ({"raw_rows": np.full(offsets.size - 1, 99)}, "raw_rows must be distinct indices into the 6 windows"),
        ({"features": np.zeros(6, np.float32)}, r"features has shape \(6,\)"),
    ]
    for change, message in cases:
        rewrite_npz(npz, **change)
        with pytest.raises(DataError, match=message) as info:
            load_runs([small_export], progress=False)
        assert "gruwatch agent export" in str(info.value)
        npz.write_bytes(original)
    npz.write_bytes(original[:100])
    with pytest.raises(DataError, match=r"m1__s0\.npz: cannot read the \.npz"):
        load_runs([small_export], progress=False)
    npz.unlink()
    with pytest.raises(DataError, match=r"m1__s0\.npz: listed in manifest\.json but missing"):
        load_runs([small_export], progress=False)


def test_a_sim_dataset_manifest_is_not_taken_for_an_export(tmp_path: Path) -> None:
    from trainer.data import is_agent_export

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps({"runs": []}))
    (tmp_path / "ds" / "m0__s0.parquet").write_bytes(b"")
    assert not is_agent_export(tmp_path / "ds")
    assert not is_agent_export(tmp_path / "ds" / "manifest.json")
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex" / "manifest.json").write_text(json.dumps({"format": "gruwatch-agent-export"}))
    assert is_agent_export(tmp_path / "ex")


def test_a_feature_width_change_gives_one_run_per_export_file(tmp_path: Path) -> None:
    """A model update that changed the feature count splits the sensor's export in two files."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, LENGTH)).astype(np.float32)
    with Store.open(tmp_path / "store.sqlite", budget_bytes=2**20) as store:
        for k in range(4):
            width, model = (3, "v1") if k < 2 else (5, "v2")
            feats = np.full(width, k, np.float32)
            row = WindowRow("m__1/s0", k, T0_NS + k * 10**9, feats, 0.1, "ok", model, fs=FS, raw=x[k])
            store.record_batch([row])
        store.export_runs(tmp_path / "out")
    runs = load_runs([tmp_path / "out"], progress=False)
    assert [r.run_id for r in runs] == ["agent-out-m__1-s0-f3", "agent-out-m__1-s0-f5"]
    assert [r.meta["file"] for r in runs] == ["m__1__s0__f3.npz", "m__1__s0__f5.npz"]
    np.testing.assert_array_equal(runs[0].windows, x[:2])
    np.testing.assert_array_equal(runs[1].windows, x[2:])
    assert runs[1].meta["features"].tolist() == [[2.0] * 5, [3.0] * 5]
    assert runs[1].meta["feature_model"].tolist() == ["v2", "v2"]
    assert runs[1].meta["start_epoch_s"] == T0_NS / 1e9 + 2
    assert runs[1].rpm == 0.0
