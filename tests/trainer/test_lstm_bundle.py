"""An LSTM bundle (`--cell lstm`) in the agent's scorer: state [2 × layers, hidden] per sensor, sensors
batched in any order, saved and restored states — each sensor's scores are torch's full-sequence ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edge_agent.features import FeatureSpec
from edge_agent.scorer import Scorer
from trainer.export import torch_sequence, write_model_bundle
from trainer.model import HealthModel

torch.set_num_threads(1)
SPEC = FeatureSpec()
F, HIDDEN, LAYERS, STEPS = SPEC.n_features, 8, 2, 30


def test_scorer_carries_lstm_states_per_sensor_like_torch(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = HealthModel(F, cell="lstm", hidden=HIDDEN, layers=LAYERS, fault_classes=("a", "b"))
    rng = np.random.default_rng(0)
    model.set_scaler(rng.normal(size=F), rng.uniform(0.5, 2.0, size=F))
    model.eval()
    streams = {s: (rng.normal(size=(STEPS, F)) * 2 + 1).astype(np.float32) for s in ("s1", "s2", "s3")}
    thresholds = {"warning": 0.5, "alarm": 0.7, "raise_windows": 2, "clear_windows": 3}
    path = write_model_bundle(
        tmp_path / "lstm",
        model,
        held_out=list(streams.values()),
        feature_spec=SPEC.to_dict(),
        thresholds=thresholds,
        validation={},
        training_data={"fingerprint": "0" * 64, "runs": 3, "sources": ["test"]},
        parity_steps=200,
    )
    want = {s: torch_sequence(model, x[None])[0][0] for s, x in streams.items()}

    scorer = Scorer.from_bundle(path, allow_unsigned=True)
    assert scorer.state_shape == (2 * LAYERS, HIDDEN)
    got: dict[str, list[np.ndarray]] = {s: [] for s in streams}
    half = STEPS // 2
    for t in range(half):  # s1 and s2 together every step, s3 every other step in its own batch
        batch = ["s2", "s1"]
        out = scorer.score_features(batch, np.stack([streams[s][t] for s in batch]))
        for i, s in enumerate(batch):
            got[s].append(out.scores[i])
    for t in range(half):
        got["s3"].append(scorer.score_features(["s3"], streams["s3"][t : t + 1]).scores[0])
    # A restart: the states saved and restored in a new scorer carry on where they were.
    saved = scorer.export_states()
    scorer = Scorer.from_bundle(path, allow_unsigned=True)
    assert scorer.import_states(saved) == 3
    for t in range(half, STEPS):
        batch = ["s1", "s3", "s2"]
        out = scorer.score_features(batch, np.stack([streams[s][t] for s in batch]))
        for i, s in enumerate(batch):
            got[s].append(out.scores[i])
    for s in streams:
        np.testing.assert_allclose(np.stack(got[s]), want[s], atol=1e-5, err_msg=s)
