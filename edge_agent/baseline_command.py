"""The signed "reset baseline" command: a maintenance event (bearing replaced) for one sensor.

Resetting a sensor's healthy baseline changes what the agent calls normal, so it is authenticated
like a model deploy: an Ed25519 signature (edge_agent.signing) by a key the agent trusts. The
command is a small JSON document::

    {"command": "reset-baseline", "machine": "press7", "sensor": "s0", "issued_at": 1764700000.0,
     "nonce": "<32 hex>", "key_id": "<16 hex>", "signature": "<base64 over canonical_json(body)>"}

where body is every field but `key_id` and `signature`. The agent refuses (CommandError with a
stable reason): a document that is not such JSON (`malformed`), no or an unknown key
(`untrusted_key`), a signature that does not verify (`bad_signature`), a command issued more than
`max_age_s` ago or in the future (`stale`, a replayed old command), and a nonce it has already
executed (`replayed`).

>>> from edge_agent.signing import generate_keypair  # doctest: +SKIP
>>> payload = sign_reset("press7", "s0", load_private_key("keys/signing.key"))  # doctest: +SKIP
>>> verify_reset(payload, load_public_keys(["keys/signing.pub"]))  # doctest: +SKIP
ResetCommand(machine='press7', sensor='s0', ...)
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import time
from collections.abc import Mapping, MutableSet
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import GruwatchError
from edge_agent.signing import canonical_json, key_id

COMMAND = "reset-baseline"
MAX_AGE_S = 600.0  # a command older than this (or this far in the future) is refused
_BODY = ("command", "machine", "sensor", "issued_at", "nonce")


class CommandError(GruwatchError):
    """A reset command the agent refuses; `reason` is stable (docs/features.md)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}", reason=reason)
        self.detail = message


@dataclass(frozen=True)
class ResetCommand:
    machine: str
    sensor: str
    issued_at: float
    nonce: str
    key_id: str


def sign_reset(
    machine: str, sensor: str, private_key: Ed25519PrivateKey, *, now: float | None = None
) -> bytes:
    """The signed command as UTF-8 JSON bytes (an MQTT payload)."""
    body = {
        "command": COMMAND,
        "machine": str(machine),
        "sensor": str(sensor),
        "issued_at": float(time.time() if now is None else now),
        "nonce": os.urandom(16).hex(),
    }
    signature = private_key.sign(canonical_json(body))
    doc = {
        **body,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(signature).decode(),
    }
    return json.dumps(doc, sort_keys=True).encode("utf-8")


def verify_reset(
    payload: bytes | str,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    now: float | None = None,
    max_age_s: float = MAX_AGE_S,
    seen_nonces: MutableSet[str] | None = None,
    allow_unsigned: bool = False,
) -> ResetCommand:
    """The command, if signed by a trusted key, fresh and not seen before; CommandError otherwise.

    `seen_nonces` (kept by the caller) gets the nonce of every accepted command. `allow_unsigned`
    (an agent without trusted keys, development only) admits a command with no signature at all,
    as it admits unsigned bundles; a signature that cannot be checked is refused even then.
    """
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError("malformed", f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("command") != COMMAND:
        raise CommandError("malformed", f"not a {COMMAND!r} command")
    body = {k: doc.get(k) for k in _BODY}
    if not all(isinstance(body[k], str) and body[k] for k in ("machine", "sensor", "nonce")):
        raise CommandError("malformed", "machine, sensor and nonce must be non-empty strings")
    issued = body["issued_at"]
    if isinstance(issued, bool) or not isinstance(issued, int | float) or not math.isfinite(issued):
        raise CommandError("malformed", "issued_at must be a number (Unix seconds)")
    kid, sig = doc.get("key_id"), doc.get("signature")
    unsigned = kid is None and sig is None
    if unsigned and allow_unsigned and not trusted:
        kid = ""
    elif not isinstance(kid, str) or not isinstance(sig, str):
        raise CommandError("untrusted_key", "the command is not signed; sign it with a key the agent trusts")
    else:
        key = trusted.get(kid)
        if key is None:
            known = ", ".join(sorted(trusted)) or "none"
            raise CommandError("untrusted_key", f"signed by key {kid}, not among the trusted keys ({known})")
        try:
            key.verify(base64.b64decode(sig, validate=True), canonical_json(body))
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise CommandError(
                "bad_signature", f"the signature by key {kid} does not match the command"
            ) from exc
    clock = time.time() if now is None else now
    if abs(clock - float(issued)) > max_age_s:
        raise CommandError("stale", f"issued {clock - float(issued):.0f} s from now; at most {max_age_s:g} s")
    nonce = str(body["nonce"])
    if seen_nonces is not None:
        if nonce in seen_nonces:
            raise CommandError("replayed", "this command was already executed")
        seen_nonces.add(nonce)
    return ResetCommand(str(body["machine"]), str(body["sensor"]), float(issued), nonce, kid)
