"""Property-based tests for edge_agent.protocol: round trips, and no untrusted input escapes ProtocolError."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_agent.errors import PROTOCOL_REASONS, ProtocolError
from edge_agent.protocol import (
    HEADER_SIZE,
    ID_PATTERN,
    MAX_JSON_DEPTH,
    STATES,
    Alert,
    Health,
    SensorTopic,
    Window,
    alert_topic,
    decode_alert,
    decode_health,
    decode_vibration,
    encode_alert,
    encode_binary,
    encode_health,
    encode_json,
    health_topic,
    parse_sensor_topic,
    validate_id,
    vibration_topic,
)

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
F32_MAX = float(np.finfo(np.float32).max)

# ----------------------------------------------------------------------------------------- strategies

seqs = st.integers(0, 2**32 - 1)
timestamps = st.integers(-(2**63), 2**63 - 1)
finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
sample_arrays = hnp.arrays(np.float32, st.integers(1, 200), elements=finite_f32)
ids = st.from_regex(ID_PATTERN, fullmatch=True)
machine_ids = ids.filter(lambda s: s != "_agents")
prefixes = st.lists(ids, min_size=1, max_size=3).map("/".join)


@st.composite
def binary_windows(draw: st.DrawFn) -> Window:
    """Windows whose header floats are already float32 values, so binary round trips are exact."""
    fs = draw(st.floats(min_value=0.0009765625, max_value=1e7, width=32))
    rpm = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e6, width=32)))
    return Window(draw(seqs), draw(timestamps), fs, rpm, draw(sample_arrays))


@st.composite
def json_windows(draw: st.DrawFn) -> Window:
    fs = draw(st.floats(min_value=1e-6, max_value=1e12))
    rpm = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e9)))
    return Window(draw(seqs), draw(timestamps), fs, rpm, draw(sample_arrays))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _header_scale(payload: bytes) -> float:
    (scale,) = struct.unpack_from("<f", payload, 20)
    return float(scale)


def _bits(x: np.ndarray) -> list[int]:
    bits: list[int] = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).tolist()
    return bits


# ------------------------------------------------------------------------------------------ round trips


@MANY
@given(binary_windows())
def test_binary_float32_round_trip_is_bit_exact(w: Window) -> None:
    payload = encode_binary(w)
    assert len(payload) == HEADER_SIZE + 4 * w.samples.size
    back = decode_vibration(payload)
    assert (back.seq, back.ts_ns, back.fs, back.rpm) == (w.seq, w.ts_ns, w.fs, w.rpm)
    assert _bits(back.samples) == _bits(w.samples)
    assert back.samples.dtype == np.float32
    assert not back.samples.flags.writeable


def _assert_int16_close(x: np.ndarray, decoded: np.ndarray, scale: float) -> None:
    x64 = x.astype(np.float64)
    err = np.abs(decoded.astype(np.float64) - x64)
    # scale/2 from rounding to a count; the float32 product adds at most one rounding of the result.
    bound = scale / 2 + np.abs(x64) * 2.0**-23 + 2.0**-149
    assert np.all(err <= bound), float((err - bound).max())


@MANY
@given(binary_windows())
def test_binary_int16_auto_scale_is_within_half_a_count(w: Window) -> None:
    payload = encode_binary(w, dtype="int16")
    assert len(payload) == HEADER_SIZE + 2 * w.samples.size
    scale = _header_scale(payload)
    assert math.isfinite(scale)
    assert scale > 0
    back = decode_vibration(payload)
    assert (back.seq, back.ts_ns, back.fs, back.rpm) == (w.seq, w.ts_ns, w.fs, w.rpm)
    assert np.all(np.isfinite(back.samples))
    _assert_int16_close(w.samples, back.samples, scale)


@MANY
@given(binary_windows(), st.floats(min_value=1e-30, max_value=1e30))
def test_binary_int16_given_scale_rounds_or_clips(w: Window, scale: float) -> None:
    payload = encode_binary(w, dtype="int16", scale=scale)
    s32 = _header_scale(payload)
    assert s32 == float(np.float32(scale))
    counts = np.frombuffer(payload, "<i2", offset=HEADER_SIZE).astype(np.float64)
    x = w.samples.astype(np.float64)
    inside = np.abs(x / s32) <= 32767
    assert np.array_equal(counts[inside], np.rint(x[inside] / s32))
    assert np.all(counts[~inside] == np.where(x[~inside] > 0, 32767, -32768))
    back = decode_vibration(payload).samples
    _assert_int16_close(w.samples[inside], back[inside], s32)


@MANY
@given(json_windows())
def test_json_round_trip_is_exact(w: Window) -> None:
    back = decode_vibration(encode_json(w))
    assert (back.seq, back.ts_ns, back.fs, back.rpm) == (w.seq, w.ts_ns, w.fs, w.rpm)
    assert _bits(back.samples) == _bits(w.samples)


@FEW
@given(json_windows(), st.dictionaries(st.text(max_size=8), json_values, max_size=3))
def test_json_windows_ignore_unknown_fields(w: Window, extra: dict[str, Any]) -> None:
    assume(_depth(extra) < MAX_JSON_DEPTH)
    doc = json.loads(encode_json(w))
    doc = {**{k: v for k, v in extra.items() if k not in doc}, **doc}
    back = decode_vibration(json.dumps(doc, indent=1).encode())
    assert back == w


# ------------------------------------------------------------------------------ nothing escapes


def _check_any(decode: Callable[[Any], object], payload: Any) -> object | None:
    """Decode; return the result, or None after checking the error is a ProtocolError with a reason."""
    try:
        return decode(payload)
    except ProtocolError as exc:
        error = exc
    assert error.reason in PROTOCOL_REASONS
    return None


def _check_vibration(payload: bytes) -> Window | None:
    w = _check_any(decode_vibration, payload)
    if w is not None:
        assert isinstance(w, Window)
        assert 0 <= w.seq < 2**32
        assert -(2**63) <= w.ts_ns < 2**63
        assert math.isfinite(w.fs)
        assert w.fs > 0
        assert math.isfinite(w.rpm)
        assert w.rpm >= 0
        assert w.samples.dtype == np.float32
        assert w.samples.ndim == 1
        assert w.samples.size >= 1
        assert np.all(np.isfinite(w.samples))
        assert not w.samples.flags.writeable
    return w


def _check_all_decoders(payload: bytes) -> None:
    _check_vibration(payload)
    h = _check_any(decode_health, payload)
    if h is not None:
        assert isinstance(h, Health)
        assert 0.0 <= h.score <= 1.0
        assert h.state in STATES
    a = _check_any(decode_alert, payload)
    if a is not None:
        assert isinstance(a, Alert)
        assert a.previous_state in STATES


@MANY
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_escape(payload: bytes) -> None:
    _check_all_decoders(payload)


@MANY
@given(st.sampled_from([b"GW\x01\x01", b"GW\x01\x02", b"GW"]), st.binary(max_size=200))
def test_arbitrary_bytes_after_the_magic_never_escape(prefix: bytes, rest: bytes) -> None:
    _check_vibration(prefix + rest)


@MANY
@given(
    st.integers(0, 3),
    st.integers(0, 3),
    st.floats(width=32),
    st.floats(width=32),
    st.floats(width=32),
    st.integers(0, 40),
    st.binary(max_size=100),
)
def test_fuzzed_headers_never_escape(
    version: int, dtype: int, fs: float, scale: float, rpm: float, n: int, body: bytes
) -> None:
    header = struct.pack("<2sBBIqfffI", b"GW", version, dtype, 1, 2, fs, scale, rpm, n)
    w = _check_vibration(header + body)
    if w is not None:
        assert len(body) == n * (2 if dtype == 1 else 4)


@MANY
@given(json_values)
def test_arbitrary_json_never_escapes(value: Any) -> None:
    _check_all_decoders(json.dumps(value).encode())
    if isinstance(value, dict):
        _check_all_decoders(json.dumps({"seq": 1, "ts": 2, "fs": 3.0, **value}).encode())


@MANY
@given(st.text(alphabet='{}[]":,.-+0123456789eEtrufalsnNIinfy \\\n', max_size=200))
def test_json_ish_text_never_escapes(text: str) -> None:
    _check_all_decoders(text.encode())
    _check_all_decoders(("{" + text).encode())


@st.composite
def mutations(draw: st.DrawFn, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i:]
    return bytes(data)


@MANY
@given(st.data(), binary_windows(), st.sampled_from(["float32", "int16", "json"]))
def test_mutated_valid_payloads_never_escape(data: st.DataObject, w: Window, encoding: str) -> None:
    payload = encode_json(w) if encoding == "json" else encode_binary(w, dtype=encoding)  # type: ignore[arg-type]
    _check_vibration(data.draw(mutations(payload)))


@MANY
@given(
    st.data(),
    machine_ids,
    ids,
    seqs,
    timestamps,
    st.floats(0.0, 1.0),
    st.sampled_from(STATES),
    st.text(max_size=20),
)
def test_mutated_health_and_alerts_never_escape(
    data: st.DataObject, machine: str, sensor: str, seq: int, ts: int, score: float, state: Any, model: str
) -> None:
    health = encode_health(Health(machine, sensor, seq, ts, score, state, model))
    alert = encode_alert(Alert(machine, sensor, seq, ts, state, "ok", score, model, "why"))
    _check_all_decoders(data.draw(mutations(health)))
    _check_all_decoders(data.draw(mutations(alert)))


@settings(max_examples=15, deadline=None)
@given(
    st.integers(MAX_JSON_DEPTH + 1, 100_000),
    st.sampled_from([b"[", b"{", b'{"a":', b'[{"a":']),
    st.sampled_from([b"", b'{"x":', b'{"s":"]]]]}}}}","x":', b'{"s":"\\"]]]","x":']),
)
def test_deep_nesting_never_escapes(depth: int, opener: bytes, lead: bytes) -> None:
    payload = lead + opener * depth
    for decode in (decode_vibration, decode_health, decode_alert):
        # Only the vibration decoder looks at the first byte before parsing: a top-level array is no window.
        top_level_array = decode is decode_vibration and payload.startswith(b"[")
        with pytest.raises(ProtocolError) as info:
            decode(payload)
        assert info.value.reason == ("bad_magic" if top_level_array else "too_large")


def test_hundred_thousand_deep_arrays_inside_a_window() -> None:
    depth = 100_000
    payload = b'{"seq":1,"ts":2,"fs":3,"samples":' + b"[" * depth + b"1" + b"]" * depth + b"}"
    for decode in (decode_vibration, decode_health, decode_alert):
        with pytest.raises(ProtocolError) as info:
            decode(payload)
        assert info.value.reason == "too_large"


# ------------------------------------------------------------------------------- health and alerts


@MANY
@given(
    machine_ids,
    ids,
    seqs,
    timestamps,
    st.floats(0.0, 1.0),
    st.sampled_from(STATES),
    st.text(max_size=30),
    st.dictionaries(
        st.text(max_size=10).filter(
            lambda k: k not in {"machine", "sensor", "seq", "ts", "score", "state", "model"}
        ),
        json_values,
        max_size=4,
    ),
)
def test_health_round_trip(
    machine: str,
    sensor: str,
    seq: int,
    ts: int,
    score: float,
    state: Any,
    model: str,
    extra: dict[str, Any],
) -> None:
    assume(_depth(extra) < MAX_JSON_DEPTH)
    h = Health(machine, sensor, seq, ts, score, state, model, extra)
    assert decode_health(encode_health(h)) == h


@MANY
@given(
    machine_ids,
    ids,
    seqs,
    timestamps,
    st.sampled_from(STATES),
    st.sampled_from(STATES),
    st.floats(0.0, 1.0),
    st.text(max_size=30),
    st.text(max_size=60),
)
def test_alert_round_trip(
    machine: str,
    sensor: str,
    seq: int,
    ts: int,
    state: Any,
    previous: Any,
    score: float,
    model: str,
    reason: str,
) -> None:
    a = Alert(machine, sensor, seq, ts, state, previous, score, model, reason)
    assert decode_alert(encode_alert(a)) == a


# ------------------------------------------------------------------------------------------- topics


@MANY
@given(prefixes, machine_ids, ids)
def test_topics_round_trip(prefix: str, machine: str, sensor: str) -> None:
    for build, kind in ((vibration_topic, "vibration"), (health_topic, "health"), (alert_topic, "alert")):
        assert parse_sensor_topic(build(prefix, machine, sensor), prefix) == SensorTopic(
            machine, sensor, kind
        )


@MANY
@given(st.text(max_size=80))
def test_arbitrary_ids_and_topics_never_escape(text: str) -> None:
    is_id = 1 <= len(text) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in text)
    if is_id:
        assert validate_id(text) == text
    else:
        with pytest.raises(ProtocolError, match=r"^bad_id"):
            validate_id(text)
    parsed = _check_any(lambda t: parse_sensor_topic(t, "gruwatch"), text)
    if parsed is not None:
        assert isinstance(parsed, SensorTopic)
        assert text == f"gruwatch/{parsed.machine}/{parsed.sensor}/{parsed.kind}"
