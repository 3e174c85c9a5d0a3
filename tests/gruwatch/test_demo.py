"""`gruwatch demo`: the whole loop, embedded broker (amqtt) and a real Mosquitto, counts checked.

The demo's fleet is the simulator's, so the truth is known: which bearings fail and when. A short run
must publish and score the same windows, report every failing bearing, and write the JSON summary.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import pytest

from gruwatch import demo
from gruwatch.demo_model import FLEET
from gruwatch.demo_watch import SUMMARY_KEYS
from simulator.fleet_model import build_fleet
from tests.conftest import Broker

MACHINES, SEED = 6, 5  # 6 machines, 2 of which fail within the fleet's 3 simulated hours
# The fleet's 3 simulated hours paced into ~12 s of wall time; --duration is only the ceiling, far
# above it, so a loaded machine (the fleet publisher falling behind its pace) still completes the run.
PACE = ["--speedup", str(round(FLEET["horizon_s"] / 12)), "--duration", "180"]


def _failing() -> int:
    fleet = build_fleet(MACHINES, SEED, healthy_fraction=demo.HEALTHY_FRACTION, **FLEET)
    return sum(r.failure_s is not None for r in fleet)


def _check(summary: dict[str, object], out: str) -> None:
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["stopped_by"] == "complete", out
    published, scored = summary["windows_published"], summary["windows_scored"]
    assert isinstance(published, int)
    assert published > 1000
    assert published == scored, out
    assert summary["agent_windows_scored"] == scored
    assert summary["failing"] == _failing() >= 1
    alarmed = summary["alarmed_before_failure"]
    assert isinstance(alarmed, int)
    assert 0 <= alarmed <= summary["failing"]
    lead = summary["median_lead_fraction"]
    assert (lead is None) == (alarmed == 0)
    assert lead is None or 0 < float(lead) < 1  # type: ignore[arg-type]
    line = (
        f"failing bearings {summary['failing']} · alarmed before failure {alarmed} · median lead "
        f"{'n/a' if lead is None else format(lead, '.0%')} of life · false alarms "
        f"{summary['false_alarms']} · windows published {published} · scored {scored}"
    )
    assert line in out


@pytest.mark.slow
def test_demo_with_the_embedded_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "summary.json"
    argv = [*PACE, "--machines", str(MACHINES), "--seed", str(SEED), "--json", str(out_json)]
    rc = demo.main(argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "(embedded amqtt, MQTT 3.1.1)" in out
    _check(json.loads(out_json.read_text()), out)


@pytest.mark.mqtt
@pytest.mark.slow
def test_demo_with_a_given_broker(broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "summary.json"
    argv = ["--broker", broker.url, *PACE, "--machines", str(MACHINES), "--seed", str(SEED)]
    rc = demo.main([*argv, "--json", str(out_json), "--workdir", str(tmp_path / "work")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "embedded" not in out
    _check(json.loads(out_json.read_text()), out)
    assert (tmp_path / "work" / "agent.sqlite").is_file(), "--workdir keeps the agent's store for export"


def test_an_interrupt_stops_cleanly_and_still_summarizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first Ctrl-C (here: the stop event it sets) ends the live fleet; the summary still comes."""
    args = demo.build_parser().parse_args(["--duration", "60", "--machines", "3", "--seed", str(SEED)])
    irq = demo._Interrupts()
    run = demo.Demo(args, irq)
    timer = threading.Timer(4.0, irq.stop.set)
    timer.start()
    try:
        with contextlib.ExitStack() as stack:
            run.run(stack)
    finally:
        timer.cancel()
    summary = run.summary()
    assert summary.extra["stopped_by"] == "interrupted"
    assert summary.windows_published > 0
    assert summary.windows_published == summary.windows_scored
    assert summary.extra["wall_s"] < 30
    out = capsys.readouterr().out
    assert "Ctrl-C stops" in out
    # The dashboard ran beside it: a tile per sensor scored, the agent online with the model it serves,
    # and that model's warning/alarm lines learnt from the agent's status (the demo passes none).
    assert run.dashboard is not None
    assert f"dashboard: {run.dashboard.url}" in out
    snap = run.dashboard.model.snapshot()
    assert len(snap["tiles"]) == 3
    agent = run.agent
    (seen,) = snap["agents"]
    assert (seen["agent"], seen["model"]) == (agent.settings.agent_id, agent.model_version)
    assert seen["health_per_s"] is not None  # its health messages name it: counted per agent
    t = agent.scorer.thresholds
    assert run.dashboard.model.thresholds_for(agent.model_version) == (t.warning, t.alarm)


def test_the_shipped_bundle_was_trained_on_what_the_demo_and_the_simulator_publish() -> None:
    """The card's `trained_on` (issue 14, point 8) admits every window of the demo's live fleet and
    the simulator's defaults, and refuses a CWRU-like 12 kHz window; `make demo-bundle` rebuilds it."""
    from edge_agent.bundle import load_bundle
    from gruwatch.demo_model import SHIPPED
    from simulator.cli import build_parser

    trained = load_bundle(SHIPPED, allow_unsigned=True).trained_on
    assert trained is not None
    defaults = build_parser().parse_args(["fleet"])
    assert trained.mismatch(defaults.window, defaults.fs, 0.0) is None
    live = build_fleet(
        demo.DEFAULT_MACHINES, demo.DEFAULT_SEED, healthy_fraction=demo.HEALTHY_FRACTION, **FLEET
    )
    for r in live:
        for k in (0, r.n_windows - 1):
            assert trained.mismatch(r.window_length, r.fs, r.rpm_at(k)) is None, (r.machine, k)
    assert "sample rate" in str(trained.mismatch(2048, 12000.0, 1797.0))
