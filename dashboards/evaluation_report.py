"""The evaluation report of `gruwatch evaluate`: one self-contained HTML page, inline SVG, no scripts.

It lives in `dashboards/` beside the live fleet view (app.py, fleet.py, feed.py) because both are
what people look at; the trainer only calls `write_report` (trainer/evaluate_cli.py).

`render_report(metrics, traces)` turns the `metrics.json` of `gruwatch evaluate` (docs/evaluation.md)
and one `RunTrace` per run into one page, written for a maintenance engineer: the runs that need
attention first (missed failures, false alarms, late alarms), then the summary table, the ROC curve,
the fault-type confusion matrix, the lead-time table, the baseline comparison and, per run (those
needing attention first), the health score over its life with the warning and alarm thresholds, the
windows in alarm and the first degraded window. Every time on the page is in one unit (minutes, or
hours when the longest run lasts two hours or more). Plots are hand-written SVG (no plotting
library), so the page opens offline and can be mailed.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

W, H = 640, 220  # default plot size in px
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 12, 32
MAX_POINTS = 800  # per line; longer series are reduced to per-bucket min and max
MAX_RUN_PLOTS = 200

COLORS = {
    "health": "#1f6feb",
    "warning": "#d29922",
    "alarm": "#cf222e",
    "degraded": "#8250df",
    "grid": "#d0d7de",
    "text": "#24292f",
    "diag": "#8c959f",
}


@dataclass
class RunTrace:
    """What a run's plot shows: time (s), health score, alarm state (0/1/2) per window, onset (s)."""

    run_id: str
    t_s: np.ndarray
    health: np.ndarray
    states: np.ndarray
    degraded_from_s: float | None = None
    failed_at_end: bool = False


# ------------------------------------------------------------------------------------------- svg
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: float) -> str:
    return f"{v:.1f}"


class _Axes:
    """Maps data to pixel coordinates inside the padded plot area."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, w: int = W, h: int = H) -> None:
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1.0)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1.0)
        self.w, self.h = w, h

    def px(self, x: float) -> float:
        return PAD_L + (x - self.x0) / (self.x1 - self.x0) * (self.w - PAD_L - PAD_R)

    def py(self, y: float) -> float:
        return self.h - PAD_B - (y - self.y0) / (self.y1 - self.y0) * (self.h - PAD_T - PAD_B)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _tick_label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _frame(ax: _Axes, xlabel: str, ylabel: str, yticks: Sequence[float] | None = None) -> list[str]:
    parts = []
    for tx in _ticks(ax.x0, ax.x1):
        x = ax.px(tx)
        parts.append(
            f'<line x1="{_fmt(x)}" y1="{PAD_T}" x2="{_fmt(x)}" y2="{ax.h - PAD_B}" stroke="{COLORS["grid"]}"/>'
        )
        parts.append(
            f'<text x="{_fmt(x)}" y="{ax.h - PAD_B + 14}" text-anchor="middle">{_tick_label(tx)}</text>'
        )
    for ty in yticks if yticks is not None else _ticks(ax.y0, ax.y1, 4):
        y = ax.py(ty)
        parts.append(
            f'<line x1="{PAD_L}" y1="{_fmt(y)}" x2="{ax.w - PAD_R}" y2="{_fmt(y)}" stroke="{COLORS["grid"]}"/>'
        )
        parts.append(f'<text x="{PAD_L - 4}" y="{_fmt(y + 4)}" text-anchor="end">{_tick_label(ty)}</text>')
    parts.append(
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{ax.w - PAD_L - PAD_R}" height="{ax.h - PAD_T - PAD_B}" '
        f'fill="none" stroke="{COLORS["text"]}"/>'
    )
    parts.append(
        f'<text x="{(PAD_L + ax.w - PAD_R) / 2:.1f}" y="{ax.h - 4}" text-anchor="middle">{_esc(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{(PAD_T + ax.h - PAD_B) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(PAD_T + ax.h - PAD_B) / 2:.1f})">{_esc(ylabel)}</text>'
    )
    return parts


def _svg(parts: Sequence[str], w: int = W, h: int = H, title: str = "") -> str:
    return (
        f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'font-family="sans-serif" font-size="11" fill="{COLORS["text"]}" role="img">'
        f"<title>{_esc(title)}</title>" + "".join(parts) + "</svg>"
    )


def _reduce(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep each bucket's min and max (in time order), so spikes survive thinning."""
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(int)
    xs, ys = [], []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        seg = y[a:b]
        i, j = a + int(np.argmin(seg)), a + int(np.argmax(seg))
        for k in sorted({i, j}):
            xs.append(x[k])
            ys.append(y[k])
    return np.asarray(xs), np.asarray(ys)


def _polyline(ax: _Axes, x: np.ndarray, y: np.ndarray, color: str, width: float = 1.5) -> str:
    pts = " ".join(f"{_fmt(ax.px(float(a)))},{_fmt(ax.py(float(b)))}" for a, b in zip(x, y, strict=True))
    return f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{pts}"/>'


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where mask is True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def report_unit(longest_s: float) -> tuple[str, float]:
    """The one time unit of a report: hours when the longest run lasts 2 h or more, else minutes."""
    return ("h", 3600.0) if longest_s >= 2 * 3600 else ("min", 60.0)


def _time_unit(span_s: float) -> tuple[str, float]:
    """(unit name, seconds per unit) that keeps a time axis readable."""
    if span_s >= 3 * 86_400:
        return "days", 86_400.0
    if span_s >= 2 * 3600:
        return "h", 3600.0
    if span_s >= 120:
        return "min", 60.0
    return "s", 1.0


def score_plot(trace: RunTrace, thresholds: dict[str, Any], unit: tuple[str, float] | None = None) -> str:
    """Health score over the run's life with thresholds, alarm spans and raises, and onset.

    `unit` is (name, seconds per unit) for the time axis; by default one that suits this run.
    A warning threshold equal to the alarm threshold is drawn once, labelled "warning = alarm".
    """
    t_s = np.asarray(trace.t_s, np.float64)
    y = np.asarray(trace.health, np.float64)
    if t_s.size == 0:
        return _svg(["<text x='10' y='20'>no windows</text>"], title=trace.run_id)
    unit_name, per = unit or _time_unit(float(t_s[-1] - t_s[0]))
    t = t_s / per
    ax = _Axes(float(t[0]), float(t[-1]), 0.0, 1.0)
    parts = _frame(ax, f"time since start ({unit_name})", "health score", [0, 0.25, 0.5, 0.75, 1.0])
    states = np.asarray(trace.states)
    step = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    for a, b in _spans(states == 2):  # windows in alarm, shaded
        x0, x1 = ax.px(float(t[a])), min(ax.px(float(t[b - 1]) + step), W - PAD_R)
        parts.append(
            f'<rect class="alarm-span" x="{_fmt(x0)}" y="{PAD_T}" width="{_fmt(max(x1 - x0, 1.0))}" '
            f'height="{H - PAD_T - PAD_B}" fill="{COLORS["alarm"]}" fill-opacity="0.12"/>'
        )
    if trace.degraded_from_s is not None:
        x = ax.px(trace.degraded_from_s / per)
        parts.append(
            f'<line x1="{_fmt(x)}" y1="{PAD_T}" x2="{_fmt(x)}" y2="{H - PAD_B}" stroke="{COLORS["degraded"]}" '
            f'stroke-dasharray="4 3"/>'
        )
    lines = {n: float(thresholds[n]) for n in ("warning", "alarm") if thresholds.get(n) is not None}
    if "warning" in lines and lines["warning"] == lines.get("alarm"):
        del lines["warning"]
        labels = {"alarm": "warning = alarm"}
    else:
        labels = {n: n for n in lines}
    for name, value in lines.items():
        yy = ax.py(value)
        parts.append(
            f'<line x1="{PAD_L}" y1="{_fmt(yy)}" x2="{W - PAD_R}" y2="{_fmt(yy)}" stroke="{COLORS[name]}" '
            f'stroke-width="1.5" stroke-dasharray="6 3"/>'
        )
        # labels sit above the alarm line and below the warning line, so close lines keep both readable
        dy = -3 if name == "alarm" else 11
        parts.append(
            f'<text class="threshold-label" x="{W - PAD_R - 4}" y="{_fmt(yy + dy)}" text-anchor="end" '
            f'fill="{COLORS[name]}">{labels[name]} {value:.2f}</text>'
        )
    xr, yr = _reduce(t, y)
    parts.append(_polyline(ax, xr, yr, COLORS["health"]))
    prev = np.concatenate([[0], states[:-1]])
    for k in np.flatnonzero((states == 2) & (prev != 2)):  # alarm raises
        parts.append(
            f'<path class="alarm-mark" d="M{_fmt(ax.px(float(t[k])))} {PAD_T + 1} l-5 -0 l5 9 l5 -9 z" '
            f'fill="{COLORS["alarm"]}"/>'
        )
    return _svg(parts, title=f"health score over life: {trace.run_id}")


def roc_plot(roc: dict[str, list[float]], label: str = "") -> str:
    """The ROC curve (false positive rate vs true positive rate) with the chance diagonal."""
    size = 300
    ax = _Axes(0.0, 1.0, 0.0, 1.0, w=size, h=size)
    parts = _frame(ax, "false positive rate", "true positive rate", [0, 0.25, 0.5, 0.75, 1.0])
    parts.append(
        f'<line x1="{_fmt(ax.px(0))}" y1="{_fmt(ax.py(0))}" x2="{_fmt(ax.px(1))}" y2="{_fmt(ax.py(1))}" '
        f'stroke="{COLORS["diag"]}" stroke-dasharray="4 3"/>'
    )
    if roc.get("fpr"):
        parts.append(
            _polyline(ax, np.asarray(roc["fpr"]), np.asarray(roc["tpr"]), COLORS["health"], width=2.0)
        )
    else:
        parts.append(f'<text x="{size / 2}" y="{size / 2}" text-anchor="middle">needs both classes</text>')
    if label:
        parts.append(f'<text x="{PAD_L + 8}" y="{PAD_T + 16}">{_esc(label)}</text>')
    return _svg(parts, w=size, h=size, title="ROC curve")


def confusion_plot(classes: Sequence[str], confusion: Sequence[Sequence[int]]) -> str:
    """Row-normalised confusion matrix (true class rows, predicted columns) with counts in the cells."""
    n = len(classes)
    cell = max(28, min(56, 420 // max(n, 1)))
    left, top = 90, 70
    w, h = left + n * cell + 10, top + n * cell + 10
    cm = np.asarray(confusion, dtype=np.float64).reshape(n, n) if n else np.zeros((0, 0))
    parts = [
        f'<text x="{left + n * cell / 2:.1f}" y="14" text-anchor="middle">predicted class</text>',
        f'<text x="12" y="{top + n * cell / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + n * cell / 2:.1f})">true class</text>',
    ]
    for j, c in enumerate(classes):
        x = left + j * cell + cell / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top - 6}" text-anchor="start" transform="rotate(-45 {x:.1f} {top - 6})">{_esc(c)}</text>'
        )
    for i, c in enumerate(classes):
        parts.append(
            f'<text x="{left - 4}" y="{top + i * cell + cell / 2 + 4:.1f}" text-anchor="end">{_esc(c)}</text>'
        )
        total = cm[i].sum()
        for j in range(n):
            frac = cm[i, j] / total if total else 0.0
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                f'fill="{COLORS["health"]}" fill-opacity="{0.05 + 0.9 * frac:.3f}" stroke="#ffffff"/>'
            )
            ink = "#ffffff" if frac > 0.5 else COLORS["text"]
            parts.append(
                f'<text x="{left + j * cell + cell / 2:.1f}" y="{top + i * cell + cell / 2 + 4:.1f}" '
                f'text-anchor="middle" fill="{ink}">{int(cm[i, j])}</text>'
            )
    return _svg(parts, w=w, h=h, title="fault-type confusion matrix")


# ------------------------------------------------------------------------------------------ html
def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return _esc(v)


def _percent(fraction: float | None) -> str | None:
    """A share of life as a percentage for the tables ("–" stays for None)."""
    return None if fraction is None else f"{100 * fraction:.3g} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Unit:
    """Formats every time on the page in one unit (a number; the unit is named once per column)."""

    def __init__(self, name: str, per_s: float) -> None:
        self.name, self.per_s = name, per_s

    def __call__(self, s: float | None, *, suffix: bool = False) -> str:
        if s is None or not math.isfinite(s):
            return "–"
        v = s / self.per_s
        text = f"{v:,.2f}" if self.name == "h" else f"{v:,.1f}"
        return f"{text} {self.name}" if suffix else text


def attention_runs(runs: Sequence[dict[str, Any]], late_fraction: float = 0.05) -> list[tuple[str, str]]:
    """(run id, why) for the runs a maintenance engineer should look at first, worst first.

    A failing run whose alarm is off at its end (missed), runs with false alarms (most first), and
    failing runs caught in the last `late_fraction` of their life (too late to plan a repair).
    """
    missed, false, late = [], [], []
    for r in runs:
        if r.get("failed_at_end") and r.get("lead_time_s") is None:
            missed.append((r["run_id"], "failure missed: no alarm at end of life"))
        if r.get("false_alarms"):
            n = int(r["false_alarms"])
            false.append((n, r["run_id"], f"{n} false alarm{'s' if n != 1 else ''}"))
        frac = r.get("lead_fraction")
        if (
            r.get("failed_at_end")
            and r.get("lead_time_s") is not None
            and frac is not None
            and frac < late_fraction
        ):
            late.append((r["run_id"], f"alarm only in the last {frac:.1%} of life"))
    false.sort(key=lambda x: -x[0])
    return missed + [(rid, why) for _, rid, why in false] + late


CSS = """
body { font-family: sans-serif; margin: 24px; color: #24292f; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
.note { color: #57606a; font-size: 13px; } .warn { color: #cf222e; font-weight: bold; }
.runs { display: flex; flex-wrap: wrap; gap: 8px; } figure { margin: 4px; }
figcaption { font-size: 12px; color: #57606a; }
"""


def render_report(metrics: dict[str, Any], traces: Sequence[RunTrace]) -> str:
    """The whole report as one HTML string (inline CSS and SVG only)."""
    model = metrics.get("model", {})
    thresholds = model.get("thresholds", {})
    win = metrics["windows"]
    al = metrics["alarms"]
    sig = metrics.get("signature", "not verified")
    runs = metrics.get("runs", [])
    longest = max(
        [r.get("life_s") or 0.0 for r in runs]
        + [float(t.t_s[-1] - t.t_s[0]) for t in traces if len(t.t_s)]
        + [0.0]
    )
    unit = _Unit(*report_unit(longest))
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>gruwatch evaluation: {_esc(model.get('model_version', ''))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>gruwatch evaluation — model {_esc(model.get('model_version', '?'))}</h1>",
        f"<p class='note'>Generated {_esc(metrics.get('generated', ''))}. Data: "
        f"{_esc(', '.join(metrics.get('data', {}).get('paths', [])))} "
        f"({metrics.get('data', {}).get('runs', 0)} runs, {win['count']} windows). "
        "Scores were computed step-wise through the agent's scorer, window by window from a fresh state. "
        "The health score runs from 0 to 1: <b>higher = worse</b>. "
        f"All times are in {'hours' if unit.name == 'h' else 'minutes'}.</p>",
    ]
    sig_class = "note" if sig == "verified" else "warn"
    out.append(f"<p class='{sig_class}'>Bundle signature: {_esc(sig)}.</p>")
    left_out = metrics.get("data", {}).get("left_out") or []
    if left_out:
        out.append(
            f"<p class='warn'>{len(left_out)} run(s) left out: the agent would refuse their windows as "
            "model_mismatch (not what the model was trained on).</p>"
        )
        out.append(
            _table(["run", "windows", "why"], [[r["run_id"], r["windows"], r["reason"]] for r in left_out])
        )
    attention = attention_runs(runs)
    out.append("<h2>Runs that need attention</h2>")
    if attention:
        out.append(_table(["run", "why"], attention, cls="attention"))
    else:
        out.append(
            "<p class='note'>None: every failing run was caught in time and no run raised a false alarm.</p>"
        )
    out.append("<h2>Summary</h2>")
    rows = [
        ["window AUROC (health vs degraded)", win["auroc"]],
        ["labelled windows (degraded / healthy)", f"{win['degraded']} / {win['healthy']}"],
        ["failing runs detected (alarm on at end of life)", f"{al['detected']} of {al['failing_runs']}"],
        ["median lead time", unit(al["lead_time_s"]["median"], suffix=True)],
        ["median lead time, share of life", _percent(al["lead_fraction"]["median"])],
        ["false alarms / healthy machine-days", f"{al['false_alarms']} / {al['healthy_machine_days']:.3g}"],
        ["false alarms per machine-day", al["false_alarms_per_machine_day"]],
        ["degraded windows in alarm", al.get("degraded_windows_in_alarm")],
    ]
    ft = metrics.get("fault_types")
    if ft:
        rows.append(["fault-type accuracy (all labelled windows)", ft["accuracy"]])
        rows.append(["fault-type accuracy (degraded windows)", ft["accuracy_degraded"]])
    rows.append(
        [
            "thresholds (warning / alarm, raise / clear windows)",
            f"{thresholds.get('warning', 0):.3g} / {thresholds.get('alarm', 0):.3g}, "
            f"{thresholds.get('raise_windows')} / {thresholds.get('clear_windows')}",
        ]
    )
    out.append(_table(["metric", "value"], rows))

    out.append("<h2>ROC curve (per window)</h2>")
    auc_label = "AUROC " + _num(win["auroc"])
    out.append(f"<figure>{roc_plot(win['roc'], auc_label)}</figure>")

    if ft:
        out.append("<h2>Fault types</h2>")
        out.append(f"<figure>{confusion_plot(ft['classes'], ft['confusion'])}</figure>")

    out.append("<h2>Lead time per failing run</h2>")
    out.append(
        "<p class='note'>Lead time = end of life (last window) minus the raise of the alarm that is still "
        "on at the end. A run whose alarm is off at its end counts as missed.</p>"
    )
    lead_rows = [
        [
            r["run_id"],
            unit(r["life_s"]),
            unit(r["degraded_from_s"]),
            unit(r["first_alarm_s"]),
            unit(r["lead_time_s"]) if r["lead_time_s"] is not None else "missed",
            _percent(r["lead_fraction"]),
            r["false_alarms"],
        ]
        for r in metrics.get("runs", [])
        if r["failed_at_end"]
    ]
    out.append(
        _table(
            [
                "run",
                f"life ({unit.name})",
                f"degraded from ({unit.name})",
                f"first alarm ({unit.name})",
                f"lead time ({unit.name})",
                "share of life",
                "false alarms",
            ],
            lead_rows,
        )
        if lead_rows
        else "<p class='note'>No run ends in a failure.</p>"
    )

    baselines = metrics.get("baselines")
    if baselines:
        out.append("<h2>Baselines (same runs, same metrics)</h2>")
        out.append(
            "<p class='note'>Baselines are fitted and their alarm thresholds calibrated on the training "
            "runs; the bundle uses the thresholds in its card. Step latency is one window of one sensor, "
            "features excluded (they are the same for all).</p>"
        )
        cols = [
            ("name", "model"),
            ("auroc", "AUROC"),
            ("detected", "detected"),
            ("failing_runs", "failing"),
            ("lead_time_s_median", f"median lead ({unit.name})"),
            ("lead_fraction_median", "lead / life"),
            ("false_alarms_per_machine_day", "false alarms / day"),
            ("fault_accuracy", "fault acc."),
            ("parameters", "parameters"),
            ("train_s", "train (s)"),
            ("step_latency_us", "step (µs)"),
        ]
        formats: dict[str, Callable[[Any], Any]] = {
            "lead_time_s_median": unit,
            "lead_fraction_median": _percent,
        }
        rows_b = [[formats.get(key, lambda v: v)(b.get(key)) for key, _ in cols] for b in baselines]
        out.append(_table([c[1] for c in cols], rows_b))

    out.append("<h2>Health score over life, per run</h2>")
    out.append(
        "<p class='note'>Blue: health score. Dashed: warning (amber) and alarm (red) thresholds, drawn "
        'once as "warning = alarm" where the bundle sets them equal. Red shading: windows in alarm; red '
        "marks: alarm raises. Purple dashed: first degraded window. Runs that need attention come first.</p>"
    )
    first = {rid: i for i, (rid, _) in enumerate(attention)}
    ordered = sorted(
        traces, key=lambda t: first.get(t.run_id, len(first))
    )  # stable: the rest keep their order
    shown = ordered[:MAX_RUN_PLOTS]
    if len(traces) > len(shown):
        out.append(f"<p class='note'>Showing the first {len(shown)} of {len(traces)} runs.</p>")
    out.append("<div class='runs'>")
    for tr in shown:
        cap = f"{tr.run_id}{' (fails at end)' if tr.failed_at_end else ''}"
        plot = score_plot(tr, thresholds, (unit.name, unit.per_s))
        out.append(f"<figure>{plot}<figcaption>{_esc(cap)}</figcaption></figure>")
    out.append("</div></body></html>")
    return "\n".join(out)


def write_report(path: str | Path, metrics: dict[str, Any], traces: Sequence[RunTrace]) -> Path:
    """Write `render_report` to `path` (UTF-8). Returns the path."""
    p = Path(path)
    p.write_text(render_report(metrics, traces), encoding="utf-8")
    return p
