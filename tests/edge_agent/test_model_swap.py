"""Model updates off the scoring path (edge_agent.model_swap): archives, a watched folder, state carry-over."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from edge_agent.bundle import pack_bundle
from edge_agent.model_swap import ModelSwapper, Offer, carry_states, result_payload
from edge_agent.scorer import Scorer
from tests.edge_agent.agent_testing import Models, make_bundle


def _swapper(models: Models, root: Path, **kw: object) -> ModelSwapper:
    return ModelSwapper(trusted_keys=[models.pub], allow_unsigned=False, models_dir=root / "models", **kw)  # type: ignore[arg-type]


def _take(s: ModelSwapper, n: int, timeout: float = 20.0) -> list[Offer]:
    out: list[Offer] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += s.take()
        time.sleep(0.02)
    return out


def test_an_archive_is_unpacked_verified_and_a_tampered_one_refused(models: Models, tmp_path: Path) -> None:
    v2 = make_bundle(tmp_path / "v2", models.key, version="swap-v2")
    bad = tmp_path / "bad"
    shutil.copytree(v2, bad)
    card = json.loads((bad / "card.json").read_text())
    card["thresholds"]["alarm"] = 1.0
    (bad / "card.json").write_text(json.dumps(card))
    s = _swapper(models, tmp_path)
    s.start()
    try:
        s.offer_archive(pack_bundle(v2))
        s.offer_archive(pack_bundle(bad))
        good, refused = _take(s, 2)
    finally:
        s.stop()
    assert good.accepted
    assert good.bundle is not None
    assert good.bundle.model_version == "swap-v2"
    assert good.path is not None
    assert good.path.parent == tmp_path / "models"
    assert not refused.accepted
    assert refused.reason is not None
    assert [p.name for p in (tmp_path / "models").iterdir()] == [good.path.name]  # the refused one is gone
    doc = json.loads(result_payload(refused, serving="rms-v1"))
    assert doc["accepted"] is False
    assert doc["serving"] == "rms-v1"
    assert doc["reason"] == refused.reason
    assert json.loads(result_payload(good, serving="swap-v2", states="kept"))["states"] == "kept"


def test_garbage_and_a_full_inbox_are_refused_with_a_reason(models: Models, tmp_path: Path) -> None:
    s = _swapper(models, tmp_path, max_pending=1)
    s.offer_archive(b"not a tar")
    s.offer_archive(b"again")  # the worker is not running: the inbox holds one
    (busy,) = s.take()
    assert busy.reason == "busy"
    s.start()
    try:
        (offer,) = _take(s, 1)
    finally:
        s.stop()
    assert not offer.accepted
    assert offer.reason


def test_a_changed_folder_is_offered_once_it_settles(models: Models, tmp_path: Path) -> None:
    watched = make_bundle(tmp_path / "served", models.key, version="folder-v1")
    s = _swapper(models, tmp_path, watch_path=watched, poll_s=0.1)
    s.start()
    try:
        time.sleep(0.3)
        assert s.take() == []  # unchanged: nothing offered
        shutil.rmtree(watched)
        make_bundle(watched, models.key, version="folder-v2")
        (offer,) = _take(s, 1)
    finally:
        s.stop()
    assert offer.source == "file"
    assert offer.bundle is not None
    assert offer.bundle.model_version == "folder-v2"


def test_states_carry_over_only_between_models_of_one_state_shape(models: Models, tmp_path: Path) -> None:
    old = Scorer.from_bundle(models.v1, trusted_keys=[models.pub])
    rng = np.random.default_rng(0)
    old.score_features(["a", "b"], rng.normal(size=(2, old.n_features)).astype(np.float32))
    same = Scorer.from_bundle(
        make_bundle(tmp_path / "same", models.key, version="v-same"), trusted_keys=[models.pub]
    )
    assert carry_states(old, same) == set()
    assert same.n_tracked == 2
    np.testing.assert_array_equal(same.export_states().h, old.export_states().h)
    wider = Scorer.from_bundle(
        make_bundle(tmp_path / "wide", models.key, version="v-wide", hidden=3), trusted_keys=[models.pub]
    )
    assert carry_states(old, wider) == {"a", "b"}
    assert wider.n_tracked == 0
