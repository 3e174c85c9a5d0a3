"""Bundle attacks under every agent setting, through the real deploy path (issue 14, point 6 and the suite).

One table, `ATTACKS`: each row builds a hostile archive (a tampered, forged, misbound, rolled-back
or malformed bundle, or a tar with path and link tricks) and says the reason the agent must give.
`test_every_bundle_attack_is_refused_under_every_setting` runs the whole table against a running
agent for each setting that decides what a bundle needs (trusted keys; allow_unsigned without keys)
and each deploy topic (`.../model` and `.../model/force`, what `gruwatch agent deploy [--force]`
publishes to, via `model_swap.deploy_archive`): every attack is refused with its reason, the answer
names the old model as serving, nothing lands outside the models folder, the old model still scores
a window, and a good bundle is then taken (the refusals are not a path that refuses everything).
docs/reliability.md carries the count table.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.bundle import MAX_BUNDLE_BYTES, MAX_FILES, pack_bundle
from edge_agent.model_swap import deploy_archive, models_dir
from edge_agent.protocol import Window, encode_binary, vibration_topic
from edge_agent.signing import generate_keypair, sha256_file
from tests.conftest import Broker
from tests.edge_agent.agent_testing import (
    Models,
    Subscriber,
    agent_settings,
    close_client,
    make_bundle,
    member,
    mqtt_client,
    publish,
    rms_params,
    running,
    sign_anyway,
    tar_with,
)
from tests.edge_agent.gru_fixtures import GruParams, build_step_model

pytestmark = pytest.mark.mqtt

SERVING_CREATED = "2026-06-01T00:00:00+00:00"
NEVER = {"warning": 1.0, "alarm": 1.0, "raise_windows": 1, "clear_windows": 1}  # a model that never alarms


@dataclass
class Ctx:
    """What an attack may use: a scratch folder, the signer the agent trusts (None: the agent runs with
    allow_unsigned and serves unsigned bundles), and a key it does not know."""

    root: Path
    trusted: Path | None
    models: Models
    forger: Path

    def bundle(self, name: str, *, signer: Path | None = None, sign: bool = True, **card: Any) -> Path:
        """A valid bundle as the legitimate signer would make it (`signer` overrides; sign=False: unsigned)."""
        card.setdefault("created", SERVING_CREATED)
        key = signer if signer is not None else (self.trusted if sign else None)
        return make_bundle(self.root / name, key, version=f"attack-{name}", thresholds=NEVER, **card)

    def signed_elsewhere(self, name: str) -> Path:
        """A bundle with a signature the attack then damages: by the trusted key, or (allow_unsigned
        agent) by the key the agent serves nothing of, models.key."""
        return self.bundle(name, signer=self.trusted or self.models.key)

    def finish(self, path: Path) -> Path:
        """Re-seal an edited bundle as its author can: the card's digests updated, then signed by the
        trusted key (without the content check: a stolen key or a signer's mistake) or left unsigned."""
        (path / "signature.json").unlink(missing_ok=True)
        card = json.loads((path / "card.json").read_text())
        card["files"] = {n: sha256_file(path / n) for n in card["files"]}
        (path / "card.json").write_text(json.dumps(card))
        return sign_anyway(path, self.trusted) if self.trusted is not None else path


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


# ------------------------------------------------------------------------------- the attacks


def model_changed_after_signing(c: Ctx) -> bytes:
    b = c.signed_elsewhere("model")
    _append(b / "model.onnx", b"\x00")
    return pack_bundle(b)


def card_changed_after_signing(c: Ctx) -> bytes:
    b = c.signed_elsewhere("card")
    _edit_json(b / "card.json", lambda d: d["thresholds"].update(warning=0.1, alarm=0.2))
    return pack_bundle(b)


def vectors_changed_after_signing(c: Ctx) -> bytes:
    b = c.signed_elsewhere("tv")
    _append(b / "test_vectors.json", b"\n")
    return pack_bundle(b)


def file_added_after_signing(c: Ctx) -> bytes:
    b = c.signed_elsewhere("added")
    (b / "notes.txt").write_text("not covered by the signature")
    return pack_bundle(b)


def file_removed_after_signing(c: Ctx) -> bytes:
    b = c.signed_elsewhere("removed")
    (b / "test_vectors.json").unlink()
    return pack_bundle(b)


def digests_rehashed(c: Ctx) -> bytes:
    """The card edited (thresholds at 1.0) and signature.json's digests updated to match; the signature
    bytes left as they were."""
    b = c.signed_elsewhere("rehashed")
    _edit_json(b / "card.json", lambda d: d["thresholds"].update(warning=0.99, alarm=1.0))
    _edit_json(
        b / "signature.json", lambda d: d.update(digests={n: sha256_file(b / n) for n in d["digests"]})
    )
    return pack_bundle(b)


def signature_bytes_flipped(c: Ctx) -> bytes:
    b = c.signed_elsewhere("flipped")
    raw = bytearray(base64.b64decode(json.loads((b / "signature.json").read_text())["signature"]))
    raw[0] ^= 1
    _edit_json(b / "signature.json", lambda d: d.update(signature=base64.b64encode(bytes(raw)).decode()))
    return pack_bundle(b)


def signature_not_json(c: Ctx) -> bytes:
    b = c.signed_elsewhere("sigjson")
    (b / "signature.json").write_text("{not json")
    return pack_bundle(b)


def signature_other_algorithm(c: Ctx) -> bytes:
    b = c.signed_elsewhere("rsa")
    _edit_json(b / "signature.json", lambda d: d.update(algorithm="rsa-pss"))
    return pack_bundle(b)


def signed_by_an_unknown_key(c: Ctx) -> bytes:
    """A complete, valid bundle that never alarms (thresholds at 1.0), signed by a key of its own."""
    return pack_bundle(c.bundle("forger", signer=c.forger))


def forged_key_id_zero(c: Ctx) -> bytes:
    """signature.json naming key 0000000000000000 with 64 random bytes as the signature."""
    b = c.signed_elsewhere("zero")
    forged = base64.b64encode(np.random.default_rng(0).bytes(64)).decode()
    _edit_json(b / "signature.json", lambda d: d.update(key_id="0" * 16, signature=forged))
    return pack_bundle(b)


def forged_with_the_trusted_key_id(c: Ctx) -> bytes:
    """Signed by the forger, with signature.json claiming the id of the key the agent serves by."""
    b = c.bundle("claims", signer=c.forger)
    theirs = json.loads((c.signed_elsewhere("genuine") / "signature.json").read_text())["key_id"]
    _edit_json(b / "signature.json", lambda d: d.update(key_id=theirs))
    return pack_bundle(b)


def signature_from_another_bundle(c: Ctx) -> bytes:
    """A genuine signature.json copied onto another model (card digests consistent)."""
    genuine = c.signed_elsewhere("donor")
    b = c.bundle("thief", sign=False, gain=9.0)
    shutil.copy(genuine / "signature.json", b / "signature.json")
    return pack_bundle(b)


def unsigned_bundle(c: Ctx) -> bytes:
    return pack_bundle(c.bundle("unsigned", sign=False))


def rollback_to_an_older_bundle(c: Ctx) -> bytes:
    return pack_bundle(c.bundle("older", created="2026-01-01T00:00:00+00:00"))


def bound_to_other_agents(c: Ctx) -> bytes:
    return pack_bundle(c.bundle("theirs", agents=["gw-elsewhere", "gw-other"]))


def garbage_model_signed(c: Ctx) -> bytes:
    b = c.bundle("garbage", sign=False)
    (b / "model.onnx").write_bytes(b"\x08\x07not an onnx model")
    return pack_bundle(c.finish(b))


def another_model_under_the_test_vectors(c: Ctx) -> bytes:
    """model.onnx replaced by another GRU of the same shapes: the replayed test vectors give it away."""
    b = c.bundle("swapped", sign=False)
    p = rms_params(2)
    other = GruParams(p.mean, p.std, [w + 0.5 for w in p.w_ih], p.w_hh, p.b_ih, p.b_hh, p.w_out, p.b_out)
    (b / "model.onnx").write_bytes(build_step_model(other))
    return pack_bundle(c.finish(b))


def card_of_a_newer_schema(c: Ctx) -> bytes:
    b = c.bundle("schema", sign=False)
    _edit_json(b / "card.json", lambda d: d.update(schema=99))
    return pack_bundle(c.finish(b))


def unknown_feature_spec(c: Ctx) -> bytes:
    b = c.bundle("spec", sign=False)
    _edit_json(b / "card.json", lambda d: d["feature_spec"].update(name="not-a-spec"))
    return pack_bundle(c.finish(b))


def state_shape_lies(c: Ctx) -> bytes:
    b = c.bundle("shape", sign=False)
    _edit_json(b / "card.json", lambda d: d.update(state_shape=[1, 7]))
    return pack_bundle(c.finish(b))


def _genuine_members(c: Ctx) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members of a genuine bundle (signed, or unsigned under allow_unsigned), to hide a trick among."""
    b = c.bundle("genuine-members", sign=c.trusted is not None)
    return [member(p.name, p.read_bytes()) for p in sorted(b.iterdir())]


def _archive(extra: list[tuple[tarfile.TarInfo, bytes]]) -> Callable[[Ctx], bytes]:
    return lambda c: tar_with(_genuine_members(c) + extra)


ESCAPE = "gruwatch-escaped"  # a file name nothing else creates: found anywhere after the test, it escaped

ATTACKS: dict[str, tuple[Callable[[Ctx], bytes], str, str]] = {
    # name: (build the archive, reason with trusted keys, reason with allow_unsigned and no keys)
    "model.onnx changed after signing": (model_changed_after_signing, "digest_mismatch", "digest_mismatch"),
    "card.json changed after signing": (card_changed_after_signing, "digest_mismatch", "digest_mismatch"),
    "test_vectors.json changed after signing": (vectors_changed_after_signing, "digest_mismatch", "digest_mismatch"),
    "a file added after signing": (file_added_after_signing, "digest_mismatch", "digest_mismatch"),
    "a signed file removed": (file_removed_after_signing, "missing_file", "missing_file"),
    "card edited, signed digests rehashed": (digests_rehashed, "bad_signature", "untrusted_key"),
    "signature bytes flipped": (signature_bytes_flipped, "bad_signature", "untrusted_key"),
    "signature.json not JSON": (signature_not_json, "bad_signature", "bad_signature"),
    "signature algorithm rsa-pss": (signature_other_algorithm, "bad_signature", "bad_signature"),
    "signed by an unknown key (never alarms)": (signed_by_an_unknown_key, "untrusted_key", "untrusted_key"),
    "forged signature, key id 0000000000000000": (forged_key_id_zero, "untrusted_key", "untrusted_key"),
    "forged signature claiming the signer's key id": (forged_with_the_trusted_key_id, "bad_signature", "untrusted_key"),
    "a genuine signature on another model": (signature_from_another_bundle, "digest_mismatch", "digest_mismatch"),
    "unsigned bundle": (unsigned_bundle, "unsigned", ""),  # "": what allow_unsigned admits
    "rollback to an older bundle": (rollback_to_an_older_bundle, "rollback", "rollback"),
    "card bound to other agents": (bound_to_other_agents, "wrong_agent", "wrong_agent"),
    "garbage model.onnx, signed": (garbage_model_signed, "bad_model", "bad_model"),
    "another model under the test vectors, signed": (another_model_under_the_test_vectors, "test_vectors", "test_vectors"),
    "card schema 99, signed": (card_of_a_newer_schema, "bad_card", "bad_card"),
    "unknown feature spec, signed": (unknown_feature_spec, "feature_spec", "feature_spec"),
    "card state shape not the model's, signed": (state_shape_lies, "shape", "shape"),
    "member ../NAME": (_archive([member(f"../{ESCAPE}")]), "bad_archive", "bad_archive"),
    "member with an absolute path": (_archive([member(f"/tmp/{ESCAPE}")]), "bad_archive", "bad_archive"),
    "symlink member": (_archive([member(ESCAPE, kind=tarfile.SYMTYPE, link="/etc/passwd")]), "bad_archive", "bad_archive"),
    "hardlink member": (_archive([member(ESCAPE, kind=tarfile.LNKTYPE, link="card.json")]), "bad_archive", "bad_archive"),
    "fifo member": (_archive([member(ESCAPE, kind=tarfile.FIFOTYPE)]), "bad_archive", "bad_archive"),
    "device member": (_archive([member(ESCAPE, kind=tarfile.CHRTYPE)]), "bad_archive", "bad_archive"),
    "folder member": (_archive([member("sub", kind=tarfile.DIRTYPE)]), "bad_archive", "bad_archive"),
    "member in a subfolder": (_archive([member(f"sub/{ESCAPE}")]), "bad_archive", "bad_archive"),
    "card.json twice (a second, evil one)": (_archive([member("card.json", b"{}")]), "bad_archive", "bad_archive"),
    "hidden member": (_archive([member(f".{ESCAPE}")]), "bad_archive", "bad_archive"),
    f"{MAX_FILES + 1}+ members": (_archive([member(f"f{i}") for i in range(MAX_FILES)]), "bad_archive", "bad_archive"),
    "archive over 64 MiB": (_archive([member("padding.bin", bytes(MAX_BUNDLE_BYTES))]), "bad_archive", "bad_archive"),
    "not a tar": (lambda c: os.urandom(4096), "bad_archive", "bad_archive"),
    "empty archive": (lambda c: tar_with([]), "bad_archive", "bad_archive"),
}  # fmt: skip

SETTINGS = ("trusted_keys", "allow_unsigned")


def expected(setting: str, force: bool) -> dict[str, str]:
    """Each attack's reason in this setting; left out: what the setting or --force admits on purpose
    (an unsigned bundle under allow_unsigned, an older bundle under --force)."""
    out = {}
    for name, (_, with_keys, unsigned_ok) in ATTACKS.items():
        reason = with_keys if setting == "trusted_keys" else unsigned_ok
        if reason and not (force and reason == "rollback"):
            out[name] = reason
    return out


def _escaped(root: Path) -> list[str]:
    hits = [str(p) for p in root.rglob(f"*{ESCAPE}*")]
    return hits + [f"/tmp/{ESCAPE}"] * Path(f"/tmp/{ESCAPE}").exists()


@pytest.mark.parametrize("force", [False, True], ids=["deploy", "deploy--force"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_every_bundle_attack_is_refused_under_every_setting(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path, setting: str, force: bool
) -> None:
    forger, _ = generate_keypair(tmp_path / "forger")
    trusted = models.key if setting == "trusted_keys" else None
    serving = make_bundle(tmp_path / "serving", trusted, version="serving", created=SERVING_CREATED)
    keys: dict[str, Any] = (
        {"trusted_keys": [models.pub]} if trusted else {"trusted_keys": [], "allow_unsigned": True}
    )
    (tmp_path / "agent").mkdir()
    settings = agent_settings(
        broker, topic_prefix, models, tmp_path / "agent" / "a.db", model=serving, **keys
    )
    ctx = Ctx(tmp_path / "attacks", trusted, models, forger)
    ctx.root.mkdir()
    kw: dict[str, Any] = {"broker": broker.url, "agent": settings.agent_id, "prefix": topic_prefix}
    want = expected(setting, force)
    got: dict[str, Any] = {}
    sub = Subscriber(broker, topic_prefix)
    pub = mqtt_client(broker)
    try:
        with running(settings) as agent:
            for name in want:
                answer = deploy_archive(ATTACKS[name][0](ctx), force=force, timeout_s=60, **kw)
                got[name] = answer["reason"] if not answer["accepted"] else f"ACCEPTED {answer}"
                assert answer["serving"] == "serving", (name, answer)
                assert agent.model_version == "serving", name
            unpacked = sorted(p.name for p in models_dir(settings).glob("*"))
            samples = (0.1 * np.random.default_rng(1).standard_normal(2560)).astype(np.float32)
            topic = vibration_topic(topic_prefix, "m", "s0")
            publish(pub, topic, encode_binary(Window(1, 10**18, 25600.0, 1500.0, samples)))
            assert sub.wait(lambda: len(sub.health) >= 1, 30), "the old model scored nothing"
            good = ctx.bundle("good", agents=[settings.agent_id, "gw-other"])  # as old as the one served
            taken = deploy_archive(pack_bundle(good), force=force, timeout_s=60, **kw)
    finally:
        close_client(pub)
        sub.close()
    print(
        f"\nFIGURE bundle attacks setting={setting} force={force}: {len(want)} sent, "
        f"{sum(got.get(n) == r for n, r in want.items())} refused with the expected reason"
    )
    assert got == want
    assert [h.model for h in sub.health] == ["serving"]
    assert unpacked == []  # every refused archive was removed again
    assert _escaped(tmp_path) == []
    assert (taken["accepted"], taken["model"]) == (True, "attack-good"), taken


# ------------------------------------------- the third setting, and what --force is for


def test_allow_unsigned_never_goes_with_trusted_keys(models: Models, tmp_path: Path) -> None:
    """The one other combination of the two settings is refused before an agent starts."""
    from edge_agent.errors import SettingsError
    from edge_agent.settings import load_settings

    with pytest.raises(SettingsError, match="exclude each other"):
        load_settings(
            None, broker="mqtt://h", agent_id="a", model=models.v1, store=tmp_path / "a.db",
            trusted_keys=[models.pub], allow_unsigned=True,
        )  # fmt: skip


def test_deploy_refuses_an_older_bundle_and_force_takes_it(
    broker: Broker, topic_prefix: str, models: Models, tmp_path: Path
) -> None:
    """An older bundle (the one rollback the table leaves out under --force) is taken only when forced."""
    from edge_agent.model_swap import deploy_bundle

    newest = make_bundle(tmp_path / "v9", models.key, version="v9", created="2027-01-01T00:00:00+00:00")
    settings = agent_settings(broker, topic_prefix, models, tmp_path / "a.db", model=newest)
    with running(settings) as agent:
        kw: dict[str, Any] = {
            "broker": broker.url,
            "agent": settings.agent_id,
            "prefix": topic_prefix,
            "timeout_s": 30,
        }
        refused = deploy_bundle(models.v1, **kw)
        assert (refused["accepted"], refused["reason"], refused["serving"]) == (False, "rollback", "v9")
        forced = deploy_bundle(models.v1, force=True, **kw)
        assert (forced["accepted"], forced["serving"]) == (True, "rms-v1")
        assert agent.model_version == "rms-v1"
