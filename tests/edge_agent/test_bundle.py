"""Model bundle validation: every refusal reason, signing, and the transport archive."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.bundle import (
    BUNDLE_REASONS,
    load_bundle,
    pack_bundle,
    sign_bundle,
    unpack_bundle,
    validate_card,
    write_bundle,
)
from edge_agent.bundle_cli import bundle_main
from edge_agent.errors import BundleError
from edge_agent.signing import generate_keypair
from tests.edge_agent.agent_testing import member, tar_with
from tests.edge_agent.gru_fixtures import (
    GruParams,
    build_bundle,
    build_step_model,
    default_feature_spec,
    make_card,
    make_test_vectors,
    read_json,
    write_json,
)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


@pytest.fixture
def unsigned(tmp_path: Path) -> Path:
    return build_bundle(tmp_path / "bundle")[0]


@pytest.fixture
def signed(unsigned: Path, keys: tuple[Path, Path]) -> Path:
    sign_bundle(unsigned, keys[0])
    return unsigned


def reason_of(fn: Callable[[], Any]) -> str:
    with pytest.raises(BundleError) as info:
        fn()
    assert info.value.reason in BUNDLE_REASONS
    assert info.value.detail  # every refusal says why
    return info.value.reason


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_card(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    card = read_json(bundle / "card.json")
    change(card)
    write_json(bundle / "card.json", card)


def replace_file(bundle: Path, name: str, data: bytes) -> None:
    """Replace a file and keep card.json's digest consistent (an unsigned bundle's author would)."""
    (bundle / name).write_bytes(data)
    edit_card(bundle, lambda c: c["files"].__setitem__(name, sha(bundle / name)))


def test_write_bundle_fills_file_digests(unsigned: Path) -> None:
    card = read_json(unsigned / "card.json")
    assert card["files"] == {
        "model.onnx": sha(unsigned / "model.onnx"),
        "test_vectors.json": sha(unsigned / "test_vectors.json"),
    }
    assert sorted(p.name for p in unsigned.iterdir()) == ["card.json", "model.onnx", "test_vectors.json"]


def test_load_valid_unsigned_bundle(unsigned: Path) -> None:
    b = load_bundle(unsigned, allow_unsigned=True)
    _, F = default_feature_spec()
    assert b.n_features == F
    assert b.state_shape == (1, 8)
    assert b.outputs == ("health", "p_1")
    assert b.thresholds.raise_windows == 2
    assert b.model_version == "test-1"
    assert b.key_id is None
    assert not b.verified


def test_unsigned_refused_by_default(unsigned: Path) -> None:
    assert reason_of(lambda: load_bundle(unsigned)) == "unsigned"


def test_signed_by_trusted_key(signed: Path, keys: tuple[Path, Path]) -> None:
    b = load_bundle(signed, trusted_keys=[keys[1]])
    assert b.verified
    assert b.key_id is not None
    sig = read_json(signed / "signature.json")
    assert set(sig["digests"]) == {"card.json", "model.onnx", "test_vectors.json"}
    assert sig["key_id"] == b.key_id


def test_trusted_keys_may_be_a_folder(signed: Path, keys: tuple[Path, Path]) -> None:
    assert load_bundle(signed, trusted_keys=[keys[1].parent]).verified


def test_untrusted_key(signed: Path, tmp_path: Path) -> None:
    _, other = generate_keypair(tmp_path / "other")
    assert reason_of(lambda: load_bundle(signed, trusted_keys=[other])) == "untrusted_key"
    assert reason_of(lambda: load_bundle(signed)) == "untrusted_key"
    # allowed unsigned: an unknown signer is tolerated, but it is not "verified"
    b = load_bundle(signed, trusted_keys=[other], allow_unsigned=True)
    assert not b.verified
    assert b.key_id is not None


@pytest.mark.parametrize("name", ["model.onnx", "test_vectors.json", "card.json"])
def test_tampered_file_after_signing(signed: Path, keys: tuple[Path, Path], name: str) -> None:
    with (signed / name).open("ab") as fh:
        fh.write(b" ")
    assert reason_of(lambda: load_bundle(signed, trusted_keys=[keys[1]])) == "digest_mismatch"
    # the signed digests are checked even when unsigned bundles are allowed
    assert reason_of(lambda: load_bundle(signed, allow_unsigned=True)) == "digest_mismatch"


def test_tampered_file_unsigned_caught_by_card(unsigned: Path) -> None:
    with (unsigned / "test_vectors.json").open("ab") as fh:
        fh.write(b"\n")
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "digest_mismatch"


def test_extra_file_after_signing(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / "notes.txt").write_text("hi")
    assert reason_of(lambda: load_bundle(signed, trusted_keys=[keys[1]])) == "digest_mismatch"


def test_rehashed_digests_break_the_signature(signed: Path, keys: tuple[Path, Path]) -> None:
    # an attacker swaps the model and updates both card.json and signature.json digests
    other = build_step_model(GruParams.random(default_feature_spec()[1], seed=5))
    replace_file(signed, "model.onnx", other)
    sig = read_json(signed / "signature.json")
    sig["digests"] = {n: sha(signed / n) for n in sig["digests"]}
    write_json(signed / "signature.json", sig)
    assert reason_of(lambda: load_bundle(signed, trusted_keys=[keys[1]])) == "bad_signature"


def test_corrupt_signature_bytes(signed: Path, keys: tuple[Path, Path]) -> None:
    sig = read_json(signed / "signature.json")
    raw = bytearray(__import__("base64").b64decode(sig["signature"]))
    raw[0] ^= 1
    sig["signature"] = __import__("base64").b64encode(bytes(raw)).decode()
    write_json(signed / "signature.json", sig)
    assert reason_of(lambda: load_bundle(signed, trusted_keys=[keys[1]])) == "bad_signature"
    (signed / "signature.json").write_text("{not json")
    assert reason_of(lambda: load_bundle(signed, trusted_keys=[keys[1]])) == "bad_signature"


@pytest.mark.parametrize("name", ["model.onnx", "test_vectors.json", "card.json"])
def test_missing_file(signed: Path, keys: tuple[Path, Path], name: str) -> None:
    (signed / name).unlink()
    assert reason_of(lambda: load_bundle(signed, trusted_keys=[keys[1]])) == "missing_file"
    (signed / "signature.json").unlink()
    assert reason_of(lambda: load_bundle(signed, allow_unsigned=True)) == "missing_file"


def test_missing_folder(tmp_path: Path) -> None:
    assert reason_of(lambda: load_bundle(tmp_path / "nope", allow_unsigned=True)) == "missing_file"


def test_unknown_feature_spec(unsigned: Path) -> None:
    edit_card(unsigned, lambda c: c["feature_spec"].update(name="not-a-spec"))
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "feature_spec"
    edit_card(unsigned, lambda c: c["feature_spec"].update(name="gruwatch-vib", version=99))
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "feature_spec"


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(schema=2),
        lambda c: c.pop("model_version"),
        lambda c: c.update(created="yesterday"),
        lambda c: c.update(mode="magic"),
        lambda c: c.update(state_shape=[1]),
        lambda c: c.update(outputs=["p_outer", "health"]),
        lambda c: c.update(outputs=[]),
        lambda c: c["thresholds"].update(warning=0.9, alarm=0.5),
        lambda c: c["thresholds"].update(raise_windows=0),
        lambda c: c["thresholds"].pop("clear_windows"),
        lambda c: c.update(validation=[]),
        lambda c: c["training_data"].update(fingerprint="xyz"),
        lambda c: c["files"].pop("model.onnx"),
        lambda c: c["files"].update({"../evil": "0" * 64}),
        lambda c: c.update(parent_version=3),
    ],
)
def test_bad_card(unsigned: Path, change: Callable[[dict[str, Any]], None]) -> None:
    edit_card(unsigned, change)
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "bad_card"


def test_card_not_json(unsigned: Path) -> None:
    (unsigned / "card.json").write_text("{")
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "bad_card"


def test_write_bundle_validates_card(tmp_path: Path) -> None:
    spec, F = default_feature_spec()
    p = GruParams.random(F)
    card = make_card(p, spec)
    card["mode"] = "nonsense"
    with pytest.raises(BundleError, match="mode"):
        write_bundle(
            tmp_path / "b", onnx_bytes=build_step_model(p), card=card, test_vectors=make_test_vectors(p)
        )
    assert not (tmp_path / "b" / "model.onnx").exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.update(state_shape=[1, 9]), "h"),
        (lambda c: c.update(state_shape=[2, 8]), "h"),
        (lambda c: c.update(outputs=["health", "p_1", "p_2"]), "score"),
    ],
)
def test_shape_mismatch_with_card(
    unsigned: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    edit_card(unsigned, change)
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(unsigned, allow_unsigned=True)
    assert info.value.reason == "shape"


def test_fixed_batch_axis_is_refused(unsigned: Path) -> None:
    p = GruParams.random(default_feature_spec()[1])
    replace_file(unsigned, "model.onnx", build_step_model(p, batch_dim=1))
    with pytest.raises(BundleError, match="dynamic") as info:
        load_bundle(unsigned, allow_unsigned=True)
    assert info.value.reason == "shape"


def test_wrong_feature_count_is_a_shape_error(unsigned: Path) -> None:
    p = GruParams.random(default_feature_spec()[1] + 1)
    replace_file(unsigned, "model.onnx", build_step_model(p))
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "shape"


def test_garbage_model(unsigned: Path) -> None:
    replace_file(unsigned, "model.onnx", b"this is not onnx")
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "bad_model"


def test_test_vectors_from_another_model(unsigned: Path) -> None:
    p = GruParams.random(default_feature_spec()[1], seed=123)
    replace_file(unsigned, "model.onnx", build_step_model(p))
    with pytest.raises(BundleError, match="vector 0 step 0") as info:
        load_bundle(unsigned, allow_unsigned=True)
    assert info.value.reason == "test_vectors"


def test_test_vectors_off_by_more_than_atol(unsigned: Path) -> None:
    tv = read_json(unsigned / "test_vectors.json")
    tv["vectors"][1]["scores"][3][1] += 2e-4
    replace_file(unsigned, "test_vectors.json", json.dumps(tv).encode())
    with pytest.raises(BundleError, match="vector 1 step 3") as info:
        load_bundle(unsigned, allow_unsigned=True)
    assert info.value.reason == "test_vectors"
    tv["atol"] = 1e-3  # the file's own tolerance is what counts
    replace_file(unsigned, "test_vectors.json", json.dumps(tv).encode())
    load_bundle(unsigned, allow_unsigned=True)


def test_test_vectors_final_state_checked(unsigned: Path) -> None:
    tv = read_json(unsigned / "test_vectors.json")
    tv["vectors"][0]["h_final"][0][0][0] += 0.01
    replace_file(unsigned, "test_vectors.json", json.dumps(tv).encode())
    with pytest.raises(BundleError, match="final state") as info:
        load_bundle(unsigned, allow_unsigned=True)
    assert info.value.reason == "test_vectors"


@pytest.mark.parametrize(
    "change",
    [
        lambda tv: tv.update(vectors=[]),
        lambda tv: tv.update(atol=1.0),
        lambda tv: tv.pop("atol"),
        lambda tv: tv["vectors"][0].update(features=[[1.0, 2.0]]),
        lambda tv: tv["vectors"][0].pop("h0"),
        lambda tv: tv["vectors"][0].update(scores="nope"),
    ],
)
def test_malformed_test_vectors(unsigned: Path, change: Callable[[dict[str, Any]], None]) -> None:
    tv = read_json(unsigned / "test_vectors.json")
    change(tv)
    replace_file(unsigned, "test_vectors.json", json.dumps(tv).encode())
    assert reason_of(lambda: load_bundle(unsigned, allow_unsigned=True)) == "test_vectors"


def test_two_layer_bundle(tmp_path: Path) -> None:
    path, _ = build_bundle(tmp_path / "b2", hidden=6, layers=2, outputs=3)
    b = load_bundle(path, allow_unsigned=True)
    assert b.state_shape == (2, 6)
    assert len(b.outputs) == 3


def test_sign_refuses_invalid_bundle(unsigned: Path, keys: tuple[Path, Path]) -> None:
    tv = read_json(unsigned / "test_vectors.json")
    tv["vectors"][0]["scores"][0][0] += 0.5
    replace_file(unsigned, "test_vectors.json", json.dumps(tv).encode())
    assert reason_of(lambda: sign_bundle(unsigned, keys[0])) == "test_vectors"
    assert not (unsigned / "signature.json").exists()


def test_resigning_replaces_the_signature(signed: Path, tmp_path: Path) -> None:
    key2, pub2 = generate_keypair(tmp_path / "k2")
    sign_bundle(signed, key2)
    assert load_bundle(signed, trusted_keys=[pub2]).verified


def test_validate_card_accepts_fixture_card() -> None:
    spec, F = default_feature_spec()
    card = make_card(GruParams.random(F), spec)
    assert validate_card(card, need_files=False) is card


# --------------------------------------------------------------------------------------- archive


def test_pack_is_deterministic_and_round_trips(signed: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    data = pack_bundle(signed)
    os.utime(signed / "model.onnx", (1, 1))
    assert pack_bundle(signed) == data
    out = unpack_bundle(data, tmp_path / "unpacked")
    assert load_bundle(out, trusted_keys=[keys[1]]).verified
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert names == sorted(names)


@pytest.mark.parametrize(
    "entries",
    [
        [member("../evil")],
        [member("/etc/passwd")],
        [member("sub/card.json")],
        [member("card.json", kind=tarfile.SYMTYPE, link="/etc/passwd")],
        [member("card.json", kind=tarfile.LNKTYPE, link="model.onnx")],
        [member("sub", kind=tarfile.DIRTYPE)],
        [member("card.json"), member("card.json")],
        [member(".hidden")],
        [],
    ],
)
def test_unpack_refuses_unsafe_archives(tmp_path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    assert reason_of(lambda: unpack_bundle(tar_with(entries), tmp_path / "out")) == "bad_archive"
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil").exists()


def test_unpack_limits(tmp_path: Path) -> None:
    big = tar_with([member("model.onnx", b"0" * 5000)])
    assert reason_of(lambda: unpack_bundle(big, tmp_path / "a", max_bytes=4096)) == "bad_archive"
    many = tar_with([member(f"f{i}") for i in range(5)])
    assert reason_of(lambda: unpack_bundle(many, tmp_path / "b", max_files=4)) == "bad_archive"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("occupied")
    ok = tar_with([member("card.json")])
    assert reason_of(lambda: unpack_bundle(ok, tmp_path / "c")) == "bad_archive"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000))
def test_unpack_random_bytes_only_raises_bundle_error(tmp_path: Path, data: bytes) -> None:
    dest = tmp_path / f"r{hashlib.sha1(data).hexdigest()}"
    reasons = []
    try:
        unpack_bundle(data, dest)
    except BundleError as exc:  # anything else escaping (tarfile, OSError, ...) fails the test
        reasons.append(exc.reason)
    assert reasons in ([], ["bad_archive"])


# ------------------------------------------------------------------------------------------- CLI


def test_cli_sign_verify_pack_unpack(
    unsigned: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bundle_main(["verify", str(unsigned), "--trusted-keys", str(keys[1])]) == 1
    assert "refused (unsigned)" in capsys.readouterr().err
    assert bundle_main(["sign", str(unsigned), "--key", str(keys[0])]) == 0
    assert bundle_main(["verify", str(unsigned), "--trusted-keys", str(keys[1])]) == 0
    out = capsys.readouterr().out
    assert "signed by trusted key" in out
    assert "model test-1" in out
    archive = tmp_path / "b.tar"
    assert bundle_main(["pack", str(unsigned), "--out", str(archive)]) == 0
    assert bundle_main(["unpack", str(archive), "--out", str(tmp_path / "u")]) == 0
    assert bundle_main(["verify", str(tmp_path / "u"), "--trusted-keys", str(keys[1].parent)]) == 0
    _, other = generate_keypair(tmp_path / "other")
    assert bundle_main(["verify", str(unsigned), "--trusted-keys", str(other)]) == 1
    assert "untrusted_key" in capsys.readouterr().err


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        bundle_main(["--help"])
    assert info.value.code == 0
    assert "gruwatch bundle verify" in capsys.readouterr().out


def test_replayed_vectors_match_independent_reference(unsigned: Path) -> None:
    # the fixture's vectors come from numpy, so loading proves onnxruntime agrees with the reference
    tv = read_json(unsigned / "test_vectors.json")
    assert np.asarray(tv["vectors"][0]["h0"]).shape == (1, 1, 8)
    load_bundle(unsigned, allow_unsigned=True)
