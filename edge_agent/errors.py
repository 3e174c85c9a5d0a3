"""gruwatch's one exception tree: every error a user can see derives from `GruwatchError`.

    GruwatchError          .reason: a short stable code (logs, metrics, exit messages key on it)
    ├── ProtocolError      untrusted bytes, ids or samples rejected (reason from PROTOCOL_REASONS)
    ├── FeatureError       a feature spec the agent cannot compute (unknown name/version/parameters)
    ├── BundleError        a model bundle refused (missing file, bad signature, test vectors, ...)
    ├── SettingsError      agent settings missing or invalid
    ├── StoreError         the agent's SQLite store cannot be opened or written (disk full, ...)
    ├── LinkError          the MQTT broker cannot be reached, refused us, or did not answer
    │   └── RequestError   a one-shot request/reply failed (`.stage` says where)
    ├── DeployError        a bundle could not be sent to an agent, or it did not answer
    └── (trainer, simulator) ExportError, DataError, PublishError

    GruwatchWarning        something the user should know that does not stop the work (data left
                           out, ...); the command line prints it as one line, `PROG: warning: ...`

Foreign exceptions are translated in one place each, with `raise ... from exc`: sqlite3 errors by
`store_error` (here), paho's return codes by `edge_agent.mqtt_link.link_error`.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

PROTOCOL_REASONS: frozenset[str] = frozenset(
    {
        "bad_magic",  # first bytes are neither the binary magic "GW" nor a JSON object
        "bad_version",  # binary header version we do not speak
        "bad_dtype",  # binary dtype code unknown
        "truncated",  # fewer bytes than the header announces (or than a header)
        "trailing",  # more bytes than the header announces
        "too_large",  # more samples / bytes / nesting than allowed
        "empty",  # a window with no samples
        "nan",  # NaN or infinity in samples or numeric fields
        "bad_json",  # not UTF-8 JSON, or NaN/Infinity literals, or deep nesting
        "bad_field",  # a field missing, of the wrong type, or out of range
        "bad_id",  # machine / sensor / agent id does not match [A-Za-z0-9_-]{1,64}
        "bad_topic",  # topic not of a known shape under the prefix
        "too_short",  # fewer samples than the agent's min_samples
        "implausible",  # fs, rpm or a sample beyond what a vibration sensor gives (agent settings)
        "model_mismatch",  # sampled too slowly for the served model's features
    }
)


class GruwatchError(Exception):
    """Base of every error gruwatch raises deliberately. `reason` is a stable code, `str(exc)` for people."""

    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(message or self.reason)


class GruwatchWarning(UserWarning):
    """A warning gruwatch gives deliberately (`warnings.warn(msg, GruwatchWarning)`)."""


class _ReasonDetailError(GruwatchError):
    """An error built as (reason, detail): the message is "reason: detail"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason, reason=reason)


class ProtocolError(_ReasonDetailError):
    """Untrusted input rejected. `reason` is a stable code from PROTOCOL_REASONS; `detail` is for people."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in PROTOCOL_REASONS:
            raise ValueError(f"unknown protocol error reason {reason!r}")
        super().__init__(reason, detail)


class FeatureError(GruwatchError):
    """A feature spec that this build cannot compute."""

    reason = "bad_feature_spec"


class BundleError(_ReasonDetailError):
    """A model bundle was refused. `reason` is a stable code (docs/model-bundle.md)."""


class SettingsError(GruwatchError):
    """The agent's settings are missing or invalid; the message says which env var or TOML key to fix."""

    reason = "bad_settings"


class StoreError(GruwatchError):
    """The store cannot be opened or used. Reasons: cannot_open, not_a_store, bad_schema, disk_full, io."""

    reason = "store"


class LinkError(GruwatchError):
    """The MQTT broker cannot be reached, refused a request, or a publish failed."""

    reason = "mqtt"


class RequestError(LinkError):
    """`request_reply` failed; `stage` says where: connect, subscribe, publish or answer."""

    def __init__(self, stage: Literal["connect", "subscribe", "publish", "answer"], message: str) -> None:
        super().__init__(message, reason=f"mqtt_{stage}")
        self.stage = stage


class DeployError(GruwatchError):
    """The bundle could not be sent, or no agent answered."""

    reason = "deploy"


def store_error(exc: sqlite3.Error, what: str) -> StoreError:
    """The one translation of a sqlite3 error into a StoreError; `what` names the store and the step."""
    text = str(exc)
    low = text.lower()
    if "full" in low or (isinstance(exc, sqlite3.OperationalError) and "no space" in low):
        return StoreError(
            f"{what}: the disk is full ({text}); free space or lower store_budget_mb", reason="disk_full"
        )
    if "unable to open" in low or "readonly" in low or "read-only" in low:
        return StoreError(f"{what}: {text}; check the path and its permissions", reason="cannot_open")
    if (
        "not a database" in low
        or "malformed" in low
        or (isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError))
    ):
        return StoreError(f"{what} is not a usable SQLite store: {text}", reason="not_a_store")
    return StoreError(f"{what}: {text}", reason="io")
