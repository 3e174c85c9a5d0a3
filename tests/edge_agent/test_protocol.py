"""Unit tests for edge_agent.protocol: byte layout, every rejection reason, topics, health and alerts."""

from __future__ import annotations

import doctest
import json
import struct

import numpy as np
import pytest

import edge_agent.protocol as protocol
from edge_agent.errors import PROTOCOL_REASONS, ProtocolError
from edge_agent.protocol import (
    HEADER_SIZE,
    MAGIC,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES,
    Alert,
    Health,
    SensorTopic,
    Window,
    agent_status_topic,
    alert_topic,
    decode_alert,
    decode_health,
    decode_vibration,
    encode_alert,
    encode_binary,
    encode_health,
    encode_json,
    health_topic,
    model_result_topic,
    model_topic,
    parse_sensor_topic,
    validate_id,
    vibration_subscription,
    vibration_topic,
)

TS = 1_700_000_000_123_456_789
# Written out independently of the module: magic, version, dtype, seq, ts, fs, scale, rpm, n.
LAYOUT = struct.Struct("<2sBBIqfffI")


def _window(n: int = 8, seed: int = 0) -> Window:
    x = np.random.default_rng(seed).normal(0.0, 0.3, n).astype(np.float32)
    return Window(seq=42, ts_ns=TS, fs=25600.0, rpm=1797.0, samples=x)


def _header(
    *,
    magic: bytes = MAGIC,
    version: int = 1,
    dtype: int = 2,
    seq: int = 1,
    ts: int = TS,
    fs: float = 1000.0,
    scale: float = 1.0,
    rpm: float = 0.0,
    n: int = 2,
) -> bytes:
    return LAYOUT.pack(magic, version, dtype, seq, ts, fs, scale, rpm, n)


def _reason(payload: bytes, **kwargs: int) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_vibration(payload, **kwargs)
    assert info.value.reason in PROTOCOL_REASONS
    return info.value.reason


def test_doctests_pass() -> None:
    result = doctest.testmod(protocol, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10
    assert result.failed == 0


# ---------------------------------------------------------------------------------------- byte layout


def test_float32_layout_matches_the_documented_header() -> None:
    w = _window(5)
    payload = encode_binary(w)
    assert len(payload) == HEADER_SIZE + 5 * 4
    magic, version, dtype, seq, ts, fs, scale, rpm, n = LAYOUT.unpack_from(payload)
    assert (magic, version, dtype, seq, ts, fs, scale, rpm, n) == (
        b"GW",
        1,
        2,
        42,
        TS,
        25600.0,
        1.0,
        1797.0,
        5,
    )
    assert payload[HEADER_SIZE:] == w.samples.astype("<f4").tobytes()


def test_header_fields_sit_at_documented_offsets() -> None:
    payload = encode_binary(Window(0x01020304, -5, 48000.0, 0.0, np.ones(3, np.float32)))
    assert payload[0:2] == b"GW"
    assert payload[2] == 1
    assert payload[3] == 2
    assert payload[4:8] == bytes([4, 3, 2, 1])  # little-endian u32
    assert struct.unpack("<q", payload[8:16]) == (-5,)
    assert struct.unpack("<fff", payload[16:28]) == (48000.0, 1.0, 0.0)
    assert struct.unpack("<I", payload[28:32]) == (3,)


def test_int16_layout_and_auto_scale() -> None:
    x = np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32)
    payload = encode_binary(Window(1, 2, 100.0, 0.0, x), dtype="int16")
    header = LAYOUT.unpack_from(payload)
    assert header[2] == 1  # int16
    scale = header[6]
    assert scale == pytest.approx(2.0 / 32767, rel=1e-6)
    counts = np.frombuffer(payload, "<i2", offset=HEADER_SIZE)
    assert counts.tolist() == [16384, -32767, 8192, 0]
    decoded = decode_vibration(payload).samples
    assert np.all(np.abs(decoded - x) <= scale / 2)


def test_int16_given_scale_clips() -> None:
    x = np.array([0.5, 10.0, -10.0], dtype=np.float32)
    payload = encode_binary(Window(1, 2, 100.0, 0.0, x), dtype="int16", scale=1e-4)
    counts = np.frombuffer(payload, "<i2", offset=HEADER_SIZE)
    assert counts.tolist() == [5000, 32767, -32768]
    decoded = decode_vibration(payload).samples
    assert decoded[0] == pytest.approx(0.5, abs=1e-4)
    assert decoded[1] == pytest.approx(32767e-4, rel=1e-6)


def test_int16_all_zero_window_round_trips() -> None:
    x = np.zeros(16, np.float32)
    assert np.array_equal(decode_vibration(encode_binary(_with(x), dtype="int16")).samples, x)


def test_int16_extreme_values_stay_finite() -> None:
    big = np.float32(np.finfo(np.float32).max)
    x = np.array([big, -big, 1.0], dtype=np.float32)
    decoded = decode_vibration(encode_binary(_with(x), dtype="int16")).samples
    assert np.all(np.isfinite(decoded))
    assert decoded[0] == pytest.approx(float(big), rel=1e-4)


def test_int16_header_scale_that_overflows_is_rejected() -> None:
    scale = float(np.finfo(np.float32).max) / 2
    payload = _header(dtype=1, scale=scale, n=2) + struct.pack("<hh", 1, 4)
    assert _reason(payload) == "bad_field"
    # The same huge scale is fine while the products fit float32.
    ok = decode_vibration(_header(dtype=1, scale=scale, n=2) + struct.pack("<hh", 1, -1))
    assert ok.samples.tolist() == [np.float32(scale), -np.float32(scale)]


def _with(x: np.ndarray) -> Window:
    return Window(9, TS, 1000.0, 0.0, x)


# ------------------------------------------------------------------------------------- decoded arrays


def test_float32_bytes_payload_is_a_read_only_zero_copy_view() -> None:
    payload = encode_binary(_window(64))
    samples = decode_vibration(payload).samples
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert not samples.flags.writeable
    assert np.shares_memory(samples, np.frombuffer(payload, np.uint8))
    with pytest.raises(ValueError, match="read-only"):
        samples[0] = 1.0


def test_bytearray_payload_is_copied_not_aliased() -> None:
    w = _window(16)
    buf = bytearray(encode_binary(w))
    samples = decode_vibration(buf).samples
    buf[HEADER_SIZE : HEADER_SIZE + 4] = struct.pack("<f", 123.0)
    assert np.array_equal(samples, w.samples)
    assert decode_vibration(memoryview(bytes(buf))).samples[0] == 123.0


@pytest.mark.parametrize("encode", [lambda w: encode_binary(w, dtype="int16"), encode_json])
def test_other_encodings_give_owned_read_only_float32(encode: object) -> None:
    samples = decode_vibration(encode(_window(32))).samples  # type: ignore[operator]
    assert samples.dtype == np.float32
    assert not samples.flags.writeable
    assert samples.flags.owndata


def test_non_bytes_payload_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        decode_vibration("GW...")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ binary rejects


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "truncated"),
        (b"G", "truncated"),
        (b"GW", "truncated"),
        (_header()[:31], "truncated"),
        (_header(n=2) + b"\0" * 7, "truncated"),
        (_header(n=2) + b"\0" * 9, "trailing"),
        (_header(version=2) + b"\0" * 8, "bad_version"),
        (_header(dtype=3) + b"\0" * 8, "bad_dtype"),
        (_header(dtype=0) + b"\0" * 8, "bad_dtype"),
        (_header(n=0), "empty"),
        (_header(n=2**32 - 1), "too_large"),
        (_header(fs=float("nan")) + b"\0" * 8, "nan"),
        (_header(fs=float("inf")) + b"\0" * 8, "nan"),
        (_header(rpm=float("-inf")) + b"\0" * 8, "nan"),
        (_header(scale=float("nan")) + b"\0" * 8, "nan"),
        (_header(fs=0.0) + b"\0" * 8, "bad_field"),
        (_header(fs=-1.0) + b"\0" * 8, "bad_field"),
        (_header(rpm=-1.0) + b"\0" * 8, "bad_field"),
        (_header(scale=0.5) + b"\0" * 8, "bad_field"),  # float32 must carry scale 1.0
        (_header(dtype=1, scale=0.0) + b"\0" * 4, "bad_field"),
        (_header(dtype=1, scale=-1.0) + b"\0" * 4, "bad_field"),
        (_header() + struct.pack("<ff", 1.0, float("nan")), "nan"),
        (_header() + struct.pack("<ff", float("inf"), 1.0), "nan"),
        (b"XX" + _header()[2:] + b"\0" * 8, "bad_magic"),
        (b"gw" + _header()[2:] + b"\0" * 8, "bad_magic"),
        (b"\x00\x01", "bad_magic"),
        (b"  [1, 2]", "bad_magic"),
    ],
)
def test_binary_rejections(payload: bytes, reason: str) -> None:
    assert _reason(payload) == reason


def test_max_samples_is_checked_before_length() -> None:
    payload = encode_binary(_window(100))
    assert decode_vibration(payload, max_samples=100).samples.size == 100
    assert _reason(payload, max_samples=99) == "too_large"


def test_int16_with_all_int16_extremes_decodes() -> None:
    payload = _header(dtype=1, scale=0.5, n=2) + struct.pack("<hh", -32768, 32767)
    assert decode_vibration(payload).samples.tolist() == [-16384.0, 16383.5]


# --------------------------------------------------------------------------------------------- JSON


def test_json_round_trip_is_exact() -> None:
    w = _window(50)
    payload = encode_json(w)
    doc = json.loads(payload)
    assert set(doc) == {"seq", "ts", "fs", "rpm", "samples"}
    assert isinstance(doc["ts"], int)
    assert doc["ts"] == TS
    decoded = decode_vibration(payload)
    assert decoded == w
    assert decoded.samples.view(np.uint32).tolist() == w.samples.view(np.uint32).tolist()


def test_json_from_other_tools_is_accepted() -> None:
    # Pretty-printed, integer numbers, rpm omitted, an unknown field and leading whitespace.
    text = '\n  {\n "seq": 3, "ts": 1700000000000000000, "fs": 12000, "note": {"src": "node-red"},\n "samples": [1, -2, 0.25]\n}\n'
    w = decode_vibration(text.encode())
    assert (w.seq, w.ts_ns, w.fs, w.rpm) == (3, 1_700_000_000_000_000_000, 12000.0, 0.0)
    assert w.samples.tolist() == [1.0, -2.0, 0.25]


def _json_doc(**overrides: object) -> bytes:
    doc: dict[str, object] = {"seq": 1, "ts": 5, "fs": 100.0, "rpm": 0.0, "samples": [0.5, 1.0]}
    for key, value in overrides.items():
        if value is _DROP:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_json_doc(seq=-1), "bad_field"),
        (_json_doc(seq=2**32), "bad_field"),
        (_json_doc(seq=1.0), "bad_field"),
        (_json_doc(seq=True), "bad_field"),
        (_json_doc(seq="1"), "bad_field"),
        (_json_doc(ts=2**63), "bad_field"),
        (_json_doc(ts=1.5e18), "bad_field"),
        (_json_doc(fs=0), "bad_field"),
        (_json_doc(fs=-5.0), "bad_field"),
        (_json_doc(fs=False), "bad_field"),
        (_json_doc(fs=None), "bad_field"),
        (_json_doc(fs=10**400), "bad_field"),
        (_json_doc(rpm=-1), "bad_field"),
        (_json_doc(samples=[]), "empty"),
        (_json_doc(samples=[1.0, True]), "bad_field"),
        (_json_doc(samples=[1.0, "2"]), "bad_field"),
        (_json_doc(samples=[1.0, None]), "bad_field"),
        (_json_doc(samples=[[1.0]]), "bad_field"),
        (_json_doc(samples={"a": 1}), "bad_field"),
        (_json_doc(samples=[10**400]), "bad_field"),
        (_json_doc(samples=[1e39]), "bad_field"),  # beyond float32
        (_json_doc(samples=_DROP), "bad_field"),
        (_json_doc(seq=_DROP), "bad_field"),
        (_json_doc(ts=_DROP), "bad_field"),
        (_json_doc(fs=_DROP), "bad_field"),
        (b'{"seq":1,"ts":5,"fs":NaN,"samples":[1]}', "bad_json"),
        (b'{"seq":1,"ts":5,"fs":100,"samples":[1, Infinity]}', "bad_json"),
        (b'{"seq":1,"ts":5,"fs":100,"samples":[-Infinity]}', "bad_json"),
        (b'{"seq":1,"ts":5,"fs":1e999,"samples":[1]}', "nan"),
        (b'{"seq":1,"ts":5,"fs":100,"samples":[1e999]}', "nan"),
        (b'{"seq":1,"ts":5,"fs":100,"samples":[-1e999]}', "nan"),
        (b'{"seq":1,"ts":5,"fs":100,"samples":[1,]}', "bad_json"),
        (b'{"seq":1', "bad_json"),
        (b'{"seq":1} trailing', "bad_json"),
        (b'{"seq":"\xff"}', "bad_json"),
        (b'{"seq":' + b"1" * 5000 + b"}", "bad_json"),  # longer than Python's int-parsing limit
    ],
)
def test_json_rejections(payload: bytes, reason: str) -> None:
    assert _reason(payload) == reason


def test_json_size_limit_scales_with_max_samples() -> None:
    payload = _json_doc(samples=[0.0] * 10)
    assert decode_vibration(payload, max_samples=10).samples.size == 10
    assert _reason(payload, max_samples=9) == "too_large"
    padded = b"{" + b" " * 70_000 + payload[1:]
    assert _reason(padded, max_samples=1) == "too_large"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":' + b"[" * 100_000,
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' + b'{"b":' * 100_000,
        # Closing brackets hidden in a string must not cancel real nesting.
        b'{"s":"' + b"]" * 200 + b'","x":' + b"[" * 100_000,
        # Escaped quotes do not end a string.
        b'{"s":"\\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]","x":' + b"[" * 50_000,
    ],
)
def test_deep_nesting_is_rejected_before_parsing(payload: bytes) -> None:
    assert _reason(payload) == "too_large"


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine() -> None:
    nested = "[" * (MAX_JSON_DEPTH - 1) + "1" + "]" * (MAX_JSON_DEPTH - 1)
    w = decode_vibration(
        (
            '{"extra":' + nested + ', "label": "' + "[{" * 100 + '\\" [[[", '
            '"seq":1,"ts":5,"fs":100,"samples":[0.5]}'
        ).encode()
    )
    assert w.samples.tolist() == [0.5]
    too_deep = "[" * MAX_JSON_DEPTH + "1" + "]" * MAX_JSON_DEPTH
    assert _reason(('{"extra":' + too_deep + ',"seq":1,"ts":5,"fs":100,"samples":[0.5]}').encode()) == (
        "too_large"
    )


# ------------------------------------------------------------------------------------------ encoders


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (Window(-1, 0, 1.0, 0.0, np.ones(2, np.float32)), "bad_field"),
        (Window(2**32, 0, 1.0, 0.0, np.ones(2, np.float32)), "bad_field"),
        (Window(True, 0, 1.0, 0.0, np.ones(2, np.float32)), "bad_field"),
        (Window(0, 2**63, 1.0, 0.0, np.ones(2, np.float32)), "bad_field"),
        (Window(0, 0, 0.0, 0.0, np.ones(2, np.float32)), "bad_field"),
        (Window(0, 0, float("nan"), 0.0, np.ones(2, np.float32)), "nan"),
        (Window(0, 0, 1.0, -1.0, np.ones(2, np.float32)), "bad_field"),
        (Window(0, 0, 1.0, float("inf"), np.ones(2, np.float32)), "nan"),
        (Window(0, 0, 1.0, 0.0, np.ones(0, np.float32)), "empty"),
        (Window(0, 0, 1.0, 0.0, np.ones((2, 2), np.float32)), "bad_field"),
        (Window(0, 0, 1.0, 0.0, np.array([1.0, np.nan], np.float32)), "nan"),
        (Window(0, 0, 1.0, 0.0, np.array([1.0, 1e39])), "bad_field"),
        (Window(0, 0, 1.0, 0.0, np.array(["a", "b"])), "bad_field"),
        (Window(0, 0, 1.0, 0.0, np.zeros(MAX_SAMPLES + 1, np.float32)), "too_large"),
    ],
)
def test_encoders_refuse_what_decoders_reject(window: Window, reason: str) -> None:
    for encode in (encode_binary, encode_json):
        with pytest.raises(ProtocolError) as info:
            encode(window)
        assert info.value.reason == reason


def test_binary_encoder_checks_float32_header_range() -> None:
    with pytest.raises(ProtocolError, match="float32"):
        encode_binary(Window(0, 0, 1e300, 0.0, np.ones(2, np.float32)))
    with pytest.raises(ProtocolError, match="rounds to 0"):
        encode_binary(Window(0, 0, 1e-300, 0.0, np.ones(2, np.float32)))


def test_binary_encoder_checks_dtype_and_scale() -> None:
    w = _window(4)
    with pytest.raises(ProtocolError) as info:
        encode_binary(w, dtype="int8")  # type: ignore[arg-type]
    assert info.value.reason == "bad_dtype"
    with pytest.raises(ProtocolError) as info:
        encode_binary(w, scale=0.5)
    assert info.value.reason == "bad_field"
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ProtocolError):
            encode_binary(w, dtype="int16", scale=bad)


def test_encoders_accept_float64_and_int_samples() -> None:
    x64 = np.array([0.1, -0.2, 3.0])
    assert np.array_equal(decode_vibration(encode_binary(_with(x64))).samples, x64.astype(np.float32))
    xi = np.array([1, -2, 3])
    assert decode_vibration(encode_json(_with(xi))).samples.tolist() == [1.0, -2.0, 3.0]


def test_window_equality_compares_values() -> None:
    a = _window(8)
    b = Window(a.seq, a.ts_ns, a.fs, a.rpm, a.samples.copy())
    assert a == b
    assert a != Window(a.seq + 1, a.ts_ns, a.fs, a.rpm, a.samples)
    assert a != Window(a.seq, a.ts_ns, a.fs, a.rpm, a.samples * 2)
    assert a != "window"


# ------------------------------------------------------------------------------------ health / alert


def test_health_round_trip_with_extra_fields() -> None:
    h = Health(
        "press-7",
        "s0",
        12,
        TS,
        0.875,
        "warning",
        "2026.11.28-1",
        {"p_outer": np.float32(0.5), "rul_s": 3600.0, "drivers": ["kurtosis", "bpfo_env"]},
    )
    payload = encode_health(h)
    doc = json.loads(payload)
    assert doc["ts"] == TS
    assert doc["state"] == "warning"
    assert doc["p_outer"] == 0.5
    back = decode_health(payload)
    assert back.extra == {"p_outer": 0.5, "rul_s": 3600.0, "drivers": ["kurtosis", "bpfo_env"]}
    assert (back.machine, back.sensor, back.seq, back.ts_ns, back.score, back.state, back.model) == (
        "press-7",
        "s0",
        12,
        TS,
        0.875,
        "warning",
        "2026.11.28-1",
    )


@pytest.mark.parametrize(
    ("health", "reason"),
    [
        (Health("m/1", "s0", 1, 1, 0.5, "ok", "v1"), "bad_id"),
        (Health("m1", "", 1, 1, 0.5, "ok", "v1"), "bad_id"),
        (Health("m1", "s0", 1, 1, 1.5, "ok", "v1"), "bad_field"),
        (Health("m1", "s0", 1, 1, float("nan"), "ok", "v1"), "nan"),
        (Health("m1", "s0", 1, 1, 0.5, "broken", "v1"), "bad_field"),  # type: ignore[arg-type]
        (Health("m1", "s0", 1, 1, 0.5, "ok", "v1", {"score": 1}), "bad_field"),
        (Health("m1", "s0", 1, 1, 0.5, "ok", "v1", {"x": float("inf")}), "nan"),
        (Health("m1", "s0", 1, 1, 0.5, "ok", "v1", {"x": object()}), "bad_field"),
        (Health("m1", "s0", 1, 1, 0.5, "ok", "v1", {"x": "a" * MAX_MESSAGE_BYTES}), "too_large"),
    ],
)
def test_health_encoder_rejections(health: Health, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        encode_health(health)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[]", "bad_field"),
        (b'{"machine":"m1"}', "bad_field"),
        (b'{"machine":"m 1","sensor":"s","seq":1,"ts":1,"score":0.1,"state":"ok","model":"v"}', "bad_id"),
        (b'{"machine":"m1","sensor":"s","seq":1,"ts":1,"score":NaN,"state":"ok","model":"v"}', "bad_json"),
        (b'{"machine":"m1","sensor":"s","seq":1,"ts":1,"score":-0.1,"state":"ok","model":"v"}', "bad_field"),
        (b'{"machine":"m1","sensor":"s","seq":1,"ts":1,"score":0.1,"state":"OK","model":"v"}', "bad_field"),
        (b'{"machine":"m1","sensor":"s","seq":1,"ts":1,"score":0.1,"state":"ok","model":7}', "bad_field"),
        (b"\xef\xbb\xbf{}", "bad_json"),
        (b"{" * 100_000, "too_large"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_health_decoder_rejections(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_health(payload)
    assert info.value.reason == reason


def test_alert_round_trip_and_rejections() -> None:
    a = Alert("m1", "s0", 7, TS, "alarm", "warning", 0.93, "v2", "score >= 0.80 for 3 windows")
    payload = encode_alert(a)
    assert set(json.loads(payload)) == {
        "machine",
        "sensor",
        "seq",
        "ts",
        "state",
        "previous_state",
        "score",
        "model",
        "reason",
    }
    assert decode_alert(payload) == a
    assert decode_alert(bytearray(payload)) == a
    doc = json.loads(payload)
    doc["previous_state"] = "fine"
    with pytest.raises(ProtocolError) as info:
        decode_alert(json.dumps(doc).encode())
    assert info.value.reason == "bad_field"
    del doc["previous_state"]
    with pytest.raises(ProtocolError, match="previous_state"):
        decode_alert(json.dumps(doc).encode())
    with pytest.raises(ProtocolError) as info:
        encode_alert(Alert("m1", "s0", 7, TS, "alarm", "ok", 0.9, "v2", None))  # type: ignore[arg-type]
    assert info.value.reason == "bad_field"


# --------------------------------------------------------------------------------------------- topics


@pytest.mark.parametrize("good", ["a", "M-01_x", "0" * 64, "_", "-"])
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "a" * 65, "a/b", "a+", "#", "a b", "a\n", "é", "a.b", "ａ", None, 5, b"ab"]
)
def test_invalid_ids(bad: object) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_id(bad)  # type: ignore[arg-type]
    assert info.value.reason == "bad_id"


def test_topic_builders() -> None:
    assert vibration_topic("gruwatch", "m1", "s0") == "gruwatch/m1/s0/vibration"
    assert health_topic("plant/gw", "m1", "s0") == "plant/gw/m1/s0/health"
    assert alert_topic("gruwatch", "m1", "s0") == "gruwatch/m1/s0/alert"
    assert vibration_subscription("gruwatch") == "gruwatch/+/+/vibration"
    assert agent_status_topic("gruwatch", "gw1") == "gruwatch/_agents/gw1/status"
    assert model_topic("gruwatch", "gw1") == "gruwatch/_agents/gw1/model"
    assert model_result_topic("gruwatch", "gw1") == "gruwatch/_agents/gw1/model/result"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: vibration_topic("gruwatch", "m/1", "s0"), "bad_id"),
        (lambda: vibration_topic("gruwatch", "m1", "+"), "bad_id"),
        (lambda: health_topic("gruwatch", "_agents", "s0"), "bad_id"),
        (lambda: agent_status_topic("gruwatch", "#"), "bad_id"),
        (lambda: vibration_topic("", "m1", "s0"), "bad_topic"),
        (lambda: vibration_topic("a//b", "m1", "s0"), "bad_topic"),
        (lambda: vibration_topic("a/+", "m1", "s0"), "bad_topic"),
        (lambda: vibration_subscription("gruwatch/"), "bad_topic"),
    ],
)
def test_topic_builders_reject(call: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        call()  # type: ignore[operator]
    assert info.value.reason == reason


def test_parse_sensor_topic_round_trips_builders() -> None:
    for build, kind in ((vibration_topic, "vibration"), (health_topic, "health"), (alert_topic, "alert")):
        topic = build("plant/gw", "press-7", "s_1")
        assert parse_sensor_topic(topic, "plant/gw") == SensorTopic("press-7", "s_1", kind)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("other/m1/s0/vibration", "bad_topic"),
        ("gruwatchx/m1/s0/vibration", "bad_topic"),
        ("gruwatch/m1/s0", "bad_topic"),
        ("gruwatch/m1/s0/vibration/extra", "bad_topic"),
        ("gruwatch/m1/s0/temperature", "bad_topic"),
        ("gruwatch/_agents/gw1/status", "bad_topic"),
        ("gruwatch/_agents/gw1/vibration", "bad_id"),
        ("gruwatch/m 1/s0/vibration", "bad_id"),
        ("gruwatch//s0/vibration", "bad_id"),
        ("gruwatch/m1/" + "s" * 65 + "/health", "bad_id"),
    ],
)
def test_parse_sensor_topic_rejects(topic: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_sensor_topic(topic, "gruwatch")
    assert info.value.reason == reason


# ------------------------------------------------------------------------------------- agent status


def test_agent_status_round_trips_with_and_without_thresholds() -> None:
    from edge_agent.protocol import AgentStatus, decode_status, encode_status

    for s in (
        AgentStatus("online", "v1"),
        AgentStatus("offline", "", 0.5, 0.8),
        AgentStatus("online", "v", storage="degraded"),
    ):
        assert decode_status(encode_status(s)) == s
    assert decode_status(b'{"state":"online","model":"v2","uptime_s":5}') == AgentStatus("online", "v2")


@pytest.mark.parametrize(
    "payload",
    [
        b'{"state":"away","model":"v"}',
        b'{"model":"v"}',
        b'{"state":"online","model":3}',
        b'{"state":"online","model":"v","thresholds":{"warning":0.9,"alarm":0.5}}',
        b'{"state":"online","model":"v","thresholds":{"warning":0.5}}',
        b'["online"]',
    ],
)
def test_bad_agent_status_is_a_protocol_error(payload: bytes) -> None:
    from edge_agent.protocol import decode_status

    with pytest.raises(ProtocolError) as err:
        decode_status(payload)
    assert err.value.reason == "bad_field"
