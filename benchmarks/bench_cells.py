"""Benchmark: GRU against LSTM — parameters, training time per epoch, ONNX step latency, detection quality.

One table, every ratio measured in this run (issue 12). Rows:

- ``GRU H`` / ``LSTM H``: equal hidden size (the trainer's default 64, `--hidden`);
- ``GRU equal parameters``: the GRU's hidden size raised to about the LSTM's parameter count;
- ``GRU H, nn.GRU (before)``: the same GRU trained through torch's own nn.GRU, the path used before
  trainer/fast_gru.py (the before/after of the training columns).

Columns:

- parameters (every trained number, heads included);
- training CPU seconds per epoch as `trainer.train.fit` spends them (`_run_epoch` over training
  batches with AdamW and gradient clipping, truncated BPTT in chunks, then the validation pass
  without gradients), 1 torch thread, per batch size (runs per batch, `--batches`): a timing set of
  two batches of `--windows`-window runs cut from the simulated fleet, the cells interleaved round
  by round; `× LSTM` = LSTM time / this row's (> 1: faster than the LSTM);
- the exported step (`trainer.export.export_onnx`) in onnxruntime with 1 thread as the agent runs
  it, CPU µs per call at B = 1, 64, 1,024 sensors, median of interleaved timing blocks;
- detection quality: each model trained `--epochs` epochs by `trainer.train.train` (best validation
  epoch) and scored on held-out test machines from a zero state: window AUROC of the health score
  against the simulator's degraded labels.

    .venv/bin/python benchmarks/bench_cells.py            # 24 machines, batches 8..128, 12 epochs
    .venv/bin/python benchmarks/bench_cells.py --quick    # 6 machines, batches 8 and 64 (a smoke run)
    .venv/bin/python benchmarks/bench_cells.py --step-only  # the ONNX step only, both forms of each cell

Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_train import fleet_runs  # noqa: E402

from edge_agent.bundle import make_session  # noqa: E402
from trainer.baselines import n_parameters  # noqa: E402
from trainer.data.runs import split_by_machine  # noqa: E402
from trainer.export import export_onnx  # noqa: E402
from trainer.model import HealthModel  # noqa: E402
from trainer.sequences import FeatureSequence, build_sequences, fault_classes, spec_for_runs  # noqa: E402
from trainer.train import (  # noqa: E402
    TrainConfig,
    _batches,
    _run_epoch,
    score_sequences,
    set_seeds,
    train,
    window_metrics,
)

BATCHES = (1, 64, 1024)


def equal_param_hidden(n_features: int, hidden: int, classes: Sequence[str]) -> int:
    """The GRU hidden size whose parameter count is closest to an LSTM's of `hidden` (heads included)."""

    def count(cell: str, h: int) -> int:
        return n_parameters(HealthModel(n_features, cell=cell, hidden=h, fault_classes=tuple(classes)))

    target = count("lstm", hidden)
    return min(range(hidden, 2 * hidden + 1), key=lambda h: abs(count("gru", h) - target))


def make_model(spec: dict[str, object], n_features: int, classes: Sequence[str], seed: int) -> HealthModel:
    torch.manual_seed(seed)
    model = HealthModel(
        n_features,
        cell=str(spec["cell"]),
        hidden=int(spec["hidden"]),  # type: ignore[call-overload]
        mode="supervised",
        fault_classes=tuple(classes),
    )
    model.fused = bool(spec.get("fused", True))
    return model


def epoch_times(
    specs: list[dict[str, object]],
    seqs: Sequence[FeatureSequence],
    cfg: TrainConfig,
    classes: Sequence[str],
    rounds: int,
) -> dict[str, list[float]]:
    """Seconds of one epoch per spec as `fit` runs it (a training pass with AdamW over `seqs`, then
    a validation pass over the same runs without gradients), `rounds` rounds, the specs interleaved
    in each round in alternating order. On the CPU, CPU time of this thread (1 torch thread): on a
    shared machine it counts the work, not the waits for a core. On CUDA (`cfg.device`), wall time
    from a synchronised start to a synchronised end (the GPU's work is not this thread's CPU time)."""
    n_features = seqs[0].features.shape[1]
    pooled = np.concatenate([s.features for s in seqs])
    device = torch.device(cfg.device)
    models = {str(s["name"]): make_model(s, n_features, classes, cfg.seed).to(device) for s in specs}
    for m in models.values():
        m.set_scaler(pooled.mean(0), pooled.std(0))
    opts = {k: torch.optim.AdamW(m.parameters(), lr=cfg.lr) for k, m in models.items()}
    pos_weight = torch.tensor(1.0, device=device)
    cuda = device.type == "cuda"

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.thread_time()

    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(rounds + 1):  # round 0 warms up (allocator, oneDNN primitives) and is not counted
        rng = np.random.default_rng(r)
        batches = _batches(seqs, cfg, rng, train=True)
        val = _batches(seqs, cfg, rng, train=False)
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for k in order:
            t0 = clock()
            _run_epoch(models[k], batches, cfg, pos_weight, opts[k])
            _run_epoch(models[k], val, cfg, pos_weight, None)
            if r:
                times[k].append(clock() - t0)
    return times


def speed_data(seqs: Sequence[FeatureSequence], runs: int, windows: int) -> list[FeatureSequence]:
    """`runs` sequences of `windows` windows cut from the simulated runs (repeated as needed): a
    timing set with full batches whatever the fleet size. Only the amount of work matters here."""
    pieces = []
    for s in seqs:
        for start in range(0, len(s) - windows + 1, windows):
            sl = slice(start, start + windows)
            pieces.append(
                replace(
                    s, features=s.features[sl], ts=s.ts[sl], target=s.target[sl], fault=s.fault[sl], raw=None
                )
            )
    if not pieces:
        raise SystemExit(f"no simulated run has {windows} windows; lower --windows")
    return [replace(pieces[i % len(pieces)], run_id=f"t{i}") for i in range(runs)]


def step_latencies(
    sessions: dict[str, tuple[object, int, tuple[int, int]]], rounds: int, min_time: float
) -> dict[str, dict[int, float]]:
    """µs per `session.run` at each batch size, median over `rounds` interleaved timing blocks."""
    out: dict[str, dict[int, list[float]]] = {k: {b: [] for b in BATCHES} for k in sessions}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for B in BATCHES:
            for k, (sess, F, (rows, hidden)) in sessions.items():
                feeds = {
                    "features": rng.normal(size=(B, F)).astype(np.float32),
                    "h": np.zeros((rows, B, hidden), np.float32),
                }
                out[k][B].append(_per_call_us(lambda s=sess, f=feeds: s.run(["score", "h_out"], f), min_time))  # type: ignore[attr-defined, misc]
    return {k: {b: statistics.median(v) for b, v in per.items()} for k, per in out.items()}


def identity_graph(n_features: int) -> bytes:
    """The cheapest graph with the step's inputs and outputs (score = features, h_out = h): what one
    onnxruntime `run()` costs before any arithmetic, the floor under every step."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["features"], ["score"]),
            helper.make_node("Identity", ["h"], ["h_out"]),
        ],
        "floor",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [None, "batch", None]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", n_features]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [None, "batch", None]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(onnx.shape_inference.infer_shapes(model).SerializeToString())


class OperatorStep(torch.nn.Module):
    """The model's step through its nn.GRU / nn.LSTM: the exporter emits ONNX's GRU / LSTM operator
    (one node for the cell; `HealthModel.step` exports plain Gemms instead). Supervised mode only."""

    def __init__(self, model: HealthModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, L = self.model, self.model.layers
        z = m.scale(features).unsqueeze(1)
        if m.cell == "gru":
            _, h_out = m.rnn(z, h)
        else:
            _, (h_n, c_n) = m.rnn(z, (h[:L], h[L:]))
            h_out = torch.cat([h_n, c_n], dim=0)
        top = h_out[L - 1]
        cols = [torch.sigmoid(m.health_head(top))]
        if m.fault_head is not None:
            cols.append(torch.softmax(m.fault_head(top), dim=-1))
        return torch.cat(cols, dim=-1), h_out


def export_operator_form(model: HealthModel) -> bytes:
    """`OperatorStep(model)` as ONNX bytes, exported as trainer.export exports the step."""
    from trainer.export import step_program

    model = model.cpu().eval()
    return bytes(step_program(OperatorStep(model).eval(), model).SerializeToString())


def step_forms(hidden: int, rounds: int, min_time: float) -> None:
    """The exported step of each cell in both forms (the shipped Gemm form, ONNX's GRU / LSTM
    operator), untrained weights with a fitted-looking scaler (the speed does not depend on the
    values), every form timed in the same interleaved blocks; then each cell's fastest form per
    batch size against the other's."""
    F, classes = 25, ("healthy", "outer", "inner", "ball", "cage")
    rng = np.random.default_rng(0)
    sessions: dict[str, tuple[object, int, tuple[int, int]]] = {}
    for cell in ("gru", "lstm"):
        torch.manual_seed(0)
        model = HealthModel(F, cell=cell, hidden=hidden, fault_classes=classes)
        model.set_scaler(rng.normal(size=F), rng.uniform(0.5, 2.0, size=F))
        shape = (model.state_rows, hidden)
        sessions[f"{cell.upper()} Gemm form (exported)"] = (make_session(export_onnx(model)), F, shape)
        sessions[f"{cell.upper()} ONNX {cell.upper()} operator"] = (
            make_session(export_operator_form(model)),
            F,
            shape,
        )
    floor = "run() floor (Identity graph)"
    sessions[floor] = (make_session(identity_graph(F)), F, (1, hidden))
    lat = step_latencies(sessions, rounds=rounds, min_time=min_time)
    print(
        f"\nONNX step, H={hidden}, F={F}, 5 classes, onnxruntime 1 thread: CPU µs per run(), median of {rounds} interleaved blocks\n"
    )
    print("| form | B=1 | B=64 | B=1,024 |")
    print("| --- | ---: | ---: | ---: |")
    for k, per in lat.items():
        print(f"| {k} | " + " | ".join(f"{per[b]:.1f}" for b in BATCHES) + " |")
    gru, lstm = "GRU Gemm form (exported)", "LSTM Gemm form (exported)"
    best = {
        c: {b: min(v[b] for k, v in lat.items() if k.startswith(c)) for b in BATCHES} for c in ("GRU", "LSTM")
    }
    print(
        "LSTM / GRU, exported forms: "
        + " / ".join(f"{lat[lstm][b] / lat[gru][b]:.2f}×" for b in BATCHES)
        + "; fastest form of each: "
        + " / ".join(f"{best['LSTM'][b] / best['GRU'][b]:.2f}×" for b in BATCHES)
        + " at B=1/64/1,024 (goal ≥ 1.3×)"
    )
    print(
        "share of the exported GRU step that is the bare run() call: "
        + " / ".join(f"{lat[floor][b] / lat[gru][b]:.0%}" for b in BATCHES)
        + "; cell-dependent part above the floor, LSTM / GRU: "
        + " / ".join(
            f"{(lat[lstm][b] - lat[floor][b]) / (lat[gru][b] - lat[floor][b]):.2f}×" for b in BATCHES
        )
    )
    print(Path("/proc/loadavg").read_text().strip(), "(load average)")


def _per_call_us(fn: Callable[[], object], min_time: float) -> float:
    fn()
    n, t0 = 0, time.thread_time()
    while True:
        fn()
        n += 1
        dt = time.thread_time() - t0
        if dt >= min_time:
            return dt / n * 1e6


def profile_cells(hidden: int, n_features: int, batches: Sequence[int], steps: int = 128) -> None:
    """torch.profiler over one chunk (forward + backward through the cell only) per cell and batch:
    where the time goes, how many operations each runs per time step."""
    from torch.profiler import ProfilerActivity, profile

    for B in batches:
        for cell in ("lstm", "gru"):
            torch.manual_seed(0)
            model = HealthModel(n_features, cell=cell, hidden=hidden)
            x = torch.randn(B, steps, n_features)

            def chunk(m: HealthModel = model, x: torch.Tensor = x) -> None:
                y, h = m.recur(x, m.initial_state(x.shape[0]))
                (y.sum() + h.sum()).backward()

            chunk()
            reps = 5
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(reps):
                    chunk()
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events) / reps
            views = ("aten::select", "aten::slice", "aten::unbind", "aten::view", "aten::as_strided")
            views += ("aten::transpose", "aten::t", "aten::expand", "aten::unsqueeze", "aten::empty")
            ops = sum(e.count for e in events if e.key.startswith("aten::") and e.key not in views) / reps
            top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
            print(
                f"profile B={B} {cell}: {total / 1e3:.1f} ms per {steps}-step chunk (forward + backward), "
                f"{ops / steps:.1f} aten ops per step (views and allocations not counted); top self CPU: "
                + ", ".join(
                    f"{e.key} {e.self_cpu_time_total / reps / 1e3:.1f} ms ×{e.count // reps}" for e in top
                )
            )


def cell_specs(hidden: int, h_eq: int) -> list[dict[str, object]]:
    """The compared models: GRU and LSTM of equal hidden size, then the GRU of the LSTM's parameters."""
    return [
        {"name": f"GRU H={hidden}", "cell": "gru", "hidden": hidden},
        {"name": f"LSTM H={hidden}", "cell": "lstm", "hidden": hidden},
        {"name": f"GRU H={h_eq} (equal parameters)", "cell": "gru", "hidden": h_eq},
    ]


def print_head(head: Sequence[str]) -> None:
    """A Markdown table's head: the names, then right-aligned columns after the first."""
    print("| " + " | ".join(head) + " |")
    print("| --- | " + " | ".join("---:" for _ in head[1:]) + " |")


def speed_head(what: str, batches: Sequence[int]) -> list[str]:
    return [c for B in batches for c in (f"{what} B={B}", "× LSTM")]


def speed_cells(
    speed: dict[int, dict[str, float]], k: str, lstm: str, batches: Sequence[int], digits: int
) -> list[str]:
    """Seconds per epoch of model `k` per batch size, each beside LSTM time / its time."""
    return [c for B in batches for c in (f"{speed[B][k]:.{digits}f}", f"{speed[B][lstm] / speed[B][k]:.2f}")]


def gpu_training(args: argparse.Namespace) -> int:
    """The training columns on a CUDA GPU: GRU and LSTM through cuDNN (trainer/fast_gru.py is the
    CPU path only), wall seconds per epoch of `fit`'s loop, interleaved rounds."""
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    set_seeds(args.seed, 1)
    t_start = time.perf_counter()
    if args.quick:
        args.machines, args.rounds = 6, 2
    runs = fleet_runs(args.machines, args.seed, 3 * 3600.0)
    spec = spec_for_runs(runs)
    classes = fault_classes(runs)
    seqs = build_sequences(runs, spec, classes=classes, progress=False)
    F = spec.n_features
    specs = cell_specs(args.hidden, equal_param_hidden(F, args.hidden, classes))
    lstm = str(specs[1]["name"])
    cfg = TrainConfig(hidden=args.hidden, seed=args.seed, progress=False, device="cuda")
    speed: dict[int, dict[str, float]] = {}
    for B in args.batches:
        data = speed_data(seqs, 2 * B, args.windows)
        times = epoch_times(specs, data, replace(cfg, batch_size=B), classes, args.rounds)
        speed[B] = {k: statistics.median(v) for k, v in times.items()}
    params = {str(sp["name"]): n_parameters(make_model(sp, F, classes, args.seed)) for sp in specs}
    print(
        f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN "
        f"{torch.backends.cudnn.version()}; F={F}, {len(classes)} fault classes, chunk {cfg.chunk_len} "
        f"windows; timing set: 2 batches of {args.windows}-window runs per batch size; wall s per "
        f"epoch (training + validation pass, as `fit`), median of {args.rounds} interleaved rounds"
    )
    print_head(["model", "parameters", *speed_head("GPU s/epoch", args.batches)])
    for sp in specs:
        k = str(sp["name"])
        cells = [k, f"{params[k]:,}", *speed_cells(speed, k, lstm, args.batches, digits=3)]
        print("| " + " | ".join(cells) + " |")
    print(f"benchmark took {time.perf_counter() - t_start:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="6 machines, batches 8 and 64, 2 rounds, 2 epochs (a smoke run)"
    )
    p.add_argument("--machines", type=int, default=24, help="simulated machines (default 24)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument(
        "--batches", type=int, nargs="+", default=[8, 32, 64, 128], help="runs per batch for the timing"
    )
    p.add_argument("--windows", type=int, default=512, help="windows per run of the timing set")
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per cell and batch (interleaved)")
    p.add_argument("--epochs", type=int, default=12, help="epochs of the detection-quality training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--profile", action="store_true", help="only the torch.profiler view of one chunk per cell"
    )
    p.add_argument(
        "--step-only",
        action="store_true",
        help="only the ONNX step: both cells in the exported Gemm form and as ONNX's GRU/LSTM operator (~2 min)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: only the training columns, on the GPU (cuDNN's GRU and LSTM), wall time per epoch",
    )
    args = p.parse_args(argv)
    if args.device == "cuda":
        return gpu_training(args)
    if args.step_only:
        step_forms(args.hidden, rounds=31, min_time=0.02)
        return 0
    if args.profile:
        torch.set_num_threads(1)
        profile_cells(args.hidden, 25, args.batches)
        return 0
    if args.quick:
        args.machines, args.batches, args.windows, args.rounds, args.epochs = 6, [8, 64], 128, 2, 2
    set_seeds(args.seed, 1)
    t_start = time.perf_counter()

    runs = fleet_runs(args.machines, args.seed, 3 * 3600.0)
    rest, test = split_by_machine(runs, val_fraction=0.25, seed=args.seed)
    tr, va = split_by_machine(rest, val_fraction=0.2, seed=args.seed + 1)
    spec = spec_for_runs(runs)
    classes = fault_classes(tr)
    train_seqs = build_sequences(tr, spec, classes=classes, progress=False)
    val_seqs = build_sequences(va, spec, classes=classes, progress=False)
    test_seqs = build_sequences(test, spec, classes=classes, progress=False)
    F = spec.n_features
    before = f"GRU H={args.hidden}, nn.GRU (before)"
    specs = cell_specs(args.hidden, equal_param_hidden(F, args.hidden, classes))
    specs.append({"name": before, "cell": "gru", "hidden": args.hidden, "fused": False})
    gru, lstm = str(specs[0]["name"]), str(specs[1]["name"])

    # Training speed: the trainer's epoch (training + validation pass) per batch size.
    cfg = TrainConfig(hidden=args.hidden, seed=args.seed, progress=False)
    speed: dict[int, dict[str, float]] = {}
    rounds_s: dict[int, dict[str, list[float]]] = {}
    for B in args.batches:
        data = speed_data(train_seqs, 2 * B, args.windows)
        rounds_s[B] = epoch_times(specs, data, replace(cfg, batch_size=B), classes, args.rounds)
        speed[B] = {k: statistics.median(v) for k, v in rounds_s[B].items()}

    # Detection quality and the exported step, per cell, trained by the trainer itself.
    quality: dict[str, float] = {}
    params: dict[str, int] = {}
    sessions: dict[str, tuple[object, int, tuple[int, int]]] = {}
    for sp in specs[:3]:
        name = str(sp["name"])
        res = train(
            train_seqs,
            val_seqs,
            replace(cfg, cell=str(sp["cell"]), hidden=int(sp["hidden"]), epochs=args.epochs),  # type: ignore[call-overload]
            classes=classes,
        )
        quality[name] = float(
            window_metrics(score_sequences(res.model, test_seqs), test_seqs).get("auroc", np.nan)
        )
        params[name] = n_parameters(res.model)
        sessions[name] = (make_session(export_onnx(res.model)), F, (res.model.state_rows, res.model.hidden))
    params[before] = params[gru]
    floor = "run() floor (Identity graph)"
    sessions[floor] = (make_session(identity_graph(F)), F, (1, args.hidden))
    lat = step_latencies(sessions, rounds=3 if args.quick else 7, min_time=0.05 if args.quick else 0.2)

    n_windows = sum(len(s) for s in train_seqs)
    print(
        f"\n{args.machines} simulated machines (3 h each): {len(train_seqs)} training runs ({n_windows:,} windows), "
        f"{len(val_seqs)} validation, {len(test_seqs)} test runs; F={F}, {len(classes)} fault classes, "
        f"1 torch thread, chunk {cfg.chunk_len} windows"
    )
    print(
        f"training: CPU s per epoch (training + validation pass, as `fit`), timing set of 2 batches of "
        f"{args.windows}-window runs per batch size, median of {args.rounds} interleaved rounds; "
        "× LSTM = LSTM time / this row's (> 1: faster than the LSTM)"
    )
    print(
        "ONNX: the exported step (trainer.export), onnxruntime 1 thread, CPU µs per call, median of "
        "interleaved blocks; test AUROC: window AUROC on held-out machines after --epochs epochs\n"
    )
    steps = ["step µs B=1", "× LSTM", "B=64", "× LSTM", "B=1,024", "× LSTM", "test AUROC"]
    print_head(["model", "parameters", *speed_head("train s/epoch", args.batches), *steps])
    for sp in specs:
        k = str(sp["name"])
        cells = [k, f"{params[k]:,}", *speed_cells(speed, k, lstm, args.batches, digits=2)]
        for b in BATCHES:
            cells += [f"{lat[k][b]:.1f}", f"{lat[lstm][b] / lat[k][b]:.2f}"] if k in lat else ["-", "-"]
        cells.append(f"{quality[k]:.3f}" if k in quality else "-")
        print("| " + " | ".join(cells) + " |")
    print(
        f"| {floor} | - | "
        + " | ".join("-" for _ in args.batches for _ in range(2))
        + " | "
        + " | ".join(f"{lat[floor][b]:.1f} | -" for b in BATCHES)
        + " | - |"
    )
    above = [(lat[lstm][b] - lat[floor][b]) / max(lat[gru][b] - lat[floor][b], 1e-9) for b in BATCHES]
    print(
        "cell-dependent part of the step (µs above the run() floor), LSTM / GRU: "
        + "/".join(f"{a:.2f}×" for a in above)
        + " at B=1/64/1,024"
    )
    print("\nevery round's CPU s per epoch:")
    for B in args.batches:
        print(
            f"  B={B}: "
            + "; ".join(f"{k}: " + ", ".join(f"{t:.2f}" for t in v) for k, v in rounds_s[B].items())
        )
    print(
        "goals (issue 12): GRU ≥ 1.3× faster than the LSTM per epoch at equal hidden size -> "
        + ", ".join(f"B={B}: {speed[B][lstm] / speed[B][gru]:.2f}×" for B in args.batches)
        + "; exported step ≥ 1.3× at B=1/64/1,024 -> "
        + "/".join(f"{lat[lstm][b] / lat[gru][b]:.2f}×" for b in BATCHES)
    )
    print(f"benchmark took {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
