"""Helpers for the agent's end-to-end tests: hand-made model bundles, MQTT peers, the agent as a child process.

Fixtures built on them live in tests/edge_agent/conftest.py; test modules import helpers from here,
never from each other (CONVENTIONS 17).
"""

from __future__ import annotations

import io
import json
import os
import pwd
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.bundle import sign_bundle, write_bundle
from edge_agent.daemon import Agent
from edge_agent.features import DEFAULT_SPEC
from edge_agent.protocol import decode_alert, decode_health
from edge_agent.settings import AgentSettings, load_settings
from tests.conftest import Broker
from tests.edge_agent.gru_fixtures import GruParams, build_step_model, make_card, make_test_vectors

REPO = Path(__file__).resolve().parents[2]
THRESHOLDS = {"warning": 0.5, "alarm": 0.8, "raise_windows": 2, "clear_windows": 3}

# ----------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Models:
    key: Path
    pub: Path
    v1: Path


def rms_params(hidden: int = 2, *, gain: float = 4.0) -> GruParams:
    """A GRU whose health rises with log_rms: h' = ½·tanh((log_rms + 0.1) / 0.1) + ½·h, score = σ(gain·h0)."""
    F = DEFAULT_SPEC.n_features
    H = hidden
    i_rms = DEFAULT_SPEC.names.index("log_rms")
    mean = np.zeros(F, np.float32)
    std = np.ones(F, np.float32)
    mean[i_rms], std[i_rms] = -0.1, 0.1
    w_ih = np.zeros((3 * H, F), np.float32)
    w_ih[2 * H :, i_rms] = 1.0  # candidate n = tanh(scaled log_rms)
    w_hh = np.zeros((3 * H, H), np.float32)
    b_ih = np.zeros(3 * H, np.float32)  # z = σ(0) = ½
    b_hh = np.zeros(3 * H, np.float32)
    w_out = np.zeros((2, H), np.float32)
    w_out[0, 0] = gain
    w_out[1, 0] = -gain  # a second output, named p_healthy: 1 - health
    return GruParams(mean, std, [w_ih], [w_hh], [b_ih], [b_hh], w_out, np.zeros(2, np.float32))


def make_bundle(
    out: Path,
    key: Path | None,
    *,
    version: str,
    hidden: int = 2,
    gain: float = 4.0,
    thresholds: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    **card: Any,
) -> Path:
    """A bundle of the rms GRU signed with `key` (None: unsigned); `card` overrides card fields,
    `spec` the feature spec (default DEFAULT_SPEC; the model reads F features either way)."""
    p = rms_params(hidden, gain=gain)
    doc = make_card(
        p,
        spec or DEFAULT_SPEC.to_dict(),
        model_version=version,
        thresholds=thresholds or THRESHOLDS,
        outputs=["health", "p_healthy"],
    )
    doc.update(card)
    write_bundle(out, onnx_bytes=build_step_model(p), card=doc, test_vectors=make_test_vectors(p))
    if key is not None:
        sign_bundle(out, key)
    return out


def sign_anyway(bundle: Path, key: Path) -> Path:
    """Sign every file of `bundle` with `key` as it is: unlike `sign_bundle`, without checking its
    contents first (a signer's mistake or a stolen key: the agent must still refuse a bad model)."""
    from edge_agent.signing import load_private_key, sha256_file, sign_digests

    digests = {p.name: sha256_file(p) for p in sorted(bundle.iterdir()) if p.name != "signature.json"}
    doc = sign_digests(digests, load_private_key(key))
    (bundle / "signature.json").write_text(json.dumps(doc))
    return bundle


# ------------------------------------------------------------------------------- hostile archives


def tar_with(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A tar of exactly these members (any names, types and links), as an attacker would pack it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def member(
    name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, data


# ------------------------------------------------------------------------------------ MQTT peers


def mqtt_client(broker: Broker) -> paho.Client:
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:10]}")
    c.max_inflight_messages_set(200)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def close_client(c: paho.Client) -> None:
    c.disconnect()
    c.loop_stop()


def publish(client: paho.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(10)


class Subscriber:
    """Collects health and alert messages under a prefix."""

    def __init__(self, broker: Broker, prefix: str) -> None:
        self.lock = threading.Lock()
        self.health: list[Any] = []
        self.alerts: list[Any] = []
        self.results: list[dict[str, Any]] = []
        self.order: list[str] = []  # "health" / "alert" / "result", in arrival order
        self.ready = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:10]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(
            [(f"{prefix}/+/+/health", 1), (f"{prefix}/+/+/alert", 1), (f"{prefix}/_agents/+/model/result", 1)]
        )
        self.client.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.order.append(msg.topic.rsplit("/", 1)[-1])
            if msg.topic.endswith("/health"):
                self.health.append(decode_health(msg.payload))
            elif msg.topic.endswith("/alert"):
                self.alerts.append((decode_alert(msg.payload), msg.retain))
            elif msg.topic.endswith("/model/result"):
                self.results.append(json.loads(msg.payload))

    def wait(self, pred: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class StatusWatcher:
    """The retained status messages of one agent ({"state": "online" | "offline", ...}), in order."""

    def __init__(self, broker: Broker, prefix: str, agent_id: str) -> None:
        self.status: list[dict[str, Any]] = []
        self.client = mqtt_client(broker)
        self.client.on_message = lambda c, u, m: self.status.append(json.loads(m.payload))
        self.client.subscribe(f"{prefix}/_agents/{agent_id}/status", qos=1)

    def online(self) -> bool:
        return any(s.get("state") == "online" for s in self.status)

    def close(self) -> None:
        close_client(self.client)


# ------------------------------------------------------------------------ the agent in this process


def agent_settings(broker: Broker, prefix: str, models: Models, store: Path, **over: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "broker": broker.url,
        "prefix": prefix,
        "agent_id": f"agent-{prefix[-12:]}",
        "model": models.v1,
        "trusted_keys": [models.pub],
        "store": store,
        "metrics_port": 0,
        "batch_max_wait_ms": 20,
        "raw_sample_fraction": 0.25,
    }
    values.update(over)
    return load_settings(None, **values)


@contextmanager
def running(settings: AgentSettings, *, poll_s: float | None = None) -> Iterator[Agent]:
    agent = Agent.from_settings(settings)
    if poll_s is not None:
        agent.swapper.poll_s = poll_s  # how often the served model folder is checked for changes
    thread = threading.Thread(target=agent.run, name="agent-under-test")
    thread.start()
    try:
        # Started, not only connected: the served folder's watch takes its first look after the connect.
        assert agent.wait_started(30), "the agent did not start"
        assert agent.link.wait_connected(10), "the agent did not connect to the test broker"
        yield agent
    finally:
        t0 = time.monotonic()
        agent.stop()
        thread.join(10)
        assert not thread.is_alive(), "the agent did not stop"
        assert time.monotonic() - t0 < 5.0, "stopping took longer than 5 s"


# --------------------------------------------------------------------------- the agent as a process

#: The child's program: `gruwatch agent run --config FILE` exactly as on a gateway.
RUN_CHILD = (
    "import sys; from edge_agent.agent_cli import main; sys.exit(main(['run', '--config', sys.argv[1]]))"
)


@dataclass
class AgentProcess:
    """An agent configured in `config` (TOML), started as a child process by `start()`."""

    config: Path
    store: Path
    agent_id: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, child: str = RUN_CHILD, *, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """A new agent process (stderr piped; GRUWATCH_* variables of this process left out)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRUWATCH_")}
        proc = subprocess.Popen(
            [sys.executable, "-c", child, str(self.config)],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop_cleanly(proc: subprocess.Popen[str], *, timeout: float = 10.0) -> str:
        """SIGTERM once the last health messages had time to leave; the agent must exit 0 within
        `timeout`. Returns its stderr (the log)."""
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-2000:]
        return err

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def write_agent_config(
    path: Path, *, broker: Broker, prefix: str, agent_id: str, models: Models, store: Path, **extra: Any
) -> None:
    """A TOML settings file for a test agent (metrics off); `extra` adds or overrides keys."""
    values: dict[str, Any] = {
        "broker": broker.url,
        "prefix": prefix,
        "agent_id": agent_id,
        "model": str(models.v1),
        "trusted_keys": [str(models.pub)],
        "store": str(store),
        "metrics_port": 0,
    }
    values.update(extra)
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))


# --------------------------------------------------------------------------- a broker of our own


SHIPPED_BROKER_CONF = REPO / "deploy" / "mosquitto" / "gruwatch.conf"


class PrivateBroker:
    """A Mosquitto of the test's own, from the shipped config (`deploy/mosquitto/gruwatch.conf`) with
    the listener, credentials and data folder made local; it can be restarted, killed and paused.

    It runs as the test's own user (`user`): started as root, Mosquitto would otherwise switch to the
    `mosquitto` user, which cannot write a data folder under pytest's 0700 tmp folders, and every
    restart would silently start without sessions. Its log goes to `log` (errors and warnings), and a
    graceful stop with persistence on checks that the database was written."""

    def __init__(self, root: Path, *, persistence: bool = True) -> None:
        import shutil
        import socket

        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("no mosquitto binary; run ./scripts/ensure-broker.sh")
        self.binary = binary
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        data = root / "mosquitto-data"
        data.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.db = data / "mosquitto.db"
        self.log = root / "mosquitto.log"
        lines = []
        for line in SHIPPED_BROKER_CONF.read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key == "listener":
                line = f"listener {self.port} 127.0.0.1"
            elif key == "allow_anonymous":
                line = "allow_anonymous true"
            elif key == "password_file":
                continue
            elif key == "persistence_location":
                line = f"persistence_location {data}/"
            elif key == "persistence" and not persistence:
                line = "persistence false"
            lines.append(line)
        self.conf = root / "mosquitto.conf"
        user = pwd.getpwuid(os.geteuid()).pw_name
        extra = f"user {user}\nlog_dest file {self.log}\nlog_type error\nlog_type warning\n"
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def broker(self) -> Broker:
        return Broker("127.0.0.1", self.port)

    def start(self) -> None:
        import socket

        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start on {self.port}")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(10)
        self.proc = None
        if self.persistence and not kill and not self.db.exists():
            log = self.log.read_text()[-2000:] if self.log.exists() else "(no log)"
            raise RuntimeError(f"mosquitto stopped without writing {self.db}; its log: {log}")

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()
