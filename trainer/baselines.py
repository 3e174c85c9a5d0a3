"""Baselines for `gruwatch evaluate --baselines`: what the GRU must beat, on the same runs and metrics.

Every baseline turns each window's features (the same `edge_agent.features` the bundle uses) into a
health score in [0, 1], gets alarm thresholds and hysteresis from `trainer.calibrate` on its own
training data with the bundle's calibration settings (false-alarm target, minimum raise windows,
safety margin), and is replayed through the agent's alarm state machine (`edge_agent.alarms.step`)
over the evaluation runs, so every row of the comparison is computed by `trainer.metrics.quality`:

- ``rms threshold`` / ``kurtosis threshold``: one feature (log RMS, kurtosis) against a threshold —
  the classic vibration alarm. The feature is mapped to [0, 1] monotonically (a logistic of its
  distance from the training median in interquartile ranges), which leaves its ranking unchanged.
- ``isolation forest``: scikit-learn IsolationForest fitted on the healthy (or unlabelled)
  training windows, standardised; score = the anomaly score, mapped to [0, 1] the same way.
- ``logistic regression``: scikit-learn LogisticRegression (class-balanced) on degraded vs
  healthy windows; with fault classes, a second multinomial one predicts the fault type.
- ``LSTM`` (or ``GRU`` for an LSTM bundle): `trainer.model.HealthModel` with the other cell, of the
  bundle's hidden size and layers, trained and calibrated by the trainer itself (`trainer.train.train`,
  the bundle's training configuration) on a split of the training runs.
- ``GRU (bundle)`` (or ``LSTM (bundle)``, as the card's ``cell`` says): the bundle itself (quality from
  the step-wise evaluation). For a like-for-like training time and parameter count, the same cell is
  retrained here with the same loop and data as the other one.

Costs per baseline: parameters (fitted numbers), training time on this machine, and step latency:
the median time to score ONE window of ONE sensor (features excluded; they are the same for all):
onnxruntime for the recurrent models (the bundle's graph; the LSTM exported by the same `export_onnx`),
`predict_proba`/`score_samples` for scikit-learn, numpy for the thresholds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm.auto import tqdm

from edge_agent.alarms import AlarmState, Thresholds, step
from edge_agent.bundle import make_session
from edge_agent.features import FeatureSpec
from trainer.calibrate import ScoredRun, calibrate, settings_of
from trainer.data.runs import Run, split_by_machine
from trainer.export import export_onnx
from trainer.metrics import RunEval, cell_of, fault_classes_of, quality, summary_row
from trainer.model import HealthModel
from trainer.sequences import FeatureSequence, build_sequences
from trainer.synthetic import training_failures
from trainer.train import TrainConfig, score_sequences, train

MAX_FIT_WINDOWS = 200_000
LATENCY_CALLS = 200


# ------------------------------------------------------------------------------------ utilities
def n_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def median_latency_us(fn: Callable[[], Any], calls: int = LATENCY_CALLS) -> float:
    """Median wall time of `fn()` in µs, after a few warm-up calls."""
    for _ in range(5):
        fn()
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def onnx_step_latency_us(session: Any, n_features: int, state_shape: Sequence[int]) -> float:
    """One window of one sensor through an ONNX step graph (features [1, F], h [rows, 1, hidden])."""
    x = np.zeros((1, n_features), np.float32)
    h = np.zeros((int(state_shape[0]), 1, int(state_shape[1])), np.float32)
    return median_latency_us(lambda: session.run(["score", "h_out"], {"features": x, "h": h}))


class RobustSquash:
    """Monotone map of a raw score to (0, 1): logistic of (x - median) / IQR of the training scores."""

    def __init__(self, raw: np.ndarray) -> None:
        q25, q50, q75 = np.quantile(np.asarray(raw, np.float64), [0.25, 0.5, 0.75])
        self.center = float(q50)
        self.width = float(max(q75 - q25, 1e-9))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        z = (np.asarray(raw, np.float64) - self.center) / self.width
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = sigmoid(z), without overflow warnings


def _threshold_latency_us(squash: RobustSquash, alarm: float) -> float:
    x = np.zeros(1, np.float64)
    return median_latency_us(lambda: squash(x) >= alarm)


def replay_alarms(health: Sequence[np.ndarray], thresholds: dict[str, Any]) -> list[np.ndarray]:
    """The agent's alarm states (int8, 0/1/2) after each window, runs stepped side by side from 'ok'."""
    t = Thresholds.from_dict(thresholds)
    out = [np.zeros(len(h), np.int8) for h in health]
    longest = max((len(h) for h in health), default=0)
    lengths = np.array([len(h) for h in health])
    st = AlarmState.fresh(len(health))
    for k in range(longest):
        live = np.flatnonzero(lengths > k)
        sub = AlarmState(st.state[live], st.above[live], st.below[live])
        _, new = step(sub, np.array([health[int(i)][k] for i in live], np.float64), t)
        st.state[live], st.above[live], st.below[live] = sub.state, sub.above, sub.below
        for j, i in enumerate(live):
            out[i][k] = new[j]
    return out


def _cal_targets(seqs: Sequence[FeatureSequence]) -> list[np.ndarray]:
    """Calibration targets: as labelled; with no degraded label anywhere, unknown windows count as healthy."""
    any_degraded = any(np.any(s.target == 1) for s in seqs)
    return [s.target if any_degraded else np.nan_to_num(s.target, nan=0.0) for s in seqs]


def _calibrated(
    health: Sequence[np.ndarray], seqs: Sequence[FeatureSequence], cfg: TrainConfig
) -> dict[str, Any]:
    """Thresholds by `trainer.calibrate` with the bundle's settings (false-alarm target, minimum raise
    windows, safety margin), so every baseline's alarms are set the way the bundle's were."""
    runs = [
        ScoredRun(np.asarray(h, np.float64), tg, s.interval_s)
        for h, tg, s in zip(health, _cal_targets(seqs), seqs, strict=True)
    ]
    thresholds, _ = calibrate(runs, **settings_of(cfg))
    return thresholds


def _results(
    template: Sequence[RunEval], scores: Sequence[np.ndarray], thresholds: dict[str, Any]
) -> list[RunEval]:
    """RunEvals like `template` (same runs and labels) with other scores [N, K] and replayed alarms."""
    states = replay_alarms([np.asarray(s)[:, 0] for s in scores], thresholds)
    return [
        RunEval(
            r.run_id,
            r.machine,
            r.sensor,
            r.source,
            r.ts,
            np.asarray(sc, np.float32),
            st,
            r.target,
            r.fault,
            r.failed_at_end,
            r.failure_after_end_s,
        )
        for r, sc, st in zip(template, scores, states, strict=True)
    ]


def _pool(
    seqs: Sequence[FeatureSequence], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, targets, fault) of all training windows, subsampled to MAX_FIT_WINDOWS."""
    x = np.concatenate([s.features for s in seqs]).astype(np.float64)
    y = np.concatenate([s.target for s in seqs])
    f = np.concatenate([s.fault for s in seqs])
    if len(x) > MAX_FIT_WINDOWS:
        keep = np.sort(rng.choice(len(x), MAX_FIT_WINDOWS, replace=False))
        x, y, f = x[keep], y[keep], f[keep]
    return x, y, f


# ------------------------------------------------------------------------------------ baselines
def card_config(card: dict[str, Any]) -> TrainConfig:
    """The training configuration a bundle's card records (keys this trainer does not know are dropped,
    missing ones take today's defaults)."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in (card.get("training") or {}).items() if k in known})


def _train_config(card: dict[str, Any], *, epochs: int | None, seed: int, progress: bool) -> TrainConfig:
    cfg = card_config(card)
    saved = card.get("training") or {}
    over: dict[str, Any] = {"device": "cpu", "progress": progress, "seed": seed, "threads": 1}
    over["mode"] = card.get("mode", cfg.mode)
    over["hidden"] = int(card["state_shape"][1])
    over["layers"] = int(saved.get("layers", card["state_shape"][0]))
    if epochs is not None:
        over["epochs"] = epochs
    return TrainConfig(**{**asdict(cfg), **over})


def inner_split(
    train_runs: Sequence[Run], by_id: dict[str, FeatureSequence], cfg: TrainConfig
) -> tuple[list[FeatureSequence], list[FeatureSequence]]:
    """(fit, validation) sequences split by machine as the trainer does (`cfg.val_fraction`).

    Supervised training needs degraded and healthy windows on the fit side: when a split leaves
    either out (e.g. the only healthy recording went to validation), the next seeds are tried,
    and failing that all runs are used for fitting with no validation side.
    """
    for k in range(20):
        tr, va = split_by_machine(train_runs, val_fraction=cfg.val_fraction, seed=cfg.seed + k)
        tr_seqs = [by_id[r.run_id] for r in tr]
        targets = np.concatenate([s.target for s in tr_seqs]) if tr_seqs else np.zeros(0)
        if cfg.mode != "supervised" or (np.any(targets == 1) and np.any(targets == 0)):
            return tr_seqs, [by_id[r.run_id] for r in va]
    return [by_id[r.run_id] for r in train_runs], []


def _fit_recurrent(
    cell: str,
    train_seqs: Sequence[FeatureSequence],
    val_seqs: Sequence[FeatureSequence],
    cfg: TrainConfig,
    classes: Sequence[str],
    spec: FeatureSpec,
) -> tuple[HealthModel, dict[str, Any], float]:
    """(model, thresholds, fit seconds) from the trainer itself (`trainer.train.train`) with `cell`,
    with the synthetic failures the bundle's configuration asks for (as `gruwatch train` adds them)."""
    fit_seqs = [*train_seqs, *training_failures(train_seqs, spec, cfg)]
    result = train(fit_seqs, val_seqs, replace(cfg, cell=cell), classes=classes)
    return result.model, result.thresholds, result.timings["fit_s"]


def run_baselines(
    bundle: Any,
    train_runs: Sequence[Run],
    test_seqs: Sequence[FeatureSequence],
    gru_results: Sequence[RunEval],
    *,
    horizon_s: float | None,
    gru_row: dict[str, Any],
    lstm_epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    fit_split: tuple[Sequence[Run], Sequence[Run]] | None = None,
) -> list[dict[str, Any]]:
    """The comparison table (first row: the bundle's GRU), as in metrics.json "baselines".

    The recurrent baselines pick their epoch and calibrate on a by-machine split of `train_runs`
    (`fit_split` = (fit, validation) runs when given, else `inner_split`)."""
    card = bundle.card
    classes = fault_classes_of(bundle.outputs)
    spec = bundle.spec
    cfg = _train_config(card, epochs=lstm_epochs, seed=seed, progress=progress)
    rng = np.random.default_rng(seed)
    all_train = build_sequences(
        train_runs, spec, horizon_s=horizon_s, classes=classes, progress=progress, desc="features (baselines)"
    )
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=6, desc="baselines", unit="model", disable=not progress)

    # The bundle's cell: quality from the bundle, costs from a like-for-like retrain.
    cell = cell_of(card)
    other = "lstm" if cell == "gru" else "gru"
    by_id = {s.run_id: s for s in all_train}
    if fit_split is None:
        tr_seqs, va_seqs = inner_split(train_runs, by_id, cfg)
    else:
        tr_seqs = [by_id[r.run_id] for r in fit_split[0]]
        va_seqs = [by_id[r.run_id] for r in fit_split[1]]
    # Warm torch up once (first-call allocations and kernel choices) so neither fit pays for it.
    warm = TrainConfig(**{**asdict(cfg), "epochs": 1, "progress": False})
    for warm_cell in ("gru", "lstm"):
        _fit_recurrent(warm_cell, tr_seqs, [], warm, classes, spec)
    own, _, own_fit_s = _fit_recurrent(cell, tr_seqs, va_seqs, cfg, classes, spec)
    rows.append(
        {
            **gru_row,
            "parameters": n_parameters(own),
            "train_s": own_fit_s,
            "step_latency_us": onnx_step_latency_us(bundle.session, spec.n_features, bundle.state_shape),
            "note": f"the bundle; train_s from a retrain with the {other.upper()}'s loop and data",
        }
    )
    bar.update(1)

    # One-feature thresholds.
    x_tr, y_tr, f_tr = _pool(all_train, rng)
    for feat, label in (("log_rms", "rms threshold"), ("kurtosis", "kurtosis threshold")):
        if feat not in spec.names:
            continue
        j = spec.names.index(feat)
        t0 = time.perf_counter()
        squash = RobustSquash(x_tr[:, j])
        thr = _calibrated([squash(s.features[:, j]) for s in all_train], all_train, cfg)
        fit_s = time.perf_counter() - t0
        scores = [squash(s.features[:, j])[:, None] for s in test_seqs]
        q = quality(_results(gru_results, scores, thr))
        rows.append(
            summary_row(
                label,
                q,
                parameters=3,  # median, IQR, threshold
                train_s=fit_s,
                step_latency_us=_threshold_latency_us(squash, thr["alarm"]),
                thresholds=thr,
            )
        )
        bar.update(1)

    # Isolation forest on healthy (or unlabelled) windows.
    t0 = time.perf_counter()
    normal = y_tr != 1
    scaler = StandardScaler().fit(x_tr[normal])
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(scaler.transform(x_tr[normal]))
    squash_if = RobustSquash(-forest.score_samples(scaler.transform(x_tr[normal])))

    def if_score(x: np.ndarray) -> np.ndarray:
        return squash_if(-forest.score_samples(scaler.transform(x.astype(np.float64))))

    thr = _calibrated([if_score(s.features) for s in all_train], all_train, cfg)
    fit_s = time.perf_counter() - t0
    q = quality(_results(gru_results, [if_score(s.features)[:, None] for s in test_seqs], thr))
    x1 = test_seqs[0].features[:1] if test_seqs else np.zeros((1, spec.n_features), np.float32)
    rows.append(
        summary_row(
            "isolation forest",
            q,
            parameters=int(sum(t.tree_.node_count for t in forest.estimators_)),
            train_s=fit_s,
            step_latency_us=median_latency_us(lambda: if_score(x1), calls=50),
            thresholds=thr,
        )
    )
    bar.update(1)

    # Logistic regression (needs degraded and healthy windows), plus a fault-type one.
    known = ~np.isnan(y_tr)
    if known.any() and len(np.unique(y_tr[known])) == 2:
        t0 = time.perf_counter()
        lr_scaler = StandardScaler().fit(x_tr)
        lr = LogisticRegression(class_weight="balanced", max_iter=2000).fit(
            lr_scaler.transform(x_tr[known]), y_tr[known].astype(int)
        )
        has_fault = f_tr >= 0
        fault_lr = None
        if classes and len(np.unique(f_tr[has_fault])) >= 2:
            fault_lr = LogisticRegression(max_iter=2000).fit(
                lr_scaler.transform(x_tr[has_fault]), f_tr[has_fault]
            )

        def lr_scores(x: np.ndarray) -> np.ndarray:
            z = lr_scaler.transform(x.astype(np.float64))
            cols = [lr.predict_proba(z)[:, 1:2]]
            if fault_lr is not None:
                probs = np.zeros((len(x), len(classes)))
                probs[:, fault_lr.classes_] = fault_lr.predict_proba(z)
                cols.append(probs)
            return np.concatenate(cols, axis=1)

        thr = _calibrated([lr_scores(s.features)[:, 0] for s in all_train], all_train, cfg)
        fit_s = time.perf_counter() - t0
        q = quality(
            _results(gru_results, [lr_scores(s.features) for s in test_seqs], thr),
            classes if fault_lr is not None else (),
        )
        n_par = lr.coef_.size + lr.intercept_.size
        if fault_lr is not None:
            n_par += fault_lr.coef_.size + fault_lr.intercept_.size
        rows.append(
            summary_row(
                "logistic regression",
                q,
                parameters=int(n_par),
                train_s=fit_s,
                step_latency_us=median_latency_us(lambda: lr_scores(x1), calls=100),
                thresholds=thr,
            )
        )
    bar.update(1)

    # The other cell at equal hidden size, same loop and data as the retrain of the bundle's cell.
    rival, thr, rival_fit_s = _fit_recurrent(other, tr_seqs, va_seqs, cfg, classes, spec)
    scores = score_sequences(rival, test_seqs)
    q = quality(_results(gru_results, scores, thr), classes if rival.fault_classes else ())
    session = make_session(export_onnx(rival))
    rows.append(
        summary_row(
            f"{other.upper()} (same hidden size)",
            q,
            parameters=n_parameters(rival),
            train_s=rival_fit_s,
            step_latency_us=onnx_step_latency_us(session, spec.n_features, rival.state_shape),
            thresholds=thr,
        )
    )
    bar.update(1)
    bar.close()
    return rows
