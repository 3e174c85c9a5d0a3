"""Run with the same inputs on the x86 host and on emulated aarch64 (tests/arm, benchmarks/bench_arm.py).

`python probe.py JOB.json`; the job names a signed bundle, its trusted key, an inputs .npz
(tests/arm/helpers.write_inputs) and an output .npz. The probe loads the bundle (signature, digests,
test vectors replayed), computes features of raw windows, steps one sensor through every feature
row with the Scorer (one window per call, as the agent does for a lone sensor) and again with bare
onnxruntime calls, and prints one JSON line: machine, versions, timings and what the agent's
process could import. Imports only what a gateway has (numpy and edge_agent).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from edge_agent.bundle import load_bundle  # noqa: E402
from edge_agent.protocol import Window  # noqa: E402
from edge_agent.scorer import Scorer  # noqa: E402

FORBIDDEN = ("torch", "pandas", "scipy", "sklearn", "pyarrow")


def main(job_path: str) -> dict[str, object]:
    t_import = time.perf_counter() - T0
    job = json.loads(Path(job_path).read_text())
    t = time.perf_counter()
    bundle = load_bundle(job["bundle"], trusted_keys=[job["trusted_key"]])
    t_load = time.perf_counter() - t
    scorer = Scorer.from_loaded(bundle)
    inputs = np.load(job["inputs"])
    feats = np.ascontiguousarray(inputs["features"], dtype=np.float32)
    samples, fs, rpm = inputs["samples"], inputs["fs"], inputs["rpm"]
    windows = [Window(k, k * 10**10, float(fs[k]), float(rpm[k]), samples[k]) for k in range(len(samples))]
    t = time.perf_counter()
    window_features = scorer.features_of(windows)
    t_features = (time.perf_counter() - t) / max(1, len(windows))

    n, K = feats.shape[0], len(bundle.outputs)
    scores = np.empty((n, K), np.float32)
    states: list[str] = []
    t = time.perf_counter()
    for i in range(n):
        batch = scorer.score_features(["m1/s0"], feats[i : i + 1])
        scores[i] = batch.scores[0]
        states.append(batch.states[0])
    t_scorer = (time.perf_counter() - t) / n

    layers, hidden = bundle.state_shape
    h = np.zeros((layers, 1, hidden), np.float32)
    raw = np.empty((n, K), np.float32)
    t = time.perf_counter()
    for i in range(n):
        s, h = bundle.session.run(["score", "h_out"], {"features": feats[i : i + 1], "h": h})
        raw[i] = s[0]
    t_run = (time.perf_counter() - t) / n

    np.savez(job["out"], window_features=window_features, scores=scores, raw_scores=raw)
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "verified": bool(bundle.verified),
        "model_version": bundle.model_version,
        "state_shape": list(bundle.state_shape),
        "steps": n,
        "states": states,
        "import_s": t_import,
        "load_s": t_load,
        "features_us_per_window": t_features * 1e6,
        "scorer_us_per_step": t_scorer * 1e6,
        "run_us_per_step": t_run * 1e6,
        "forbidden_importable": [m for m in FORBIDDEN if importlib.util.find_spec(m) is not None],
        "forbidden_loaded": sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN)),
        "edge_agent_file": str(Path(sys.modules["edge_agent"].__file__ or "")),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
