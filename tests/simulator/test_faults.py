"""Fault injection as pure logic: exact bookkeeping, rates, determinism, and payloads the agent rejects."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ProtocolError
from edge_agent.protocol import Window, decode_vibration, encode_binary, encode_json
from simulator.faults import (
    CORRUPT_KINDS,
    FaultConfig,
    FaultInjector,
    corrupt_payload,
    encode_with_nan,
)

N_SAMPLES = 16


def _window(sensor: int, k: int, samples: np.ndarray) -> Window:
    return Window(seq=k, ts_ns=1_000_000_000 * k + sensor, fs=1000.0, rpm=600.0, samples=samples)


def _samples(sensor: int, k: int) -> np.ndarray:
    return np.random.default_rng([sensor, k]).standard_normal(N_SAMPLES).astype(np.float32)


def _encoder(sensor: int, k: int, encoding: str = "binary"):
    def encode(x: np.ndarray, has_nan: bool) -> bytes:
        w = _window(sensor, k, x)
        if has_nan:
            return encode_with_nan(w, encoding)  # type: ignore[arg-type]
        return encode_json(w) if encoding == "json" else encode_binary(w)

    return encode


def _run(
    config: FaultConfig, seed: int, sensors: int, windows: int, *, order: str = "interleaved"
) -> tuple[FaultInjector, list[list[bytes]]]:
    """Feed every sensor's windows through an injector; return it and each sensor's published payloads."""
    inj = FaultInjector(config, seed, [windows] * sensors)
    out: list[list[bytes]] = [[] for _ in range(sensors)]
    schedule = (
        [(i, k) for k in range(windows) for i in range(sensors)]
        if order == "interleaved"
        else [(i, k) for i in reversed(range(sensors)) for k in range(windows)]
    )
    done: set[int] = set()
    for i, k in schedule:
        if i in done:
            continue
        if inj.is_silent(i, k):
            out[i] += inj.finish(i, silent=True)
            done.add(i)
            continue
        out[i] += inj.messages(i, k, _samples(i, k), _encoder(i, k))
        if k == windows - 1:
            out[i] += inj.finish(i)
    return inj, out


def _seqs(payloads: list[bytes]) -> list[int]:
    return [decode_vibration(p).seq for p in payloads]


def _within(observed: int, n: int, p: float, *, sigmas: float = 5.0, bias: float = 0.0) -> bool:
    """observed ≈ n·p within `sigmas` binomial standard deviations (plus a known relative bias)."""
    sd = math.sqrt(n * p * (1 - p))
    return abs(observed - n * p) <= sigmas * sd + bias * n * p + 1


def test_config_rejects_rates_outside_0_1_and_overlapping_delivery_faults() -> None:
    with pytest.raises(ValueError, match="outside"):
        FaultConfig(drop=1.5)
    with pytest.raises(ValueError, match="outside"):
        FaultConfig(corrupt=-0.1)
    with pytest.raises(ValueError, match="exceed 1"):
        FaultConfig(drop=0.5, duplicate=0.4, reorder=0.2)
    with pytest.raises(ValueError, match="at least 1"):
        FaultConfig(nan_burst=0.1, nan_burst_length=0)
    assert not FaultConfig().active
    assert FaultConfig(silent=0.1).active


def test_no_faults_publishes_every_window_once_in_order_unchanged() -> None:
    inj, out = _run(FaultConfig(), seed=3, sensors=3, windows=50)
    for i, payloads in enumerate(out):
        assert payloads == [encode_binary(_window(i, k, _samples(i, k))) for k in range(50)]
    c = inj.counters
    assert (c.windows, c.messages) == (150, 150)
    assert c.dropped == c.duplicated == c.reordered == c.corrupted == c.nan_windows == 0
    assert all(inj.plan(i).skew_ns == 0 and inj.plan(i).silent_after is None for i in range(3))


def test_same_seed_same_faults_whatever_the_interleaving_and_other_seeds_differ() -> None:
    config = FaultConfig(
        drop=0.1, duplicate=0.1, reorder=0.1, corrupt=0.05, nan_burst=0.05, silent=0.5, clock_skew=0.5
    )
    a, out_a = _run(config, seed=11, sensors=4, windows=200, order="interleaved")
    b, out_b = _run(config, seed=11, sensors=4, windows=200, order="sensor by sensor")
    assert out_a == out_b
    assert a.counters == b.counters
    assert [a.plan(i) for i in range(4)] == [b.plan(i) for i in range(4)]
    _c, out_c = _run(config, seed=12, sensors=4, windows=200)
    assert out_c != out_a


def test_delivery_faults_bookkeeping_is_exact_and_rates_match() -> None:
    p = 0.1
    sensors, windows = 10, 2000
    inj, out = _run(FaultConfig(drop=p, duplicate=p, reorder=p), seed=5, sensors=sensors, windows=windows)
    c = inj.counters
    dups = inversions = missing = 0
    for payloads in out:
        seqs = _seqs(payloads)
        seen: set[int] = set()
        high = -1
        for s in seqs:
            if s in seen:
                dups += 1
            elif s < high:
                inversions += 1
            seen.add(s)
            high = max(high, s)
        missing += windows - len(seen)
        # a duplicate is always published back to back
        for j in range(1, len(seqs)):
            if seqs[j] in seqs[:j]:
                assert seqs[j - 1] == seqs[j]
    assert c.windows == sensors * windows
    assert c.messages == sum(map(len, out))
    assert (missing, dups, inversions) == (c.dropped, c.duplicated, c.reordered)
    n = c.windows
    assert _within(c.dropped, n, p)
    assert _within(c.duplicated, n, p)
    # A window chosen for reordering while another is held swaps with it instead: about p² fewer swaps.
    assert _within(c.reordered, n, p, bias=p)


def test_reordered_window_follows_exactly_one_later_window() -> None:
    inj, out = _run(FaultConfig(reorder=0.3), seed=2, sensors=1, windows=500)
    seqs = _seqs(out[0])
    assert sorted(seqs) == list(range(500))
    late = [j for j in range(1, len(seqs)) if seqs[j] < seqs[j - 1]]
    assert len(late) == inj.counters.reordered > 0
    for j in late:
        assert seqs[j - 1] == seqs[j] + 1  # swapped with its successor


def test_nan_bursts_are_consecutive_and_rejected_by_the_decoder() -> None:
    length, p = 4, 0.02
    inj, out = _run(FaultConfig(nan_burst=p, nan_burst_length=length), seed=9, sensors=4, windows=3000)
    c = inj.counters
    nan_seqs: list[list[int]] = []
    for payloads in out:
        seqs = []
        for k, payload in enumerate(payloads):
            if np.isnan(np.frombuffer(payload[32:], "<f4")).any():
                with pytest.raises(ProtocolError) as info:
                    decode_vibration(payload)
                assert info.value.reason == "nan"
                seqs.append(k)
            else:
                w = decode_vibration(payload)
                assert w.seq == k
                assert np.isfinite(w.samples).all()
        nan_seqs.append(seqs)
    assert sum(map(len, nan_seqs)) == c.nan_windows
    # runs of consecutive NaN windows: each burst is `length` long (bursts may touch, and the last may be cut)
    bursts = 0
    for seqs in nan_seqs:
        runs: list[int] = []
        for j, s in enumerate(seqs):
            if j and s == seqs[j - 1] + 1:
                runs[-1] += 1
            else:
                runs.append(1)
        assert all(r % length == 0 for r in runs[:-1])
        bursts += sum(math.ceil(r / length) for r in runs)
    assert bursts == c.nan_bursts
    chances = c.windows - (c.nan_windows - c.nan_bursts)  # windows not already inside a burst
    assert _within(c.nan_bursts, chances, p)


@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_corrupted_payloads_are_rejected_with_the_reason_of_their_kind(encoding: str) -> None:
    inj = FaultInjector(FaultConfig(corrupt=0.3), seed=4, planned_windows=[2000])
    rejected: Counter[str] = Counter()
    decoded = 0
    for k in range(2000):
        for payload in inj.messages(0, k, _samples(0, k), _encoder(0, k, encoding)):
            try:
                decode_vibration(payload)
                decoded += 1
            except ProtocolError as exc:
                rejected[exc.reason] += 1
    c = inj.counters
    assert decoded + c.corrupted == 2000
    assert _within(c.corrupted, 2000, 0.3)
    assert all(c.corrupt_kinds[k] > 0 for k in CORRUPT_KINDS)
    if encoding == "binary":
        assert rejected == {
            "bad_magic": c.corrupt_kinds["magic"],
            "truncated": c.corrupt_kinds["truncate"],
            "trailing": c.corrupt_kinds["trailing"],
        }
    else:
        assert rejected == {
            "bad_magic": c.corrupt_kinds["magic"],
            "bad_json": c.corrupt_kinds["truncate"] + c.corrupt_kinds["trailing"],
        }


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    seq=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(CORRUPT_KINDS),
    u=st.floats(0.0, 1.0, exclude_max=True),
    encoding=st.sampled_from(["float32", "int16", "json"]),
)
def test_every_corrupted_payload_is_rejected(n: int, seq: int, kind: str, u: float, encoding: str) -> None:
    w = Window(seq, 123, 25600.0, 1500.0, np.linspace(-1, 1, n, dtype=np.float32))
    payload = encode_json(w) if encoding == "json" else encode_binary(w, dtype=encoding)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        decode_vibration(corrupt_payload(payload, kind, u))


def test_nan_payloads_carry_the_window_but_are_rejected() -> None:
    x = np.arange(8, dtype=np.float32)
    x[2:5] = np.nan
    w = Window(7, 99, 1000.0, 0.0, x)
    binary = encode_with_nan(w, "binary")
    assert binary[:2] == b"GW"
    assert len(binary) == 32 + 4 * 8
    assert np.array_equal(np.frombuffer(binary[32:], "<f4"), x, equal_nan=True)
    with pytest.raises(ProtocolError) as e1:
        decode_vibration(binary)
    assert e1.value.reason == "nan"
    text = encode_with_nan(w, "json")
    assert b"NaN" in text
    assert b'"seq":7' in text
    with pytest.raises(ProtocolError) as e2:
        decode_vibration(text)
    assert e2.value.reason == "bad_json"


def test_clock_skew_and_silence_are_per_sensor_and_at_their_rates() -> None:
    sensors, planned, max_s = 4000, 100, 20.0
    inj = FaultInjector(
        FaultConfig(clock_skew=0.3, clock_skew_max_s=max_s, silent=0.2), 1, [planned] * sensors
    )
    skews = np.array([inj.plan(i).skew_ns for i in range(sensors)])
    skewed = skews != 0
    assert skewed.sum() == inj.counters.skewed_sensors
    assert _within(int(skewed.sum()), sensors, 0.3)
    mags = np.abs(skews[skewed]) / 1e9
    assert mags.min() >= 0.1 * max_s - 1e-9
    assert mags.max() <= max_s + 1e-9
    assert 0.3 < (skews[skewed] > 0).mean() < 0.7  # both signs
    points = [inj.plan(i).silent_after for i in range(sensors)]
    silent = [p for p in points if p is not None]
    assert _within(len(silent), sensors, 0.2)
    assert all(1 <= p <= planned - 1 for p in silent)
    assert all(
        inj.is_silent(i, p) and not inj.is_silent(i, p - 1) for i, p in enumerate(points) if p is not None
    )
    # a run too short to fall silent part-way never does
    short = FaultInjector(FaultConfig(silent=1.0), 1, [1, 2])
    assert short.plan(0).silent_after is None
    assert short.plan(1).silent_after == 1
