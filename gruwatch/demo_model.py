"""The demo's fleet settings and its first model: a small bundle shipped in the package, or trained now.

Both the shipped bundle (`gruwatch/demo_bundle/`) and `gruwatch demo --train` come from
`build_bundle`: a simulated fleet's history (`HISTORY_MACHINES` machines run to failure with the
simulator's labels) trains a small GRU with the trainer's defaults for everything but its size and
epochs, and the bundle is written unsigned. The demo signs a copy with a fresh key at each run, so
the agent accepts it only through the normal signature check. Rebuild the shipped bundle with
`make demo-bundle` (= `gruwatch demo --build-bundle gruwatch/demo_bundle`) after a change to the
features, the model or the simulator; it needs the `train` extra (torch), the demo itself does not.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The simulated fleet both the history and the live demo fleet are drawn from (build_fleet keywords).
#: One window every 30 simulated seconds keeps the live fleet light enough for a pure-Python broker.
FLEET: dict[str, Any] = {"horizon_s": 3 * 3600.0, "interval_s": 30.0, "window": 2560, "fs": 25600.0}
HISTORY_MACHINES = 40
HISTORY_SEED = 1001
HISTORY_HEALTHY_FRACTION = 0.3
HIDDEN = 24
EPOCHS = 40

SHIPPED = Path(__file__).resolve().parent / "demo_bundle"
BUNDLE_FILES = ("model.onnx", "card.json", "test_vectors.json")


@dataclass(frozen=True)
class DemoModel:
    bundle: Path  # signed copy the agent serves
    public_key: Path
    source: str  # "shipped" or "trained"


def shipped_bundle_missing() -> list[str]:
    return [f for f in BUNDLE_FILES if not (SHIPPED / f).is_file()]


def history_runs(machines: int = HISTORY_MACHINES, seed: int = HISTORY_SEED) -> list[Any]:
    """Labelled trainer Runs of a simulated fleet's whole lives (the simulator's ground truth)."""
    from simulator.fleet_model import build_fleet
    from trainer.data.sim import run_from_sensor

    fleet = build_fleet(machines, seed, healthy_fraction=HISTORY_HEALTHY_FRACTION, **FLEET)
    return [run_from_sensor(r, f"demo-history-{r.machine}-{r.sensor}") for r in fleet]


def build_bundle(out: Path, *, seed: int = 0, progress: bool = False) -> Path:
    """Train the demo's model on a simulated history and write its (unsigned) bundle to `out`."""
    import torch

    from trainer.data import fingerprint, split_by_machine, trained_on
    from trainer.export import write_model_bundle
    from trainer.sequences import build_sequences, fault_classes, spec_for_runs
    from trainer.train import TrainConfig, train

    torch.set_num_threads(1)
    runs = history_runs()
    tr, va = split_by_machine(runs, val_fraction=0.25, seed=seed)
    spec = spec_for_runs(runs)
    classes = fault_classes(tr)
    tr_seqs = build_sequences(tr, spec, classes=classes, progress=progress)
    va_seqs = build_sequences(va, spec, classes=classes, progress=progress, desc="features (val)")
    cfg = TrainConfig(hidden=HIDDEN, epochs=EPOCHS, batch_size=16, seed=seed, progress=progress)
    result = train(tr_seqs, va_seqs, cfg, classes=classes)
    if out.exists():
        shutil.rmtree(out)
    return write_model_bundle(
        out,
        result.model,
        held_out=[q.features for q in va_seqs],
        feature_spec=spec.to_dict(),
        thresholds=result.thresholds,
        validation=result.validation,
        training_data={
            "fingerprint": fingerprint(runs),
            "runs": len(runs),
            "sources": ["sim"],
            "simulated_fleet": {"machines": HISTORY_MACHINES, "seed": HISTORY_SEED, **FLEET},
            "train_runs": [r.run_id for r in tr],
            "validation_runs": [r.run_id for r in va],
        },
        training={k: v for k, v in vars(result.config).items() if k != "progress"},
        trained_on=trained_on(runs),
    )


def prepare_model(workdir: Path, *, train_now: bool, progress: bool = False) -> DemoModel:
    """A signed bundle for the agent in `workdir`: the shipped one (default) or one trained now."""
    from edge_agent.bundle import sign_bundle
    from edge_agent.signing import generate_keypair

    key, pub = generate_keypair(workdir / "keys")
    bundle = workdir / "model-v1"
    if train_now:
        build_bundle(bundle, progress=progress)
        source = "trained"
    else:
        missing = shipped_bundle_missing()
        if missing:
            from edge_agent.errors import GruwatchError

            raise GruwatchError(
                f"the demo bundle in {SHIPPED} lacks {', '.join(missing)}; rebuild it with "
                "`make demo-bundle`, or run `gruwatch demo --train`"
            )
        bundle.mkdir(parents=True)
        for name in BUNDLE_FILES:
            shutil.copy2(SHIPPED / name, bundle / name)
        source = "shipped"
    sign_bundle(bundle, key)
    return DemoModel(bundle=bundle, public_key=pub, source=source)
