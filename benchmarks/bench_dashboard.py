"""Benchmark: the live fleet view holding 1,000 sensors at one health message a second each.

    .venv/bin/python benchmarks/bench_dashboard.py                 # 1,000 sensors, 60 s
    .venv/bin/python benchmarks/bench_dashboard.py --sensors 200 --seconds 20

A private Mosquitto; a publisher process plays `--sensors` sensors (dashboards.testing.SyntheticFleet,
the real wire format) at one window a second each; the dashboard runs in its own process (`python -m
dashboards`) and this one drives Debian's headless Chromium on its page. Printed as one table:

- delivery: health messages the dashboard's model counted per second vs what was published;
- freshness: a probe sensor flips between ok and alarm every 5 s; time from its publish to the tile
  showing the new state in the browser (p50 / max; seen through chromedriver every 0.1 s, so it
  includes that round trip), and to the page writing it (its own clock) — the page "falls behind"
  if these grow;
- browser: time to draw the tiles once (fleet.js, p50 / max), and the JS heap;
- server: one full `snapshot()` of the model (p50 / max), one poll of `gruwatch/fleet` as the browser
  timed it, the dashboard process's CPU (share of one core while the fleet publishes: what 1,000
  messages a second cost it, whatever else the machine runs) and its resident memory before, with
  the fleet loaded, and at the end.

The machine is shared (2 cores): expect ±30 % between runs; compare rows of one run. The load average
(`uptime`) at the start and the end is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish(url: str, prefix: str, sensors: int, seconds: float) -> None:
    """The publisher process: `sensors` health messages a second, paced, plus the agents' status."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from dashboards.testing import SyntheticFleet, publish_agents, publish_step

    host, _, port = url.removeprefix("mqtt://").partition(":")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    c.max_queued_messages_set(0)
    c.connect(host, int(port))
    c.loop_start()
    fleet = SyntheticFleet(machines=sensors, sensors=1, horizon=int(seconds * 2), seed=1)
    publish_agents(c, prefix, fleet)
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        healths, alerts = fleet.next()
        publish_step(c, prefix, healths, alerts)
        k += 1
        delay = start + k - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"steps": k, "published": k * sensors}), flush=True)
    c.loop_stop()
    c.disconnect()


def _snapshot_ms(sensors: int) -> list[float]:
    """One FleetModel snapshot with `sensors` sensors of 100 windows each, in this process (ms)."""
    from dashboards.fleet import FleetModel
    from dashboards.testing import SyntheticFleet

    model, fleet = FleetModel(), SyntheticFleet(machines=sensors)
    for _ in range(100):
        for h in fleet.next()[0]:
            model.on_health(h)
    out = []
    for _ in range(20):
        t0 = time.perf_counter()
        model.snapshot()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _pct(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.median(xs):.0f} / {max(xs):.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensors", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--publish-only", nargs=2, metavar=("URL", "PREFIX"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish_only:
        publish(args.publish_only[0], args.publish_only[1], args.sensors, args.seconds)
        return 0

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from edge_agent.protocol import Health, encode_health, health_topic

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dash-"))
    (tmp / "m.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
    )
    broker = subprocess.Popen([binary, "-c", str(tmp / "m.conf")], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    url, prefix = f"mqtt://127.0.0.1:{port}", f"bench-{uuid.uuid4().hex[:6]}"
    web_port = _free_port()
    dash = subprocess.Popen(
        [sys.executable, "-m", "dashboards", "--broker", url, "--prefix", prefix, "--port", str(web_port)],
        stdout=subprocess.DEVNULL,
    )  # its own process, as `gruwatch dashboard` runs: this one only drives the browser
    page = f"http://127.0.0.1:{web_port}/"
    time.sleep(3)
    rss0 = _rss_mb(dash.pid)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    load0 = _load()
    cpu0, wall0 = _cpu_s(dash.pid), time.monotonic()
    driver.execute_cdp_cmd("Performance.enable", {})
    pub = subprocess.Popen(
        [sys.executable, __file__, "--sensors", str(args.sensors), "--seconds", str(args.seconds),
         "--publish-only", url, prefix],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
    probe.connect("127.0.0.1", port)
    probe.loop_start()
    driver.get(page)
    fresh, written, renders, frames, snaps, requests, rates = [], [], [], [], [], [], []
    rss_loaded = None
    start = time.monotonic()
    seq = 0
    state_js = "var t=document.querySelector(\".tile[data-key='probe/s0']\"); return t && t.dataset.state;"
    while time.monotonic() - start < args.seconds - 2:
        seq += 1
        state = "alarm" if seq % 2 else "ok"
        h = Health("probe", "s0", seq, time.time_ns(), 0.9 if seq % 2 else 0.1, state, "v", {})
        sent_wall = time.time()
        probe.publish(health_topic(prefix, "probe", "s0"), encode_health(h), qos=1)
        sent = time.monotonic()
        while time.monotonic() - sent < 10 and driver.execute_script(state_js) != state:
            time.sleep(0.1)
        fresh.append((time.monotonic() - sent) * 1000)
        at = driver.execute_script("return (window.gwStateAt || {})['probe/s0'] || null;")
        if at is not None and at / 1000 >= sent_wall:
            written.append(at - sent_wall * 1000)  # the page's own clock: no chromedriver round trip
        r = driver.execute_script("return window.gwRender || null;")
        if r and r["tiles"] > args.sensors * 0.9:
            renders.append(r["ms"])
            if r.get("frame_ms") is not None:
                frames.append(r["frame_ms"])
        rate = driver.execute_script(
            "var r = document.getElementById('rates'); var m = r && r.textContent.match(/health messages ([0-9.]+)/);"
            "return m ? parseFloat(m[1]) : null;"
        )
        if rate is not None:
            rates.append(rate)
        tiles = driver.execute_script("return document.querySelectorAll('.tile').length;")
        if rss_loaded is None and tiles >= args.sensors:
            rss_loaded = _rss_mb(dash.pid)
        requests += driver.execute_script(
            "var e = performance.getEntriesByType('resource').filter(x => x.name.indexOf('gruwatch/fleet') >= 0);"
            "performance.clearResourceTimings(); return e.map(x => x.duration);"
        )
        time.sleep(max(0.0, 5 - (time.monotonic() - sent)))
    heap = driver.execute_script("return performance.memory ? performance.memory.usedJSHeapSize : null;")
    out, _ = pub.communicate(timeout=args.seconds + 30)
    published = json.loads(out.strip().splitlines()[-1])
    cpu_share = (_cpu_s(dash.pid) - cpu0) / (time.monotonic() - wall0)
    busy = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
    page_s = time.monotonic() - wall0
    main_thread = " / ".join(
        f"{100 * busy.get(k, 0.0) / page_s:.0f}"
        for k in ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")
    )
    tiles = driver.execute_script("return document.querySelectorAll('.tile').length;")
    rss_end = _rss_mb(dash.pid)
    load1 = _load()
    driver.quit()
    probe.loop_stop()
    dash.terminate()
    dash.wait(10)
    snaps = _snapshot_ms(args.sensors)
    broker.terminate()
    steady = rates[len(rates) // 3 :] or rates
    print(f"\ndashboard under load: {args.sensors} sensors × 1 msg/s for {args.seconds:.0f} s "
          f"({published['published']} health messages published; {tiles} tiles); "
          f"load average {load0} at the start, {load1} at the end\n")  # fmt: skip
    rows = [
        ("health messages counted / s (page's rate, median)", f"{statistics.median(steady):.0f}" if steady else "–", f"published {args.sensors}/s"),
        ("probe publish → tile shows it, ms (p50 / max)", _pct(fresh), f"{len(fresh)} flips; goal < 2000"),
        ("probe publish → page writes the tile, ms (p50 / max)", _pct(written), "timed by the page (fleet.js)"),
        ("browser: draw the tiles, ms (p50 / max)", _pct(renders), f"{len(renders)} samples (fleet.js)"),
        ("browser: draw to the next frame painted, ms", _pct(frames), "style, layout and paint included"),
        ("browser: one poll of gruwatch/fleet, ms (p50 / max)", _pct(requests), f"{len(requests)} polls"),
        ("dashboard CPU, % of one core", f"{100 * cpu_share:.0f}", "while the fleet publishes"),
        ("page main thread busy, % of wall", main_thread, "all tasks / script / style / layout"),
        ("server: model snapshot, ms (p50 / max)", _pct(snaps), "20 snapshots, in this process"),
        ("dashboard RSS MB: started / fleet loaded / end", f"{rss0:.0f} / {rss_loaded or float('nan'):.0f} / {rss_end:.0f}", "the `python -m dashboards` process"),
        ("browser JS heap MB", f"{(heap or 0) / 2**20:.0f}", ""),
    ]  # fmt: skip
    w = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name.ljust(w)}  {value:>14}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
