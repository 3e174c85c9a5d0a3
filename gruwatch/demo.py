"""`gruwatch demo`: a short simulated fleet published to a local broker, counted live by a subscriber.

Without `--broker` the demo starts its own (embedded) Mosquitto on a free port and stops it at the end;
with `--broker` it uses the one given (`make demo` passes the local one on 1883, which it starts first).
Later issues grow this into the whole loop (train → agent → dashboard); today it proves the wire: every
window the simulator publishes arrives and decodes.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _embedded_broker() -> Iterator[str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit(
            "gruwatch demo: no mosquitto binary for the embedded broker; install it "
            "(apt-get install -y mosquitto) or pass --broker mqtt://HOST:PORT"
        )
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="gruwatch-demo-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
        )
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
                time.sleep(0.05)
            else:
                raise SystemExit(f"gruwatch demo: embedded mosquitto did not start on port {port}")
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=5)


class _Counter:
    """Counts and decodes every vibration message under a prefix (paho's network thread calls on_message)."""

    def __init__(self) -> None:
        self.received = 0
        self.rejected = 0
        self.lock = threading.Lock()

    def on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        from edge_agent.errors import ProtocolError
        from edge_agent.protocol import decode_vibration

        try:
            decode_vibration(message.payload)
            ok = True
        except ProtocolError:
            ok = False
        with self.lock:
            if ok:
                self.received += 1
            else:
                self.rejected += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gruwatch demo",
        description=(
            "Publish a short simulated fleet to a local MQTT broker and count the windows live as a "
            "subscriber receives and decodes them. Starts an embedded Mosquitto unless --broker is given."
        ),
    )
    parser.add_argument("--broker", default=None, metavar="URL", help="use this broker (mqtt://host:port)")
    parser.add_argument(
        "--machines", type=int, default=8, help="machines in the fleet (default: %(default)s)"
    )
    parser.add_argument("--windows", type=int, default=60, help="windows per sensor (default: %(default)s)")
    parser.add_argument("--speedup", default="60", help="simulated seconds per wall second, or 'max'")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(list(argv) if argv is not None else None)

    with contextlib.ExitStack() as stack:
        url = args.broker or stack.enter_context(_embedded_broker())
        return _run(url, args)


def _run(url: str, args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from simulator.cli import main as simulate

    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    from edge_agent.broker_url import parse_broker_url

    address = parse_broker_url(url)
    counter = _Counter()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-counter")
    sub.on_message = counter.on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect(address.host, address.port)
    sub.subscribe(f"{prefix}/+/+/vibration", qos=1)
    sub.loop_start()
    if not subscribed.wait(10):
        raise SystemExit(f"gruwatch demo: could not subscribe on {url}")
    expected = args.machines * args.windows
    print(f"gruwatch demo: {args.machines} machines × {args.windows} windows → {url} (prefix {prefix})")
    publisher_rc: list[int] = []
    fleet_argv = [
        "fleet",
        "--broker", url,
        "--machines", str(args.machines),
        "--windows", str(args.windows),
        "--speedup", str(args.speedup),
        "--seed", str(args.seed),
        "--prefix", prefix,
    ]  # fmt: skip
    thread = threading.Thread(target=lambda: publisher_rc.append(simulate(fleet_argv)), daemon=True)
    thread.start()
    last, last_print = -1, 0.0
    tty = sys.stdout.isatty()  # a live line on a terminal; one line a second in a log
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with counter.lock:
            got, bad = counter.received, counter.rejected
        now = time.monotonic()
        if got != last and (tty or now - last_print >= 1.0 or got + bad >= expected):
            line = f"  received {got:6d} / {expected} windows, {bad} rejected"
            print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
            last, last_print = got, now
        if got + bad >= expected and not thread.is_alive():
            break
        if not thread.is_alive() and publisher_rc and publisher_rc[0] != 0:
            break
        time.sleep(0.1)
    thread.join(timeout=5)
    time.sleep(0.5)
    sub.loop_stop()
    sub.disconnect()
    if tty:
        print()
    ok = counter.received == expected and publisher_rc == [0]
    print(
        f"gruwatch demo: {'OK' if ok else 'INCOMPLETE'}: {counter.received} of {expected} windows arrived and decoded"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
