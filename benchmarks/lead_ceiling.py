"""Research: the longest FEMTO lead any threshold on one feature could give, knowing the answer.

Issue 8 asks, leave one bearing out over the four shared FEMTO bearings, for a median lead >= 15 %
of life with no alarm raised in the first half. This script bounds what a detector could reach on
these recordings with the features a bundle sees (`gruwatch train` defaults' feature spec and
per-sensor baseline, fitted on the other three bearings as in `make eval-real`):

each feature (a rise or a fall), two novelty scores (the largest feature; the RMS of all of them)
and the GRU's health score, each as is or as the causal mean of the last 6 or 30 windows, and each feature's trend (mean of
the last 30 or 90 windows minus that of the 30 or 90 before), is run as
a detector through the agent's alarm state machine (`edge_agent.alarms.step`: raised after 3
windows above the threshold, cleared after 12 below, the defaults' hysteresis). A threshold counts
only if it raises nothing in the first half of life; the lead is that of the alarm still on at the
end of life (0 when none). Three oracles, each choosing on the held-out sensors themselves, so each
an upper bound, loosest first:

- any feature, its threshold chosen per sensor (the best of ~290 rules per sensor, knowing its future);
- one feature for all sensors, the threshold still chosen per sensor;
- one rule fixed in advance — feature, direction, smoothing and ONE threshold (in the baseline's
  units) for all eight sensors — the best such rule with no first-half raise on any sensor.

The same for the GRU's health score (per-sensor and one threshold), beside the bundle's calibrated
lead.

    .venv/bin/python benchmarks/lead_ceiling.py          # about 2 min on 2 cores

Nothing here chooses a setting: it reads the held-out bearings (test data) to bound the goal.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tune_real
from lead_lag import sustained_raise

from edge_agent.alarms import AlarmState, Thresholds, step
from trainer.sequences import build_sequences
from trainer.train import score_sequences

RAISE, CLEAR = 3, 12
SMOOTHING = (1, 6, 30)
TRENDS = (30, 90)  # change of the mean of the last w windows over the w windows before
N_THRESHOLDS = 128
GRU = "GRU health score"
Key = tuple[str, int, int]


def trend(x: np.ndarray, w: int) -> np.ndarray:
    m = causal_mean(x, w)
    out: np.ndarray = m - np.r_[np.repeat(m[:1], w), m[:-w]][: len(m)]
    return out


def causal_mean(x: np.ndarray, w: int) -> np.ndarray:
    if w == 1:
        return x
    c = np.cumsum(np.r_[0.0, x])
    i = np.arange(1, len(x) + 1)
    out: np.ndarray = (c[i] - c[np.maximum(i - w, 0)]) / np.minimum(i, w)
    return out


def outcomes(signal: np.ndarray, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate threshold: (raised in the first half of life?, lead in windows of the sustained alarm, 0 if none)."""
    n, half = len(signal), len(signal) // 2
    t = Thresholds(warning=0.5, alarm=0.5, raise_windows=RAISE, clear_windows=CLEAR)
    st = AlarmState.fresh(len(cands))
    first_half = np.zeros(len(cands), bool)
    last_raise = np.full(len(cands), n)
    prev = np.zeros(len(cands), np.int8)
    for k in range(n):
        cur = step(st, (signal[k] > cands).astype(np.float64), t)[1]  # 1 above the threshold, 0 below
        raised = (cur == 2) & (prev != 2)
        if k < half:
            first_half |= raised
        last_raise[raised] = k
        prev = cur  # step() rebinds the state's arrays: cur is not changed later
    return first_half, np.where(prev == 2, n - last_raise, 0)


def oracle_lead(signal: np.ndarray) -> float:
    """Largest lead (windows before the end) of a sustained alarm with no first-half raise, else 0."""
    half = len(signal) // 2
    cands = np.unique(np.quantile(signal[half:], np.linspace(0.0, 1.0, N_THRESHOLDS)))
    cands = cands[cands > signal[:half].min()]
    if not len(cands):
        return 0.0
    first_half, lead = outcomes(signal, cands)
    return float(lead[~first_half].max()) if (~first_half).any() else 0.0


def main() -> int:
    runs = tune_real.shared_femto_runs()
    if runs is None:
        return 1
    bearings = sorted({r.machine for r in runs})
    sensors: list[tuple[str, int, dict[Key, np.ndarray], float]] = []
    for held in bearings:
        plan, result = tune_real.fit_plan([r for r in runs if r.machine != held], {}, 0.2)  # the defaults
        test = build_sequences([r for r in runs if r.machine == held], plan.spec, progress=False)
        for s, sc in zip(test, score_sequences(result.model, test), strict=True):
            signals: dict[Key, np.ndarray] = {(GRU, 1, 1): sc[:, 0].astype(np.float64)}
            for j, name in enumerate(plan.spec.names):
                for w in SMOOTHING:
                    x = causal_mean(s.features[:, j].astype(np.float64), w)
                    signals[(name, w, 1)], signals[(name, w, -1)] = x, -x
                for w in TRENDS:
                    x = trend(s.features[:, j].astype(np.float64), w)
                    signals[(f"{name} trend", w, 1)], signals[(f"{name} trend", w, -1)] = x, -x
            f = s.features.astype(np.float64)
            for w in SMOOTHING:  # two multivariate novelty scores: the largest feature, the RMS of all
                signals[("max over features", w, 1)] = causal_mean(f.max(axis=1), w)
                signals[("RMS over features", w, 1)] = causal_mean(np.sqrt((f**2).mean(axis=1)), w)
            raised = sustained_raise(tune_real._alarm_states(signals[(GRU, 1, 1)], result.thresholds) == 2)
            calibrated = 0.0 if raised is None else (len(s) - raised) / len(s)
            sensors.append((f"{held} {s.run_id.rsplit('-', 1)[-1]}", len(s), signals, calibrated))
            print(f"  scored {sensors[-1][0]}", file=sys.stderr, flush=True)

    # 1) and 2): thresholds chosen per sensor (oracle)
    own = [{k: oracle_lead(x) / n for k, x in sig.items()} for _, n, sig, _ in sensors]
    keys = [k for k in own[0] if k[0] != GRU]
    one_feature = max(keys, key=lambda k: statistics.median(o[k] for o in own))
    # 3) one rule fixed in advance: feature, smoothing, direction and ONE threshold for every sensor
    fixed: dict[Key, tuple[float, float, list[float]]] = {}
    for k in [*keys, (GRU, 1, 1)]:
        pooled = np.concatenate([sig[k][n // 2 :] for _, n, sig, _ in sensors])
        cands = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, N_THRESHOLDS)))
        res = [outcomes(sig[k], cands) for _, _, sig, _ in sensors]
        clean = ~np.any([fh for fh, _ in res], axis=0)
        if not clean.any():
            continue
        fracs = np.array([lead / n for (_, lead), (_, n, _, _) in zip(res, sensors, strict=True)])
        med = np.median(fracs, axis=0)
        best = int(np.flatnonzero(clean)[np.argmax(med[clean])])
        fixed[k] = (float(med[best]), float(cands[best]), [float(f) for f in fracs[:, best]])
    fixed_best = max((k for k in fixed if k[0] != GRU), key=lambda k: fixed[k][0])

    def label(k: Key) -> str:
        if k[0].endswith(" trend"):
            return f"{k[0]} ({'rise' if k[2] > 0 else 'fall'} of the mean of {k[1]} over the {k[1]} before)"
        return f"{k[0]} ({'rise' if k[2] > 0 else 'fall'}, mean of {k[1]})"

    trends = [k for k in keys if k[0].endswith(" trend")]
    best_trend = max((k for k in trends if k in fixed), key=lambda k: fixed[k][0])
    one_trend = max(trends, key=lambda k: statistics.median(o[k] for o in own))
    print(
        f"Trends alone: best fixed rule {label(best_trend)} > {fixed[best_trend][1]:.3g}, median lead "
        f"{100 * fixed[best_trend][0]:.1f} %; best trend with a threshold per sensor {label(one_trend)}, "
        f"median {100 * statistics.median(o[one_trend] for o in own):.1f} %"
    )

    gru_line = (
        f"; GRU score with one threshold for all: > {fixed[(GRU, 1, 1)][1]:.3f}"
        if (GRU, 1, 1) in fixed
        else ""
    )
    print(f"Rule fixed for all sensors: {label(fixed_best)} > {fixed[fixed_best][1]:.3g}{gru_line}")
    print()
    print(
        "| held-out sensor | windows | any feature, own threshold (best of "
        f"{len(keys)}) | lead % | {label(one_feature)}, own threshold | one fixed rule: {label(fixed_best)} | "
        "GRU score, own threshold | GRU score, one threshold | GRU defaults, calibrated |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    cols: list[list[float]] = [[] for _ in range(6)]
    for i, (sensor, n, _, calibrated) in enumerate(sensors):
        k = max(keys, key=lambda key: own[i][key])
        gru_fixed = fixed[(GRU, 1, 1)][2][i] if (GRU, 1, 1) in fixed else 0.0
        vals = [
            own[i][k],
            own[i][one_feature],
            fixed[fixed_best][2][i],
            own[i][(GRU, 1, 1)],
            gru_fixed,
            calibrated,
        ]
        for c, v in zip(cols, vals, strict=True):
            c.append(v)
        print(f"| {sensor} | {n} | {label(k)} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + " |")
    meds = [statistics.median(c) for c in cols]
    print("| **median** | | | " + " | ".join(f"**{100 * m:.1f}**" for m in meds) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
