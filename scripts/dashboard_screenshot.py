"""Screenshots of the live view for the docs: a synthetic fleet of 20 machines on a private broker.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/img]

Starts its own Mosquitto, the dashboard (`serve`), plays 20 machines (dashboards.testing) through
their life in sensor time, lets one machine fall silent (stale), and saves with Debian's headless
Chromium: docs/img/dashboard-fleet.png (the fleet view) and docs/img/dashboard-detail.png (one sensor
in alarm opened: history with thresholds and state changes, spectrum of its latest window).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    import numpy as np
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from dashboards.app import serve
    from dashboards.fleet import FleetConfig
    from dashboards.testing import SyntheticFleet, publish_agents, publish_step
    from edge_agent.protocol import Window, encode_binary, vibration_topic

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="gw-shot-"))
    (tmp / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(tmp / "m.conf")])
    time.sleep(0.5)
    prefix = "plant-3"
    handle = serve(f"mqtt://127.0.0.1:{port}", prefix, port=0, config=FleetConfig(stale_after_s=5))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="shot-pub")
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    fleet = SyntheticFleet(machines=20, sensors=1, seed=3, horizon=900, degrading=0.4, period_s=10.0)
    publish_agents(pub, prefix, fleet)
    silent = "machine-013"
    for k in range(760):  # the fleet's past, in sensor time
        publish_step(pub, prefix, *fleet.next())
        if k % 50 == 0:
            time.sleep(0.05)
    stop = threading.Event()

    def live() -> None:  # then one window a second each, as live agents would; one machine falls silent
        while not stop.wait(1.0):
            healths, alerts = fleet.next()
            publish_step(pub, prefix, [h for h in healths if h.machine != silent], alerts)

    player = threading.Thread(target=live, daemon=True)
    player.start()
    time.sleep(7)

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--hide-scrollbars",
    ):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(handle.url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(driver.find_elements("css selector", ".tile")) < 20:
            time.sleep(0.2)
        time.sleep(1.5)
        driver.save_screenshot(str(args.out / "dashboard-fleet.png"))
        alarm = driver.execute_script(
            "var t = document.querySelector('.tile.s-alarm'); return t && t.dataset.key;"
        )
        if alarm:
            driver.find_element("css selector", f".tile[data-key='{alarm}']").click()
            machine, sensor = alarm.split("/")
            rng = np.random.default_rng(0)
            n, fs, rpm = 4096, 25600.0, 1797.0
            t = np.arange(n) / fs
            bpfo = 107.4  # outer-race defect: impacts at BPFO ringing a resonance near 3 kHz
            x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * rpm / 60 * t)
            x += 0.4 * np.sin(2 * np.pi * 3100 * t) * (np.sin(np.pi * bpfo * t) ** 20)
            for _ in range(6):
                time.sleep(0.5)
                pub.publish(
                    vibration_topic(prefix, machine, sensor),
                    encode_binary(Window(1, time.time_ns(), fs, rpm, x.astype(np.float32))),
                )
            time.sleep(2.0)
            driver.execute_script("document.getElementById('detail').scrollIntoView();")
            time.sleep(0.5)
            driver.save_screenshot(str(args.out / "dashboard-detail.png"))
    finally:
        stop.set()
        player.join()
        driver.quit()
        pub.loop_stop()
        handle.stop()
        broker.terminate()
    for p in sorted(args.out.glob("dashboard-*.png")):
        print(f"{p}  {p.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
