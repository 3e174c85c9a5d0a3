"""The edge agent's settings: one typed model read from an optional TOML file and `GRUWATCH_*` env vars.

Precedence, highest first: keyword arguments given in code, environment variables (`GRUWATCH_<FIELD>`,
upper case), the TOML file, then the defaults below. Every field is a flat top-level key in the TOML
file with the same name as the field (`examples/agent.toml` documents each one).

Seven settings alone run an agent::

    GRUWATCH_BROKER=mqtts://broker.example:8883  GRUWATCH_AGENT_ID=gw01  GRUWATCH_MODEL=/opt/model
    GRUWATCH_TRUSTED_KEYS=/etc/gruwatch/release.pub  GRUWATCH_STORE=/var/lib/gruwatch/agent.db
    GRUWATCH_PREFIX=gruwatch  GRUWATCH_METRICS_PORT=9108

The MQTT password is a secret: it comes from the file or `GRUWATCH_MQTT_PASSWORD`, never from a
command line or the broker URL, and it never appears in `repr()` or logs.

A plain pydantic model with its two sources read here (`_source_values`), not pydantic-settings:
importing pydantic-settings took about 0.5 s of each agent start on a loaded 2-core gateway.
"""

from __future__ import annotations

import contextvars
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.broker_url import BrokerAddress, parse_broker_url
from edge_agent.errors import ProtocolError, SettingsError
from edge_agent.protocol import validate_id

ENV_PREFIX = "GRUWATCH_"

# The TOML file of the current `load_settings` call; read by `AgentSettings.__init__`.
_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_TOML_FILE", default=None)


class AgentSettings(BaseModel):
    """Everything the agent daemon needs to run; built once by the CLI and passed down explicitly.

    `AgentSettings(**values)`: `values` over the `GRUWATCH_*` environment variables over the TOML file
    of the `load_settings` call (if any) over the defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**_source_values(values))

    # --- what to connect to and who we are -------------------------------------------------------
    broker: str = Field(description="Broker URL, mqtt://host[:1883] or mqtts://host[:8883] (TLS).")
    prefix: str = Field(default="gruwatch", description="Topic prefix shared by sensors, agents, dashboards.")
    agent_id: str = Field(description="This agent's id, [A-Za-z0-9_-]{1,64}; names its status topic.")
    model: Path = Field(description="Model bundle folder to serve at start.")
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys whose bundle signatures are accepted (comma-separated in env).",
    )
    allow_unsigned: bool = Field(default=False, description="Accept unsigned bundles (development only).")
    store: Path = Field(description="SQLite store path (WAL mode; -wal and -shm files appear beside it).")
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="Prometheus port; 0 disables.")
    metrics_addr: str = Field(
        default="127.0.0.1", description="Address the metrics listen on (0.0.0.0: every interface, no auth)."
    )

    # --- MQTT ------------------------------------------------------------------------------------
    mqtt_username: str | None = Field(default=None, description="Broker user name.")
    mqtt_password: SecretStr | None = Field(default=None, description="Broker password (file or env only).")
    mqtt_ca_file: Path | None = Field(default=None, description="CA bundle for mqtts; system CAs if unset.")
    mqtt_cert_file: Path | None = Field(default=None, description="Client certificate (PEM) for mqtts.")
    mqtt_key_file: Path | None = Field(default=None, description="Client private key (PEM) for mqtts.")
    mqtt_protocol: Literal["3.1.1", "5"] = Field(default="5", description="MQTT protocol version.")
    mqtt_session_expiry_s: int = Field(
        default=86_400,
        ge=1,
        le=0xFFFFFFFF,
        description="MQTT 5: how long the broker keeps our session (and unacked windows) while away.",
    )
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=65_535, description="MQTT keepalive.")
    mqtt_client_id: str | None = Field(
        default=None, description="Stable MQTT client id; default gruwatch-agent-{agent_id}."
    )
    mqtt_qos: Literal[0, 1] = Field(default=1, description="QoS of the vibration subscription.")
    health_qos: Literal[0, 1] = Field(
        default=1,
        description=(
            "QoS of health messages. 1: at least once, one PUBACK round trip each. 0: at most once, "
            "no PUBACK (a health message in flight when the connection breaks is lost; the next "
            "window's replaces it). Alerts are always QoS 1 and retained."
        ),
    )
    health_batch: bool = Field(
        default=False,
        description=(
            "One health message per scored batch on {prefix}/_agents/{agent_id}/health (a JSON "
            "array of the per-window health objects) instead of one per window on each sensor's "
            "health topic: one PUBACK per batch. Only for consumers that read that topic."
        ),
    )
    publish_before_commit: bool = Field(
        default=False,
        description=(
            "Hand a batch's health and alert messages to the MQTT client before the batch's store "
            "commit instead of after it: the commit (an fsync) leaves the window -> health latency. "
            "Still at least once (the outbox row is committed before the window is acked); a commit "
            "that fails, or a crash between publish and commit, repeats those messages after the "
            "broker redelivers the windows."
        ),
    )
    mqtt_reconnect_min_s: int = Field(default=1, ge=1, description="First reconnect delay.")
    mqtt_reconnect_max_s: int = Field(default=60, ge=1, description="Reconnect delay cap (doubling).")

    # --- scoring loop ----------------------------------------------------------------------------
    queue_max_size: int = Field(
        default=1024, ge=1, le=65_535, description="Decoded windows waiting to be scored."
    )
    queue_block_s: float = Field(
        default=2.0, ge=0.0, le=10.0, description="How long a full queue blocks the MQTT thread."
    )
    max_tracked_sensors: int = Field(default=10_000, ge=1, description="Hidden states kept at most.")
    gap_reset_s: float = Field(
        default=600.0,
        gt=0,
        description="A longer silence resets a sensor's state (a clock step with no window missed does not).",
    )
    seq_replay_window: int = Field(
        default=4096,
        ge=1,
        lt=2**31,
        description=(
            "An older seq further back than this is a sensor reboot, never a replay; keep it above "
            "queue_max_size + batch_max_size (docs/protocol.md, 'Order, reboots and clocks')."
        ),
    )

    # --- what a window must be (docs/protocol.md, "What the agent scores") ---------------------------
    max_samples: int = Field(
        default=65_536,
        ge=1,
        le=1_048_576,
        description="Longer windows are refused (too_large) before their samples are read.",
    )
    min_samples: int = Field(default=256, ge=1, description="Shorter windows are refused (too_short).")
    max_fs_hz: float = Field(default=1e6, gt=0, description="A higher sample rate is refused (implausible).")
    max_rpm: float = Field(
        default=100_000.0, gt=0, description="A faster shaft speed is refused (implausible)."
    )
    max_abs_g: float = Field(
        default=1000.0, gt=0, description="A sample beyond ±this many g is refused (implausible)."
    )
    batch_max_size: int = Field(default=256, ge=1, description="Windows scored in one model call at most.")
    batch_max_wait_ms: int = Field(default=50, ge=0, description="Wait this long to fill a batch.")
    states_save_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="The states table is rewritten (compacted) this often; each batch saves its own.",
    )

    # --- local store -----------------------------------------------------------------------------
    store_budget_bytes: int = Field(
        default=2 * 1024**3, ge=1024 * 1024, description="Disk budget of the store, bytes."
    )
    raw_sample_fraction: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Share of windows whose raw samples are kept."
    )
    raw_before_transition: int = Field(
        default=8,
        ge=0,
        le=1024,
        description="Windows before an alarm-state change whose raw samples are kept (held in memory).",
    )
    raw_ring_bytes: int = Field(
        default=16 * 1024**2,
        ge=0,
        description="Memory for the windows held for raw_before_transition, bytes (oldest go first).",
    )
    store_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite fsync policy. FULL: a commit survives power loss. NORMAL (WAL): faster; a commit "
            "survives a crash of the agent, not a power loss or kernel crash."
        ),
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        parts = v.split("/")
        for part in parts:
            _check_id(part, "prefix segment")
        return v

    @field_validator("agent_id")
    @classmethod
    def _check_agent_id(cls, v: str) -> str:
        return _check_id(v, "agent_id")

    @field_validator("mqtt_client_id")
    @classmethod
    def _check_client_id(cls, v: str | None) -> str | None:
        if v is not None and not (1 <= len(v) <= 64 and v.isascii() and v.isprintable()):
            raise ValueError("client id must be 1-64 printable ASCII characters")
        return v

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, v: str) -> str:
        parse_broker_url(v)  # ValueError says what is wrong and what to write
        return v

    @model_validator(mode="after")
    def _check_combinations(self) -> AgentSettings:
        if not self.trusted_keys and not self.allow_unsigned:
            raise ValueError(
                "no trusted_keys: set GRUWATCH_TRUSTED_KEYS (comma-separated public key paths) or "
                "`trusted_keys = [...]` in the TOML file; allow_unsigned = true is for development only"
            )
        if self.trusted_keys and self.allow_unsigned:
            raise ValueError(
                "allow_unsigned = true and trusted_keys exclude each other: with trusted keys every bundle "
                "must be signed by one of them; drop allow_unsigned (it is for development only)"
            )
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("mqtt_cert_file and mqtt_key_file go together: set both or neither")
        if not self.broker_tls and (self.mqtt_ca_file or self.mqtt_cert_file):
            raise ValueError("mqtt_ca_file / mqtt_cert_file need an mqtts:// broker URL")
        if self.mqtt_reconnect_max_s < self.mqtt_reconnect_min_s:
            raise ValueError("mqtt_reconnect_max_s must be >= mqtt_reconnect_min_s")
        if self.mqtt_password is not None and self.mqtt_username is None:
            raise ValueError("mqtt_password is set but mqtt_username is not")
        if self.min_samples > self.max_samples:
            raise ValueError(f"min_samples ({self.min_samples}) must be <= max_samples ({self.max_samples})")
        return self

    @property
    def broker_address(self) -> BrokerAddress:
        """Host, port (1883 / 8883 by default) and TLS flag of `broker` (edge_agent.broker_url)."""
        return parse_broker_url(self.broker)

    @property
    def broker_tls(self) -> bool:
        """True for mqtts:// URLs."""
        return self.broker_address.tls

    @property
    def broker_host(self) -> str:
        return self.broker_address.host

    @property
    def broker_port(self) -> int:
        """The URL's port, else 8883 for mqtts and 1883 for mqtt."""
        return self.broker_address.port

    @property
    def client_id(self) -> str:
        """The MQTT client id; stable across restarts so the broker keeps our persistent session."""
        return self.mqtt_client_id or f"gruwatch-agent-{self.agent_id}"


def _source_values(values: dict[str, Any]) -> dict[str, Any]:
    """The TOML file's keys (all of them: unknown ones are refused), then the `GRUWATCH_<FIELD>`
    variables (any case; the raw strings, for pydantic to convert), then `values`, each over the one before."""
    toml_file = _TOML_FILE.get()
    merged: dict[str, Any] = tomllib.loads(toml_file.read_text(encoding="utf-8")) if toml_file else {}
    prefix = ENV_PREFIX.lower()
    for name, value in os.environ.items():
        key = name.lower()
        if key.startswith(prefix) and key[len(prefix) :] in AgentSettings.model_fields:
            merged[key[len(prefix) :]] = value
    merged.update(values)
    return merged


def _check_id(value: str, what: str) -> str:
    try:
        return validate_id(value)
    except ProtocolError as exc:
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_-]{{1,64}}") from exc


def env_var(field: str) -> str:
    """The environment variable that sets `field`, e.g. env_var("agent_id") == "GRUWATCH_AGENT_ID"."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(config_path: Path | None = None, **overrides: Any) -> AgentSettings:
    """Build the agent's settings from `config_path` (optional TOML) and `GRUWATCH_*` env vars.

    Env vars override the file; `overrides` (for tests and embedding) override both. Raises
    `SettingsError` naming the env var and TOML key of every missing or invalid setting.
    """
    where = f" in {config_path}" if config_path is not None else " in the TOML file (--config)"
    if config_path is not None:
        if not config_path.is_file():
            raise SettingsError(
                f"config file {config_path} not found; pass an existing TOML file "
                "(see examples/agent.toml) or omit --config and use GRUWATCH_* env vars"
            )
        try:
            tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {config_path} is not valid TOML: {exc}") from exc
    token = _TOML_FILE.set(config_path)
    try:
        return AgentSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, where)) from None
    finally:
        _TOML_FILE.reset(token)


def _explain(exc: ValidationError, where: str) -> str:
    lines = ["invalid agent settings:"]
    for err in exc.errors(include_url=False, include_input=False):
        loc = err.get("loc", ())
        field = str(loc[0]) if loc else ""
        if err["type"] == "missing":
            lines.append(f"  - {field} is required: set {env_var(field)} or `{field} = ...`{where}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  - unknown setting {field!r}{where}: see examples/agent.toml for the known keys")
        elif field:
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"  - {field} ({env_var(field)} / `{field}`{where}): {msg}")
        else:
            lines.append(f"  - {str(err['msg']).removeprefix('Value error, ')}")
    return "\n".join(lines)
