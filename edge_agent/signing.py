"""Ed25519 keys and detached signatures over a model bundle's file digests.

A signature document (`signature.json` in a bundle) is::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "digests": {"card.json": "<sha256 hex>", ...},
     "signature": "<base64 Ed25519 signature over canonical_json(digests)>"}

`key_id` is the first 16 hex digits of sha256 over the raw 32-byte public key, so an agent can say
which key signed a bundle it refused. Keys on disk are PEM: the private key PKCS8 (mode 0600), the
public key SubjectPublicKeyInfo; a public key may also be given as the raw 32 bytes. Every failure is
a `BundleError` with a stable reason (docs/model-bundle.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import BundleError

ALGORITHM = "ed25519"
PRIVATE_KEY_NAME = "signing.key"
PUBLIC_KEY_NAME = "signing.pub"
_HEX = frozenset("0123456789abcdef")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Lower-case hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_sha256_hex(value: object) -> bool:
    """True for a 64-digit lower-case hex string."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def canonical_json(value: Any) -> bytes:
    """The bytes that get signed: JSON with sorted keys and no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256(raw public key): a short, stable name for a key."""
    return sha256_hex(raw_public_bytes(key))[:16]


def generate_keypair(out_dir: Path | str) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as `out_dir/signing.key` (PKCS8 PEM, 0600) and `signing.pub`.

    Refuses (FileExistsError) to overwrite either file: losing a signing key strands every agent
    that trusts it. Returns (private_key_path, public_key_path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    for existing in (key_path, pub_path):
        if existing.exists():
            raise FileExistsError(
                f"{existing} already exists; refusing to overwrite a key. "
                "Choose another --out folder or move the old keys away first."
            )
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # O_EXCL: a key appearing between the check above and here is still not overwritten.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    os.chmod(key_path, 0o600)  # the umask may have removed bits but never adds; be explicit
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(public_pem)
    return key_path, pub_path


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Read a PEM PKCS8 Ed25519 private key (unencrypted). BundleError("bad_key") otherwise."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BundleError("bad_key", f"cannot read private key {p}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(
            "bad_key", f"{p} is not an unencrypted PEM private key; make one with `gruwatch keys new`"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("bad_key", f"{p} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def parse_public_key(data: bytes, source: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM SubjectPublicKeyInfo or the raw 32 bytes."""
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BundleError("bad_key", f"{source} is neither a PEM public key nor 32 raw bytes") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("bad_key", f"{source} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_keys(paths: Iterable[Path | str]) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by key id. A path may be a key file or a folder whose `*.pub` files are read."""
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in paths:
        p = Path(entry)
        files: Sequence[Path] = sorted(p.glob("*.pub")) if p.is_dir() else [p]
        for f in files:
            try:
                data = f.read_bytes()
            except OSError as exc:
                raise BundleError("bad_key", f"cannot read trusted key {f}: {exc.strerror}") from exc
            key = parse_public_key(data, str(f))
            keys[key_id(key)] = key
    return keys


def sign_digests(digests: Mapping[str, str], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signature document over `digests` (file name -> sha256 hex)."""
    for name, value in digests.items():
        if not is_sha256_hex(value):
            raise ValueError(f"digest of {name!r} is not 64 lower-case hex digits")
    body = {str(k): str(v) for k, v in digests.items()}
    signature = private_key.sign(canonical_json(body))
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "digests": dict(sorted(body.items())),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def parse_signature(document: Any) -> tuple[str, dict[str, str], bytes]:
    """Check a signature document's shape; returns (key_id, digests, signature bytes)."""
    if not isinstance(document, dict):
        raise BundleError("bad_signature", "signature.json is not a JSON object")
    if document.get("algorithm") != ALGORITHM:
        raise BundleError(
            "bad_signature", f"algorithm {document.get('algorithm')!r} is not supported; only 'ed25519'"
        )
    kid = document.get("key_id")
    digests = document.get("digests")
    sig = document.get("signature")
    if not isinstance(kid, str) or not isinstance(sig, str) or not isinstance(digests, dict):
        raise BundleError(
            "bad_signature", "signature.json needs string key_id, signature and a digests object"
        )
    if not all(isinstance(k, str) and is_sha256_hex(v) for k, v in digests.items()):
        raise BundleError("bad_signature", "every digest must be 64 lower-case hex digits")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError("bad_signature", "signature is not valid base64") from exc
    return kid, dict(digests), raw


def verify_signature(
    document: Any, trusted: Mapping[str, Ed25519PublicKey], *, require_trusted: bool = True
) -> tuple[str, dict[str, str], bool]:
    """Check a signature document against trusted keys.

    Returns (key_id, digests, verified). A key not in `trusted` raises BundleError("untrusted_key")
    when `require_trusted`, else returns verified=False (the digests are still worth checking). A
    trusted key whose signature does not verify always raises BundleError("bad_signature").
    """
    kid, digests, raw = parse_signature(document)
    key = trusted.get(kid)
    if key is None:
        if require_trusted:
            known = ", ".join(sorted(trusted)) or "none"
            raise BundleError(
                "untrusted_key",
                f"signed by key {kid}, which is not among the trusted keys ({known}); "
                "add its signing.pub to the agent's trusted keys or re-sign the bundle",
            )
        return kid, digests, False
    try:
        key.verify(raw, canonical_json(digests))
    except InvalidSignature as exc:
        raise BundleError(
            "bad_signature", f"the signature by key {kid} does not match the listed digests"
        ) from exc
    return kid, digests, True
