"""The signed reset-baseline command is authenticated like a model deploy: unsigned or forged is refused."""

from __future__ import annotations

import json

import pytest

from edge_agent.baseline_command import CommandError, sign_reset, verify_reset
from edge_agent.signing import generate_keypair, load_private_key, load_public_keys


@pytest.fixture
def keys(tmp_path):  # type: ignore[no-untyped-def]
    priv, pub = generate_keypair(tmp_path / "trusted")
    other_priv, _ = generate_keypair(tmp_path / "other")
    return load_private_key(priv), load_public_keys([pub]), load_private_key(other_priv)


def test_a_signed_fresh_command_is_accepted_once(keys) -> None:  # type: ignore[no-untyped-def]
    priv, trusted, _ = keys
    payload = sign_reset("press7", "s0", priv, now=1000.0)
    seen: set[str] = set()
    cmd = verify_reset(payload, trusted, now=1010.0, seen_nonces=seen)
    assert (cmd.machine, cmd.sensor) == ("press7", "s0")
    assert cmd.key_id in trusted
    with pytest.raises(CommandError) as err:
        verify_reset(payload, trusted, now=1020.0, seen_nonces=seen)
    assert err.value.reason == "replayed"


def test_unsigned_forged_untrusted_and_stale_commands_are_refused(keys) -> None:  # type: ignore[no-untyped-def]
    priv, trusted, other = keys
    good = json.loads(sign_reset("press7", "s0", priv, now=1000.0))
    unsigned = {k: v for k, v in good.items() if k not in ("key_id", "signature")}
    forged = {**good, "sensor": "s1"}  # signature of another command
    cases = [
        (json.dumps(unsigned), "untrusted_key"),
        (json.dumps(forged), "bad_signature"),
        (sign_reset("press7", "s0", other, now=1000.0), "untrusted_key"),
        (json.dumps({**good, "signature": "!!"}), "bad_signature"),
        (b"not json", "malformed"),
        (json.dumps({**good, "command": "deploy"}), "malformed"),
    ]
    for payload, reason in cases:
        with pytest.raises(CommandError) as err:
            verify_reset(payload, trusted, now=1000.0)
        assert err.value.reason == reason, payload
    with pytest.raises(CommandError) as err:
        verify_reset(json.dumps(good), trusted, now=1000.0 + 3600)
    assert err.value.reason == "stale"
