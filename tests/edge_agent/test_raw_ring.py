"""Raw-sample retention (edge_agent.raw_ring): the sampled share, windows around a change, the bounded ring."""

from __future__ import annotations

import numpy as np

from edge_agent.raw_ring import RawRetention, RawRing, sampled


def test_raw_ring_is_bounded_per_sensor_and_in_bytes() -> None:
    x = np.zeros(10, np.float32)  # 40 bytes
    ring = RawRing(2, 5 * 40)
    for k in range(4):
        ring.add("a", 100 + k, k, x)
    assert len(ring) == 2
    assert ring.nbytes == 80
    for k in range(4):
        ring.add("b", 200 + k, k, x)
        ring.add("c", 300 + k, k, x)
    # Over 200 bytes, the oldest of any sensor went first (a's 102); per sensor, beyond two.
    assert ring.nbytes == 200
    assert len(ring) == 5
    assert [wid for wid, _ in ring.take("a", 4)] == [103]
    assert ring.take("a", 5) == []  # taken
    assert [wid for wid, _ in ring.take("b", 4)] == [202, 203]
    assert [wid for wid, _ in ring.take("c", 5)] == [303]  # 302 is 3 seqs before: too old
    assert ring.nbytes == 0
    assert len(ring) == 0


def test_sampled_is_a_deterministic_share() -> None:
    picks = [sampled("m/s", seq, 0.25) for seq in range(4000)]
    assert 0.2 < sum(picks) / len(picks) < 0.3
    assert picks == [sampled("m/s", seq, 0.25) for seq in range(4000)]  # the same after a restart
    assert not any(sampled("m/s", s, 0.0) for s in range(100))
    assert all(sampled("m/s", s, 1.0) for s in range(100))


def _samples(k: int) -> np.ndarray:
    return np.full(8, float(k), np.float32)


def test_windows_before_and_after_a_change_keep_their_samples_across_batches() -> None:
    policy = RawRetention(fraction=0.0, before=3, ring_bytes=1 << 20, max_sensors=10, after=2)
    # Batch 1: four ok windows, none kept; after the commit they wait in the ring.
    b1 = policy.batch()
    for k in range(4):
        b1.add("m/s", k, "ok", False, _samples(k))
    assert b1.raw == [None] * 4
    b1.committed(range(1000, 1004))
    # Batch 2: window 4 is ok (stored without samples), window 5 changes state.
    b2 = policy.batch()
    b2.add("m/s", 4, "ok", False, _samples(4))
    b2.add("m/s", 5, "warning", True, _samples(5))
    b2.add("m/s", 6, "ok", False, _samples(6))  # after the change: kept
    b2.add("m/s", 7, "ok", False, _samples(7))  # still after
    b2.add("m/s", 8, "ok", False, _samples(8))  # beyond `after`: not kept
    kept = [None if r is None else int(r[0]) for r in b2.raw]
    assert kept == [4, 5, 6, 7, None]  # 4 was in this batch, within `before` of the change
    # From the ring: windows 2 and 3 of batch 1 (within 3 seqs of 5); window 1 is too old.
    assert sorted(int(s[0]) for _, s in b2.attach) == [2, 3]
    b2.committed(range(2000, 2005))
    assert len(policy.ring) == 1  # only window 8 waits now


def test_warning_and_alarm_windows_always_keep_their_samples() -> None:
    b = RawRetention(fraction=0.0, before=0, ring_bytes=1 << 20, max_sensors=10).batch()
    for state in ("ok", "warning", "alarm"):
        b.add("m/s", 1, state, False, _samples(1))
    assert [r is not None for r in b.raw] == [False, True, True]
    b.committed(range(3))  # before=0: no ring
