"""The card's `trained_on` (edge_agent.trained_on): read and checked at load, enforced by WindowRules.

The end-to-end version, through a real broker, is in test_reliability_input.py (issue 14, point 8).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from edge_agent.bundle import load_bundle
from edge_agent.errors import BundleError, ProtocolError
from edge_agent.features import DEFAULT_SPEC
from edge_agent.protocol import Window, encode_binary
from edge_agent.trained_on import TrainedOn
from edge_agent.window_rules import WindowRules
from tests.edge_agent.agent_testing import make_bundle

FEMTO: dict[str, Any] = {
    "sample_rates_hz": [25600.0],
    "window_samples": [2560, 2560],
    "rpm": [1500.0, 1800.0],
    "rms_g": [0.05, 4.0],
    "windows": 1000,
}


def _femto() -> TrainedOn:
    t = TrainedOn.from_card({"trained_on": FEMTO})
    assert t is not None
    return t


def test_a_card_without_trained_on_gives_none_and_one_with_it_round_trips() -> None:
    assert TrainedOn.from_card({"schema": 1}) is None
    t = _femto()
    assert t.to_dict() == FEMTO
    assert t.length_range == (1280, 5120)


@pytest.mark.parametrize(
    ("n", "fs", "rpm", "refused_for"),
    [
        (2560, 25600.0, 1800.0, None),
        (2560, 25600.0 * 1.0099, 1800.0, None),  # within ±1 %
        (2560, 25600.0 * 0.9901, 1800.0, None),
        (2560, 25600.0 * 1.0101, 1800.0, "sample rate"),
        (2048, 12000.0, 1797.0, "sample rate"),  # a CWRU window
        (2560, 48000.0, 1797.0, "sample rate"),
        (1280, 25600.0, 1800.0, None),  # half the trained length
        (5120, 25600.0, 1800.0, None),  # twice
        (1279, 25600.0, 1800.0, "samples"),
        (5121, 25600.0, 1800.0, "samples"),
        (2560, 25600.0, 1200.0, None),  # 1500 / 1.25
        (2560, 25600.0, 2250.0, None),  # 1800 × 1.25
        (2560, 25600.0, 1199.0, "rpm"),
        (2560, 25600.0, 2251.0, "rpm"),
        (2560, 25600.0, 0.0, None),  # speed unknown: not refused by this check
    ],
)
def test_what_a_femto_model_accepts(n: int, fs: float, rpm: float, refused_for: str | None) -> None:
    why = _femto().mismatch(n, fs, rpm)
    if refused_for is None:
        assert why is None
    else:
        assert why is not None
        assert refused_for in why, why


def test_two_trained_rates_accept_each_but_not_a_rate_between() -> None:
    t = TrainedOn.from_card({"trained_on": {**FEMTO, "sample_rates_hz": [48000.0, 12000.0]}})
    assert t is not None
    assert t.sample_rates_hz == (12000.0, 48000.0)
    assert t.mismatch(2560, 12000.0, 0.0) is None
    assert t.mismatch(2560, 48000.0, 0.0) is None
    assert "12000, 48000 Hz" in str(t.mismatch(2560, 25600.0, 0.0))


@pytest.mark.parametrize(
    "change",
    [
        {"sample_rates_hz": []},
        {"sample_rates_hz": [0.0]},
        {"sample_rates_hz": ["25600"]},
        {"window_samples": [2560]},
        {"window_samples": [2560.0, 2560.0]},
        {"window_samples": [4096, 2048]},
        {"window_samples": [0, 2048]},
        {"rpm": [1800.0, 1500.0]},
        {"rpm": [0.0, 1500.0]},
        {"rms_g": [-1.0, 2.0]},
        {"windows": -1},
    ],
)
def test_a_malformed_trained_on_is_a_bad_card(tmp_path: Path, change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="trained_on"):
        TrainedOn.from_card({"trained_on": {**FEMTO, **change}})
    bundle = make_bundle(tmp_path / "b", None, version="bad-1", trained_on=FEMTO)
    card = json.loads((bundle / "card.json").read_text())
    card["trained_on"].update(change)
    (bundle / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle, allow_unsigned=True)
    assert info.value.reason == "bad_card"
    assert "trained_on" in info.value.detail


def test_trained_on_is_covered_by_the_signature(tmp_path: Path) -> None:
    from edge_agent.bundle import generate_keypair

    key, pub = generate_keypair(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "b", key, version="femto-1", trained_on=FEMTO)
    assert load_bundle(bundle, trusted_keys=[pub]).trained_on == _femto()
    card = (bundle / "card.json").read_text().replace("25600.0", "12000.0")  # widen it after signing
    (bundle / "card.json").write_text(card)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle, trusted_keys=[pub])
    assert info.value.reason == "digest_mismatch"


def _payload(n: int, fs: float, rpm: float = 1600.0) -> bytes:
    x = (0.1 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    return encode_binary(Window(1, 1_800_000_000 * 10**9, fs, rpm, x))


def test_window_rules_refuse_what_the_card_excludes_as_model_mismatch() -> None:
    rules = WindowRules(max_samples=65536, min_samples=256, max_fs_hz=1e6, max_rpm=1e5, max_abs_g=1000.0)
    with capture_logs() as logs:
        rules.use_spec(DEFAULT_SPEC, "femto-1", _femto())
    assert not [e for e in logs if e["event"] == "model_trained_on_unknown"]
    assert rules.window(_payload(2560, 25600.0)).samples.size == 2560
    for payload, says in [
        (_payload(2048, 12000.0), "sample rate fs=12000 Hz is not one the model was trained on (25600 Hz"),
        (_payload(640, 25600.0), "640 samples: the model was trained on windows of 2560..2560"),
        (_payload(2560, 25600.0, rpm=6000.0), "rpm=6000"),
    ]:
        with pytest.raises(ProtocolError) as info:
            rules.window(payload)
        assert info.value.reason == "model_mismatch"
        assert info.value.detail.startswith("model femto-1: ")
        assert says in info.value.detail


def test_an_old_card_falls_back_to_the_spec_check_and_the_log_says_so_once() -> None:
    rules = WindowRules(max_samples=65536, min_samples=256, max_fs_hz=1e6, max_rpm=1e5, max_abs_g=1000.0)
    with capture_logs() as logs:
        rules.use_spec(DEFAULT_SPEC, "old-1", None)
        for _ in range(5):
            assert rules.window(_payload(2048, 12000.0)).fs == 12000.0  # above the spec's 10 kHz
    said = [e for e in logs if e["event"] == "model_trained_on_unknown"]
    assert len(said) == 1
    assert said[0]["model"] == "old-1"
    with pytest.raises(ProtocolError) as info:
        rules.window(_payload(2048, 8000.0))
    assert info.value.reason == "model_mismatch"
    assert "needs >= 10000 Hz" in info.value.detail


def test_bundle_verify_says_what_the_model_was_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.bundle_cli import bundle_main

    femto = make_bundle(tmp_path / "femto", None, version="femto-1", trained_on=FEMTO)
    old = make_bundle(tmp_path / "old", None, version="old-1")
    assert bundle_main(["verify", str(femto), "--allow-unsigned"]) == 0
    assert bundle_main(["verify", str(old), "--allow-unsigned"]) == 0
    out = capsys.readouterr().out
    assert "trained on 25600 Hz, 2560..2560 samples, 1500..1800 rpm (accepts ±1 % in rate, 1280..5120" in out
    assert "trained on not recorded" in out
