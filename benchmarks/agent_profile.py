"""Profiling helpers of benchmarks/bench_agent.py: the agent run under cProfile (every thread) and the
table of where its time goes, by stage. Not a benchmark of its own (no `bench_` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROFILED_RUN = r"""
import cProfile, sys, threading
from edge_agent.agent_cli import main
out, config = sys.argv[1], sys.argv[2]
profiles = []
def _per_thread(*args):
    sys.setprofile(None)
    p = cProfile.Profile()
    profiles.append((threading.current_thread().name, p))
    p.enable()
threading.setprofile(_per_thread)
main_profile = cProfile.Profile()
main_profile.enable()
try:
    rc = main(["run", "--config", config, "--log-level", "warning"])
finally:
    main_profile.disable()
    threading.setprofile(None)
    main_profile.dump_stats(f"{out}/main.prof")
    for i, (name, p) in enumerate(profiles):
        p.dump_stats(f"{out}/thread-{i}-{name.replace('/', '_')}.prof")
raise SystemExit(rc)
"""


#: Stages of the agent's work: (label, how to find it in the profile: file suffix, function name).
STAGES: list[tuple[str, str, str]] = [
    ("scoring loop, total (main thread)", "edge_agent/daemon.py", "_loop"),
    ("  waiting for windows (get_batch)", "edge_agent/mqtt_link.py", "get_batch"),
    ("  one batch (process)", "edge_agent/daemon.py", "process"),
    ("    sequence checks", "edge_agent/sequencing.py", "check"),
    ("    features (usable_features)", "edge_agent/scorer.py", "usable_features"),
    ("    model step + alarms (score_features)", "edge_agent/scorer.py", "score_features"),
    ("      onnxruntime run", "onnxruntime/capi/onnxruntime_inference_collection.py", "run"),
    ("    results, messages, store (_record_and_publish)", "edge_agent/daemon.py", "_record_and_publish"),
    ("      rows and messages (scored_chunk.compose)", "edge_agent/scored_chunk.py", "compose"),
    ("      health JSON (HealthEncoder.encode)", "edge_agent/messages.py", "encode"),
    ("      store commit (record_batch)", "edge_agent/store.py", "record_batch"),
    ("      states for the commit", "edge_agent/saved_states.py", "batch_states"),
    ("      hand to paho (OutboxPump.publish_new)", "edge_agent/outbox.py", "publish_new"),
    ("    acks (MqttLink.ack_many)", "edge_agent/mqtt_link.py", "ack_many"),
    ("  outbox bookkeeping (OutboxPump.collect)", "edge_agent/outbox.py", "collect"),
    ("network thread, total (paho loop_forever)", "paho/mqtt/client.py", "loop_forever"),
    ("  window decode + enqueue (_on_message)", "edge_agent/mqtt_link.py", "_on_message"),
    ("  decode_vibration", "edge_agent/protocol.py", "decode_vibration"),
    ("  publish acks (_on_publish)", "edge_agent/mqtt_link.py", "_on_publish"),
]


def print_profile(profile_dir: Path) -> None:
    """Where the profiled agent's time went: by stage, then the top functions by own time."""
    import pstats

    files = sorted(profile_dir.glob("*.prof"))
    if not files:
        print("no profile written (did the agent stop cleanly?)")
        return
    stats = pstats.Stats(*[str(f) for f in files])
    table: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    loop_total = next(
        (v[3] for k, v in table.items() if k[0].endswith("edge_agent/daemon.py") and k[2] == "_loop"), 0.0
    )
    print(
        f"\nprofile of the throughput agent ({len(files)} threads; cumulative seconds, share of the scoring loop)"
    )
    for label, suffix, func in STAGES:
        cum = sum(v[3] for k, v in table.items() if k[0].endswith(suffix) and k[2] == func)
        calls = sum(v[1] for k, v in table.items() if k[0].endswith(suffix) and k[2] == func)
        share = f"{cum / loop_total:6.1%}" if loop_total else ""
        print(f"  {label:<52} {cum:8.2f} s  {share:>7}  {calls:>9,} calls")
    print("\ntop 15 functions by own time (all threads)")
    top = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in top:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"  {tottime:8.2f} s own  {cumtime:8.2f} s cum  {ncalls:>9,}  {func}  ({where})")
