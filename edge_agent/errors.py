"""The edge agent's exception tree. Every error gruwatch raises on purpose derives from `GruwatchError`.

    GruwatchError
    ├── ProtocolError   untrusted bytes, ids or samples rejected; `.reason` is a short stable code
    ├── FeatureError    a feature spec the agent cannot compute (unknown name/version/parameters)
    └── BundleError     a model bundle refused (missing file, bad signature, test vectors, ...)

`ProtocolError.reason` is one of `PROTOCOL_REASONS`; counters and logs key on it, so reasons are
part of the public interface (docs/protocol.md). Foreign exceptions (json, struct, UnicodeDecodeError,
...) are translated where they happen with `raise ProtocolError(...) from exc`.
"""

from __future__ import annotations

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
    }
)


class GruwatchError(Exception):
    """Base of every error gruwatch raises deliberately."""


class ProtocolError(GruwatchError):
    """Untrusted input rejected. `reason` is a stable code from PROTOCOL_REASONS; `detail` is for people."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in PROTOCOL_REASONS:
            raise ValueError(f"unknown protocol error reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class FeatureError(GruwatchError):
    """A feature spec that this build cannot compute."""


class BundleError(GruwatchError):
    """A model bundle was refused. `reason` is a stable code (docs/model-bundle.md)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
