"""Ed25519 keys and signatures over digests, and the `gruwatch keys` command."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent import signing
from edge_agent.bundle_cli import keys_main
from edge_agent.errors import BundleError

DIGESTS = {"card.json": "a" * 64, "model.onnx": "b" * 64}


def test_generate_keypair_writes_pem_files_with_private_mode(tmp_path: Path) -> None:
    key_path, pub_path = signing.generate_keypair(tmp_path / "keys")
    assert key_path.name == "signing.key"
    assert pub_path.name == "signing.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    private = signing.load_private_key(key_path)
    public = signing.parse_public_key(pub_path.read_bytes())
    assert signing.raw_public_bytes(private.public_key()) == signing.raw_public_bytes(public)


def test_generate_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, _ = signing.generate_keypair(tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        signing.generate_keypair(tmp_path)
    assert key_path.read_bytes() == before


def test_key_id_is_sha256_prefix_of_raw_key(tmp_path: Path) -> None:
    key_path, _ = signing.generate_keypair(tmp_path)
    public = signing.load_private_key(key_path).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signing.key_id(public) == hashlib.sha256(raw).hexdigest()[:16]


def test_sign_and_verify_round_trip(tmp_path: Path) -> None:
    key_path, pub_path = signing.generate_keypair(tmp_path)
    doc = signing.sign_digests(DIGESTS, signing.load_private_key(key_path))
    trusted = signing.load_public_keys([pub_path])
    kid, digests, verified = signing.verify_signature(doc, trusted)
    assert verified
    assert digests == DIGESTS
    assert kid == doc["key_id"]
    assert doc["algorithm"] == "ed25519"


def test_signature_covers_canonical_digests(tmp_path: Path) -> None:
    key_path, pub_path = signing.generate_keypair(tmp_path)
    doc = signing.sign_digests(DIGESTS, signing.load_private_key(key_path))
    public = signing.parse_public_key(pub_path.read_bytes())
    # the documented message: canonical JSON of the digests object
    public.verify(
        base64.b64decode(doc["signature"]),
        b'{"card.json":"' + b"a" * 64 + b'","model.onnx":"' + b"b" * 64 + b'"}',
    )


def test_changed_digest_is_a_bad_signature(tmp_path: Path) -> None:
    key_path, pub_path = signing.generate_keypair(tmp_path)
    doc = signing.sign_digests(DIGESTS, signing.load_private_key(key_path))
    doc["digests"]["model.onnx"] = "c" * 64
    with pytest.raises(BundleError) as info:
        signing.verify_signature(doc, signing.load_public_keys([pub_path]))
    assert info.value.reason == "bad_signature"


def test_unknown_key_is_untrusted_unless_not_required(tmp_path: Path) -> None:
    key_path, _ = signing.generate_keypair(tmp_path / "a")
    _, other_pub = signing.generate_keypair(tmp_path / "b")
    doc = signing.sign_digests(DIGESTS, signing.load_private_key(key_path))
    trusted = signing.load_public_keys([other_pub])
    with pytest.raises(BundleError) as info:
        signing.verify_signature(doc, trusted)
    assert info.value.reason == "untrusted_key"
    assert doc["key_id"] in info.value.detail
    _, digests, verified = signing.verify_signature(doc, trusted, require_trusted=False)
    assert not verified
    assert digests == DIGESTS


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(algorithm="rsa"), "algorithm"),
        (lambda d: d.update(signature="not base64!"), "base64"),
        (lambda d: d.update(digests={"x": "short"}), "hex"),
        (lambda d: d.pop("key_id"), "key_id"),
    ],
)
def test_malformed_signature_documents(tmp_path: Path, mutate: object, match: str) -> None:
    key_path, pub_path = signing.generate_keypair(tmp_path)
    doc = signing.sign_digests(DIGESTS, signing.load_private_key(key_path))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(BundleError, match=match) as info:
        signing.verify_signature(doc, signing.load_public_keys([pub_path]))
    assert info.value.reason == "bad_signature"


def test_public_keys_from_raw_bytes_and_folders(tmp_path: Path) -> None:
    key_path, pub_path = signing.generate_keypair(tmp_path / "one")
    signing.generate_keypair(tmp_path / "two")
    raw = signing.raw_public_bytes(signing.load_private_key(key_path).public_key())
    (tmp_path / "raw.bin").write_bytes(raw)
    by_raw = signing.load_public_keys([tmp_path / "raw.bin"])
    by_pem = signing.load_public_keys([pub_path])
    assert set(by_raw) == set(by_pem)
    both = signing.load_public_keys([tmp_path / "one", tmp_path / "two"])
    assert len(both) == 2


def test_bad_key_files(tmp_path: Path) -> None:
    _, pub_path = signing.generate_keypair(tmp_path)
    (tmp_path / "junk.pub").write_bytes(b"hello")
    with pytest.raises(BundleError) as info:
        signing.load_public_keys([tmp_path / "junk.pub"])
    assert info.value.reason == "bad_key"
    with pytest.raises(BundleError) as info:
        signing.load_private_key(pub_path)
    assert info.value.reason == "bad_key"
    with pytest.raises(BundleError) as info:
        signing.load_public_keys([tmp_path / "absent.pub"])
    assert info.value.reason == "bad_key"


def test_keys_cli_new_and_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys_main(["new", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert "key id" in out
    assert (tmp_path / "k" / "signing.key").exists()
    assert keys_main(["new", "--out", str(tmp_path / "k")]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_keys_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        keys_main(["--help"])
    assert info.value.code == 0
    assert "trusted keys" in capsys.readouterr().out
