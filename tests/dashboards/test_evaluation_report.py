"""The evaluation report: one self-contained HTML page, an SVG per plot, plots that show what they claim."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np

from dashboards.evaluation_report import RunTrace, _reduce, render_report, score_plot


def _metrics(runs: list[dict], fault_types: dict | None = None, baselines: list | None = None) -> dict:
    return {
        "schema": 1,
        "generated": "2026-11-28T10:00:00+00:00",
        "signature": "not verified",
        "model": {
            "model_version": "v-test",
            "thresholds": {"warning": 0.4, "alarm": 0.6, "raise_windows": 2, "clear_windows": 3},
        },
        "data": {"paths": ["sim/"], "runs": len(runs)},
        "windows": {
            "count": 20,
            "labelled": 20,
            "degraded": 5,
            "healthy": 15,
            "auroc": 0.9,
            "roc": {"fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.8, 1.0]},
        },
        "alarms": {
            "failing_runs": 1,
            "detected": 1,
            "missed": 0,
            "lead_time_s": {"n": 1, "median": 40.0, "mean": 40.0, "min": 40.0, "max": 40.0},
            "lead_fraction": {"n": 1, "median": 0.4, "mean": 0.4, "min": 0.4, "max": 0.4},
            "false_alarms": 0,
            "healthy_machine_days": 0.01,
            "false_alarms_per_machine_day": 0.0,
        },
        "fault_types": fault_types,
        "runs": runs,
        "baselines": baselines,
    }


def _trace(run_id: str, n: int = 11, alarm_from: int = 7) -> tuple[RunTrace, dict]:
    t = np.arange(n) * 10.0
    health = np.linspace(0.0, 1.0, n)
    states = np.zeros(n, np.int8)
    states[alarm_from:] = 2
    row = {
        "run_id": run_id,
        "failed_at_end": True,
        "life_s": float(t[-1]),
        "degraded_from_s": 50.0,
        "first_alarm_s": float(t[alarm_from]),
        "lead_time_s": float(t[-1] - t[alarm_from]),
        "lead_fraction": float((t[-1] - t[alarm_from]) / t[-1]),
        "false_alarms": 0,
    }
    return RunTrace(run_id, t, health, states, degraded_from_s=50.0, failed_at_end=True), row


def test_report_is_one_self_contained_page_with_an_svg_per_plot() -> None:
    traces, rows = zip(*[_trace("run-a"), _trace("run-<b>")], strict=True)
    ft = {
        "classes": ["healthy", "outer"],
        "windows": 10,
        "accuracy": 0.8,
        "accuracy_degraded": 0.75,
        "confusion": [[5, 1], [1, 3]],
    }
    base = [{"name": "rms threshold", "auroc": 0.7, "parameters": 2, "train_s": 0.01, "step_latency_us": 1.0}]
    page = render_report(_metrics(list(rows), ft, base), list(traces))
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page
    assert "https://" not in page
    assert not re.search(r"(src|href)\s*=", page)  # nothing is loaded from anywhere
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) == 2 + 1 + 1  # two runs, ROC, confusion matrix
    for svg in svgs:
        ET.fromstring(svg)
    assert "run-&lt;b&gt;" in page
    assert "run-<b>" not in page
    assert "rms threshold" in page
    assert "not verified" in page


def test_score_plot_marks_thresholds_alarm_spans_and_raises() -> None:
    trace, _ = _trace("r", n=11, alarm_from=7)
    svg = score_plot(trace, {"warning": 0.4, "alarm": 0.6})
    root = ET.fromstring(svg)
    assert len(root.findall("polyline")) == 1
    assert len(root.findall("rect[@class='alarm-span']")) == 1
    assert len(root.findall("path[@class='alarm-mark']")) == 1  # one raise
    # threshold lines sit at the right heights: y(0.6) above y(0.4) on screen (smaller pixel value)
    dashed = [el for el in root.findall("line") if el.get("stroke-dasharray") == "6 3"]
    assert len(dashed) == 2
    ys = sorted(float(el.get("y1")) for el in dashed)
    assert ys[0] < ys[1]


def test_long_series_are_thinned_but_keep_spikes() -> None:
    x = np.arange(100_000, dtype=float)
    y = np.zeros(100_000)
    y[54_321] = 1.0
    xr, yr = _reduce(x, y, max_points=800)
    assert len(xr) <= 800
    assert yr.max() == 1.0
    assert 54_321 in xr
    assert np.all(np.diff(xr) > 0)


def _row(
    run_id: str, life_s: float, lead_s: float | None, false_alarms: int = 0, failed: bool = True
) -> dict:
    return {
        "run_id": run_id,
        "failed_at_end": failed,
        "life_s": life_s,
        "degraded_from_s": life_s * 0.7 if failed else None,
        "first_alarm_s": life_s - lead_s if lead_s is not None else None,
        "lead_time_s": lead_s,
        "lead_fraction": lead_s / life_s if lead_s is not None else None,
        "false_alarms": false_alarms,
    }


def test_every_time_is_in_one_unit_and_the_direction_is_said_once() -> None:
    rows = [_row("long", 3 * 3600.0, 3080.0), _row("short", 1800.0, 600.0)]
    m = _metrics(rows, baselines=[{"name": "rms", "lead_time_s_median": 3080.0}])
    m["alarms"]["lead_time_s"]["median"] = 3080.0
    page = render_report(m, [])
    assert "All times are in hours" in page
    assert "3.08e+03" not in page
    assert " s<" not in page
    assert "(min)" not in page
    assert " min<" not in page
    assert "0.86 h" in page  # 3,080 s in the summary
    assert ">0.86<" in page  # the lead-time table and the baseline table, in the column's unit
    assert "lead time (h)" in page
    assert "median lead (h)" in page
    assert page.count("higher = worse") == 1
    short = render_report(_metrics([_row("short", 1800.0, 600.0)]), [])
    assert "All times are in minutes" in short
    assert ">10.0<" in short
    assert "lead time (min)" in short


def test_warning_line_is_labelled_when_it_differs_and_drawn_once_when_equal() -> None:
    trace, _ = _trace("r")
    both = ET.fromstring(score_plot(trace, {"warning": 0.78, "alarm": 0.8}, ("min", 60.0)))
    labels = [t.text for t in both.findall("text[@class='threshold-label']")]
    assert labels == ["warning 0.78", "alarm 0.80"]
    same = ET.fromstring(score_plot(trace, {"warning": 0.8, "alarm": 0.8}))
    assert [t.text for t in same.findall("text[@class='threshold-label']")] == ["warning = alarm 0.80"]
    assert len([el for el in same.findall("line") if el.get("stroke-dasharray") == "6 3"]) == 1


def test_runs_that_need_attention_come_first() -> None:
    rows = [
        _row("fine", 1000.0, 400.0),
        _row("noisy", 1000.0, None, false_alarms=3, failed=False),
        _row("missed", 1000.0, None),
        _row("late", 1000.0, 20.0),
    ]
    traces = [_trace(r["run_id"])[0] for r in rows]
    page = render_report(_metrics(rows), traces)
    assert page.index("Runs that need attention") < page.index("<h2>Summary")
    table = page[page.index("Runs that need attention") : page.index("<h2>Summary")]
    assert [w for w in ("missed", "noisy", "late") if w in table] == ["missed", "noisy", "late"]
    assert table.index("missed") < table.index("noisy") < table.index("late")
    assert "fine" not in table
    captions = re.findall(r"<figcaption>(\w+)", page)
    assert captions == ["missed", "noisy", "late", "fine"]
