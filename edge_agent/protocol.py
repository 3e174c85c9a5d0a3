"""The MQTT wire protocol: vibration windows (binary and JSON), health, alert and agent-status messages;
topics live in edge_agent.topics (re-exported here). docs/protocol.md is the reference. Decoding
untrusted bytes raises only `ProtocolError` (`.reason` from PROTOCOL_REASONS); encoding checks the
same rules, so a sender cannot publish what the agent would reject.

A window round-trips through either encoding:

>>> import numpy as np
>>> w = Window(seq=7, ts_ns=1_700_000_000_000_000_000, fs=25600.0, rpm=1797.0,
...            samples=np.array([0.5, -1.25, 0.0], dtype=np.float32))
>>> payload = encode_binary(w)
>>> len(payload)  # 32-byte header + 3 float32 samples
44
>>> decode_vibration(payload) == w
True
>>> decode_vibration(encode_json(w)) == w
True
>>> decode_vibration(b"hello")
Traceback (most recent call last):
    ...
edge_agent.errors.ProtocolError: bad_magic: payload starts with b'he', neither the binary magic b'GW' nor a JSON object
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt

from edge_agent.alarms import STATE_NAMES as STATES
from edge_agent.alarms import State
from edge_agent.errors import ProtocolError
from edge_agent.strict_json import (
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    dump_json,
    float_field,
    int_field,
    load_json_object,
    require_fields,
    str_field,
)
from edge_agent.topics import (
    AGENTS_LEVEL,
    ID_PATTERN,
    KINDS,
    SensorTopic,
    agent_health_topic,
    agent_status_topic,
    alert_topic,
    health_topic,
    model_result_topic,
    model_topic,
    parse_sensor_topic,
    validate_id,
    vibration_subscription,
    vibration_topic,
)

__all__ = [
    "AGENTS_LEVEL",
    "AGENT_STATES",
    "DTYPE_FLOAT32",
    "DTYPE_INT16",
    "HEADER",
    "HEADER_SIZE",
    "HEALTH_FIELDS",
    "ID_PATTERN",
    "KINDS",
    "MAGIC",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_SAMPLES",
    "STATES",
    "VERSION",
    "AgentStatus",
    "Alert",
    "Health",
    "SensorTopic",
    "State",
    "Window",
    "agent_health_topic",
    "agent_status_topic",
    "alert_topic",
    "decode_alert",
    "decode_health",
    "decode_health_batch",
    "decode_status",
    "decode_vibration",
    "encode_alert",
    "encode_binary",
    "encode_health",
    "encode_json",
    "encode_status",
    "health_topic",
    "model_result_topic",
    "model_topic",
    "parse_sensor_topic",
    "validate_id",
    "vibration_subscription",
    "vibration_topic",
]

MAGIC: Final = b"GW"
VERSION: Final = 1
DTYPE_INT16: Final = 1
DTYPE_FLOAT32: Final = 2
HEADER_SIZE: Final = 32
MAX_SAMPLES: Final = 1_048_576
#: JSON vibration payloads may hold up to this many bytes per allowed sample, plus _JSON_OVERHEAD.
_JSON_BYTES_PER_SAMPLE: Final = 40
_JSON_OVERHEAD: Final = 64 * 1024


#: magic, version u8, dtype u8, seq u32, ts i64, fs f32, scale f32, rpm f32, n u32 (little-endian).
HEADER: Final = struct.Struct("<2sBBIqfffI")
assert HEADER.size == HEADER_SIZE

_U32_MAX: Final = 2**32 - 1
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_F32_MAX: Final = float(np.finfo(np.float32).max)
_F32_TINY: Final = float(np.finfo(np.float32).tiny)
_LE_F32: Final = np.dtype("<f4")
_LE_I16: Final = np.dtype("<i2")
_NATIVE_LE: Final = sys.byteorder == "little"
_JSON_WS: Final = b" \t\r\n"
_NUMBER_TYPES: Final = frozenset({int, float})


Float32Array = npt.NDArray[np.float32]


# --------------------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """One vibration window.

    `samples` from `decode_vibration` is always a read-only 1-D float32 array in g: a zero-copy view
    of the payload for float32 `bytes` payloads, an owned array otherwise (int16 payloads are already
    multiplied by their scale). Call `.copy()` to get a writable one. Equality compares values.
    """

    seq: int  # u32
    ts_ns: int  # sensor timestamp, ns since epoch (i64)
    fs: float  # Hz, > 0
    rpm: float  # shaft speed; 0.0 = unknown
    samples: np.ndarray  # float32, 1-D, in g

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return (
            self.seq == other.seq
            and self.ts_ns == other.ts_ns
            and self.fs == other.fs
            and self.rpm == other.rpm
            and np.array_equal(self.samples, other.samples)
        )


@dataclass(frozen=True, slots=True)
class Health:
    """The score for one window: `{"machine","sensor","seq","ts","score","state","model", ...extra}`."""

    machine: str
    sensor: str
    seq: int
    ts_ns: int
    score: float  # in [0, 1], higher = worse
    state: State
    model: str  # model version that produced the score
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level JSON fields (p_outer, rul_s, ...)


@dataclass(frozen=True, slots=True)
class Alert:
    """An alarm-state change for one sensor (published retained, on change only)."""

    machine: str
    sensor: str
    seq: int
    ts_ns: int
    state: State
    previous_state: State
    score: float
    model: str
    reason: str  # for people, e.g. "score 0.91 >= alarm 0.80 for 3 windows"


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """An agent's presence, retained on `{prefix}/_agents/{agent}/status` (and its last will); `warning` /
    `alarm`: the served model's thresholds when announced (dashboards draw them), both or neither."""

    state: Literal["online", "offline"]
    model: str  # model version served ("" before the first model)
    warning: float | None = None
    alarm: float | None = None
    storage: str | None = None  # e.g. "degraded" while the agent cannot keep windows (disk full)


# -------------------------------------------------------------------------------------- field checks


def _f32_field(value: object, name: str, *, positive: bool) -> float:
    """As `strict_json.float_field`, then rounded to float32 as the binary header carries it."""
    v = float_field(value, name, positive=positive)
    if v > _F32_MAX:
        raise ProtocolError("bad_field", f"{name}={v} does not fit a float32")
    v32 = float(np.float32(v))
    if positive and v32 == 0.0:
        raise ProtocolError("bad_field", f"{name}={v} rounds to 0 as a float32")
    return v32


def _state_field(value: object, name: str) -> State:
    if value not in STATES:
        raise ProtocolError("bad_field", f"{name} must be one of {', '.join(STATES)}, got {value!r:.40}")
    return cast(State, value)


def _score_field(value: object) -> float:
    v = float_field(value, "score", positive=False)
    if v > 1.0:
        raise ProtocolError("bad_field", f"score={v} must be in [0, 1]")
    return v


def _samples_f32(samples: object) -> Float32Array:
    """Samples as a finite 1-D float32 array (no copy when they already are one)."""
    arr = np.asarray(samples)
    if arr.dtype.kind not in "fiu":
        raise ProtocolError("bad_field", f"samples must be numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ProtocolError("bad_field", f"samples must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ProtocolError("empty", "a window needs at least one sample")
    if arr.size > MAX_SAMPLES:
        raise ProtocolError("too_large", f"{arr.size} samples > MAX_SAMPLES={MAX_SAMPLES}")
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = arr.astype(np.float32, copy=False)
    if not np.isfinite(f32).all():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ProtocolError("nan", "samples hold NaN or infinity")
        raise ProtocolError("bad_field", "samples exceed the float32 range")
    return f32


def _read_only(arr: Float32Array) -> Float32Array:
    arr.flags.writeable = False
    return arr


# ------------------------------------------------------------------------------------ vibration: encode


def encode_binary(
    w: Window, *, dtype: Literal["float32", "int16"] = "float32", scale: float | None = None
) -> bytes:
    """Encode a window as the 32-byte header plus samples (the default, compact encoding).

    `fs` and `rpm` travel as float32. With `dtype="int16"` each sample becomes round(x / scale),
    clipped to the int16 range; without `scale` the largest |x| maps to ±32767, so the error is at
    most scale / 2 and nothing clips. Raises ProtocolError for a window the agent would reject.

    >>> import numpy as np
    >>> w = Window(1, 0, 1000.0, 0.0, np.array([1.0, -0.5, 0.25], dtype=np.float32))
    >>> decode_vibration(encode_binary(w, dtype="int16", scale=0.25)).samples
    array([ 1.  , -0.5 ,  0.25], dtype=float32)
    """
    seq = int_field(w.seq, "seq", 0, _U32_MAX)
    ts = int_field(w.ts_ns, "ts_ns", _I64_MIN, _I64_MAX)
    fs = _f32_field(w.fs, "fs", positive=True)
    rpm = _f32_field(w.rpm, "rpm", positive=False)
    x = _samples_f32(w.samples)
    n = int(x.size)
    if dtype == "float32":
        if scale is not None and scale != 1.0:
            raise ProtocolError("bad_field", "float32 windows carry scale 1.0; pass scale only with int16")
        body = x.astype(_LE_F32, copy=False).tobytes()
        return HEADER.pack(MAGIC, VERSION, DTYPE_FLOAT32, seq, ts, fs, 1.0, rpm, n) + body
    if dtype != "int16":
        raise ProtocolError("bad_dtype", f"dtype must be 'float32' or 'int16', got {dtype!r}")
    x64 = x.astype(np.float64)
    if scale is None:
        s32 = np.float32(max(float(np.abs(x64).max()) / 32767.0, _F32_TINY))
        if float(s32) * 32767.0 > _F32_MAX:  # keep the largest decoded value finite
            s32 = np.nextafter(s32, np.float32(0.0))
    else:
        s32 = np.float32(_f32_field(scale, "scale", positive=True))
    counts = np.clip(np.rint(x64 / float(s32)), -32768.0, 32767.0).astype(_LE_I16)
    return HEADER.pack(MAGIC, VERSION, DTYPE_INT16, seq, ts, fs, float(s32), rpm, n) + counts.tobytes()


def encode_json(w: Window) -> bytes:
    """Encode a window as compact UTF-8 JSON `{"seq","ts","fs","rpm","samples"}` (ts: int ns).

    Samples are written as the shortest decimal that gives back the same float32 value, via float64.

    >>> import numpy as np
    >>> encode_json(Window(3, 10, 100.0, 0.0, np.array([0.5, 2.0], dtype=np.float32)))
    b'{"seq":3,"ts":10,"fs":100.0,"rpm":0.0,"samples":[0.5,2.0]}'
    """
    doc = {
        "seq": int_field(w.seq, "seq", 0, _U32_MAX),
        "ts": int_field(w.ts_ns, "ts_ns", _I64_MIN, _I64_MAX),
        "fs": float_field(w.fs, "fs", positive=True),
        "rpm": float_field(w.rpm, "rpm", positive=False),
        "samples": _samples_f32(w.samples).astype(np.float64).tolist(),
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


# ------------------------------------------------------------------------------------ vibration: decode


def decode_vibration(payload: bytes | bytearray | memoryview, *, max_samples: int = MAX_SAMPLES) -> Window:
    """Decode one vibration window, binary or JSON, told apart by the first bytes.

    Raises only ProtocolError (see `.reason`) for any content of `payload`; a payload that is not
    bytes-like at all is a programming error (TypeError). Binary payloads given as `bytes` are
    decoded without copying the samples.

    >>> import numpy as np
    >>> w = decode_vibration(b'{"seq": 1, "ts": 5, "fs": 12000, "rpm": 0, "samples": [0.5, -0.5]}')
    >>> w.seq, w.ts_ns, w.fs, w.samples
    (1, 5, 12000.0, array([ 0.5, -0.5], dtype=float32))
    >>> decode_vibration(b'{"seq": 1, "ts": 5, "fs": NaN, "samples": [0.5]}')
    Traceback (most recent call last):
        ...
    edge_agent.errors.ProtocolError: bad_json: NaN is not JSON; send finite numbers
    """
    if not isinstance(payload, bytes):
        if not isinstance(payload, bytearray | memoryview):
            raise TypeError(f"payload must be bytes-like, got {type(payload).__name__}")
        payload = bytes(payload)  # never alias a buffer the caller may change
    if payload.startswith(MAGIC):
        return _decode_binary(payload, max_samples)
    if not payload or payload == MAGIC[:1]:
        raise ProtocolError("truncated", f"{len(payload)} bytes is shorter than any window")
    if payload.lstrip(_JSON_WS)[:1] == b"{":
        return _decode_json_window(payload, max_samples)
    raise ProtocolError(
        "bad_magic",
        f"payload starts with {payload[:2]!r}, neither the binary magic {MAGIC!r} nor a JSON object",
    )


def _decode_binary(payload: bytes, max_samples: int) -> Window:
    size = len(payload)
    if size < HEADER_SIZE:
        raise ProtocolError("truncated", f"{size} bytes is shorter than the {HEADER_SIZE}-byte header")
    _, version, dtype, seq, ts, fs, scale, rpm, n = HEADER.unpack_from(payload)
    if version != VERSION:
        raise ProtocolError("bad_version", f"header version {version}; this agent speaks {VERSION}")
    if dtype == DTYPE_FLOAT32:
        itemsize = 4
    elif dtype == DTYPE_INT16:
        itemsize = 2
    else:
        raise ProtocolError("bad_dtype", f"dtype code {dtype}; known: 1 (int16), 2 (float32)")
    if n == 0:
        raise ProtocolError("empty", "header announces 0 samples")
    if n > max_samples:
        raise ProtocolError("too_large", f"header announces {n} samples > max_samples={max_samples}")
    expected = HEADER_SIZE + n * itemsize
    if size != expected:
        reason = "truncated" if size < expected else "trailing"
        raise ProtocolError(reason, f"{size} bytes; the header announces {n} samples = {expected} bytes")
    if not (math.isfinite(fs) and math.isfinite(scale) and math.isfinite(rpm)):
        raise ProtocolError("nan", f"header fs={fs}, scale={scale}, rpm={rpm} must be finite")
    if fs <= 0.0:
        raise ProtocolError("bad_field", f"sample rate fs={fs} must be > 0")
    if rpm < 0.0:
        raise ProtocolError("bad_field", f"rpm={rpm} must be >= 0 (0 = unknown)")
    if dtype == DTYPE_FLOAT32:
        if scale != 1.0:
            raise ProtocolError("bad_field", f"float32 windows carry scale 1.0, got {scale}")
        samples: Float32Array = np.frombuffer(payload, dtype=_LE_F32, count=n, offset=HEADER_SIZE)
        if not _NATIVE_LE:
            samples = samples.astype(np.float32)
        if not np.isfinite(samples).all():
            raise ProtocolError("nan", "samples hold NaN or infinity")
    else:
        if scale <= 0.0:
            raise ProtocolError("bad_field", f"scale={scale} g per count must be > 0")
        counts = np.frombuffer(payload, dtype=_LE_I16, count=n, offset=HEADER_SIZE)
        if scale * 32768.0 <= _F32_MAX:  # no count can overflow: one pass, in float32
            samples = np.multiply(counts, np.float32(scale), dtype=np.float32)
        else:
            wide = counts * scale  # float64, exact
            if float(np.abs(wide).max()) > _F32_MAX:
                raise ProtocolError("bad_field", f"scale={scale} times the counts overflows float32")
            samples = wide.astype(np.float32)
    return Window(seq, ts, fs, rpm, _read_only(samples))


def _decode_json_window(payload: bytes, max_samples: int) -> Window:
    limit = _JSON_OVERHEAD + _JSON_BYTES_PER_SAMPLE * max_samples
    doc = load_json_object(payload, limit)
    try:
        raw = doc["samples"]
        seq_raw, ts_raw, fs_raw = doc["seq"], doc["ts"], doc["fs"]
    except KeyError as exc:
        raise ProtocolError("bad_field", f"JSON window lacks {exc.args[0]!r}") from exc
    seq = int_field(seq_raw, "seq", 0, _U32_MAX)
    ts = int_field(ts_raw, "ts", _I64_MIN, _I64_MAX)
    fs = float_field(fs_raw, "fs", positive=True)
    rpm = float_field(doc.get("rpm", 0.0), "rpm", positive=False)
    if not isinstance(raw, list):
        raise ProtocolError("bad_field", f"samples must be a list of numbers, got {type(raw).__name__}")
    if not raw:
        raise ProtocolError("empty", "samples is an empty list")
    if len(raw) > max_samples:
        raise ProtocolError("too_large", f"{len(raw)} samples > max_samples={max_samples}")
    kinds = set(map(type, raw))
    if not kinds <= _NUMBER_TYPES:  # also rejects bool, str, null, lists, objects
        bad = sorted(k.__name__ for k in kinds - _NUMBER_TYPES)
        raise ProtocolError("bad_field", f"samples must be numbers, found {', '.join(bad)}")
    try:
        x64 = np.array(raw, dtype=np.float64)
    except OverflowError as exc:  # an integer literal beyond float range
        raise ProtocolError("bad_field", "a sample is too large for a float") from exc
    if not np.isfinite(x64).all():  # 1e999 parses to inf
        raise ProtocolError("nan", "samples hold an infinite value")
    if float(np.abs(x64).max()) > _F32_MAX:
        raise ProtocolError("bad_field", "samples exceed the float32 range")
    return Window(seq, ts, fs, rpm, _read_only(x64.astype(np.float32)))


# ------------------------------------------------------------------------------------- health / alert

#: The fixed fields of a health message, in wire order; `extra` may not reuse them.
HEALTH_FIELDS: Final = ("machine", "sensor", "seq", "ts", "score", "state", "model")
_ALERT_KEYS: Final = ("machine", "sensor", "seq", "ts", "state", "previous_state", "score", "model", "reason")


def encode_health(h: Health) -> bytes:
    """Encode a health message as compact JSON; `extra` fields sit beside the fixed ones.

    >>> encode_health(Health("m1", "s0", 4, 99, 0.25, "ok", "v3", {"p_outer": 0.5}))
    b'{"machine":"m1","sensor":"s0","seq":4,"ts":99,"score":0.25,"state":"ok","model":"v3","p_outer":0.5}'
    """
    doc: dict[str, Any] = {
        "machine": validate_id(h.machine),
        "sensor": validate_id(h.sensor),
        "seq": int_field(h.seq, "seq", 0, _U32_MAX),
        "ts": int_field(h.ts_ns, "ts_ns", _I64_MIN, _I64_MAX),
        "score": _score_field(h.score),
        "state": _state_field(h.state, "state"),
        "model": str_field(h.model, "model"),
    }
    if not isinstance(h.extra, Mapping):
        raise ProtocolError("bad_field", f"extra must be a mapping, got {type(h.extra).__name__}")
    for key, value in h.extra.items():
        if not isinstance(key, str) or key in doc:
            raise ProtocolError(
                "bad_field", f"extra key {key!r} is not a string or clashes with a fixed field"
            )
        doc[key] = value
    return dump_json(doc)


def decode_health(b: bytes | bytearray | memoryview) -> Health:
    """Decode a health message; unknown fields land in `extra`. Raises only ProtocolError."""
    return _health_of(load_json_object(_as_bytes(b), MAX_MESSAGE_BYTES))


def decode_health_batch(b: bytes | bytearray | memoryview) -> tuple[str, list[Health]]:
    """Decode a batch of health messages (the agent's `health_batch` option, on
    `{prefix}/_agents/{agent}/health`): `{"agent": id, "health": [health object, ...]}` ->
    (agent id, [Health, ...]) in the order the windows were scored. Raises only ProtocolError.

    >>> decode_health_batch(b'{"agent":"a1","health":[' + encode_health(Health("m1", "s0", 4, 99, 0.25, "ok", "v3")) + b']}')
    ('a1', [Health(machine='m1', sensor='s0', seq=4, ts_ns=99, score=0.25, state='ok', model='v3', extra={})])
    """
    doc = load_json_object(_as_bytes(b), MAX_MESSAGE_BYTES)
    require_fields(doc, ("agent", "health"), "health batch")
    items = doc["health"]
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise ProtocolError("bad_field", "a health batch's `health` must be a list of objects")
    return _id_field(doc["agent"]), [_health_of(d) for d in items]


def _health_of(doc: dict[str, Any]) -> Health:
    require_fields(doc, HEALTH_FIELDS, "health message")
    return Health(
        machine=_id_field(doc["machine"]),
        sensor=_id_field(doc["sensor"]),
        seq=int_field(doc["seq"], "seq", 0, _U32_MAX),
        ts_ns=int_field(doc["ts"], "ts", _I64_MIN, _I64_MAX),
        score=_score_field(doc["score"]),
        state=_state_field(doc["state"], "state"),
        model=str_field(doc["model"], "model"),
        extra={k: v for k, v in doc.items() if k not in HEALTH_FIELDS},
    )


def encode_alert(a: Alert) -> bytes:
    """Encode an alert (alarm-state change) as compact JSON."""
    return dump_json(
        {
            "machine": validate_id(a.machine),
            "sensor": validate_id(a.sensor),
            "seq": int_field(a.seq, "seq", 0, _U32_MAX),
            "ts": int_field(a.ts_ns, "ts_ns", _I64_MIN, _I64_MAX),
            "state": _state_field(a.state, "state"),
            "previous_state": _state_field(a.previous_state, "previous_state"),
            "score": _score_field(a.score),
            "model": str_field(a.model, "model"),
            "reason": str_field(a.reason, "reason"),
        }
    )


def decode_alert(b: bytes | bytearray | memoryview) -> Alert:
    """Decode an alert; unknown fields are ignored. Raises only ProtocolError."""
    doc = load_json_object(_as_bytes(b), MAX_MESSAGE_BYTES)
    require_fields(doc, _ALERT_KEYS, "alert message")
    return Alert(
        machine=_id_field(doc["machine"]),
        sensor=_id_field(doc["sensor"]),
        seq=int_field(doc["seq"], "seq", 0, _U32_MAX),
        ts_ns=int_field(doc["ts"], "ts", _I64_MIN, _I64_MAX),
        state=_state_field(doc["state"], "state"),
        previous_state=_state_field(doc["previous_state"], "previous_state"),
        score=_score_field(doc["score"]),
        model=str_field(doc["model"], "model"),
        reason=str_field(doc["reason"], "reason"),
    )


def _id_field(value: object) -> str:
    return validate_id(cast(str, value))


def _as_bytes(b: object) -> bytes:
    if isinstance(b, bytes):
        return b
    if isinstance(b, bytearray | memoryview):
        return bytes(b)
    raise TypeError(f"payload must be bytes-like, got {type(b).__name__}")


# ------------------------------------------------------------------------------------- agent status

AGENT_STATES: Final = ("online", "offline")


def encode_status(s: AgentStatus) -> bytes:
    """Encode an agent status: `{"state","model"}`, plus `"thresholds"` and `"storage"` when set.

    >>> encode_status(AgentStatus("online", "v3", warning=0.4, alarm=0.6))
    b'{"state":"online","model":"v3","thresholds":{"warning":0.4,"alarm":0.6}}'
    """
    if s.state not in AGENT_STATES:
        raise ProtocolError("bad_field", f"state must be online or offline, got {s.state!r:.40}")
    doc: dict[str, Any] = {"state": s.state, "model": str_field(s.model, "model")}
    if s.warning is not None or s.alarm is not None:
        warning, alarm = _thresholds_field({"warning": s.warning, "alarm": s.alarm})
        doc["thresholds"] = {"warning": warning, "alarm": alarm}
    if s.storage is not None:
        doc["storage"] = str_field(s.storage, "storage")
    return dump_json(doc)


def decode_status(b: bytes | bytearray | memoryview) -> AgentStatus:
    """Decode an agent status; unknown keys are ignored. Raises only ProtocolError."""
    doc = load_json_object(_as_bytes(b), MAX_MESSAGE_BYTES)
    require_fields(doc, ("state", "model"), "agent status")
    if doc["state"] not in AGENT_STATES:
        raise ProtocolError("bad_field", f"state must be online or offline, got {doc['state']!r:.40}")
    warning = alarm = None
    if doc.get("thresholds") is not None:
        warning, alarm = _thresholds_field(doc["thresholds"])
    storage = None if doc.get("storage") is None else str_field(doc["storage"], "storage")
    return AgentStatus(doc["state"], str_field(doc["model"], "model"), warning, alarm, storage)


def _thresholds_field(value: object) -> tuple[float, float]:
    if not isinstance(value, Mapping) or "warning" not in value or "alarm" not in value:
        raise ProtocolError("bad_field", "thresholds must be an object with warning and alarm")
    warning = float_field(value["warning"], "thresholds.warning", positive=False)
    alarm = float_field(value["alarm"], "thresholds.alarm", positive=False)
    if not 0.0 <= warning <= alarm <= 1.0:
        raise ProtocolError("bad_field", f"need 0 <= warning ({warning}) <= alarm ({alarm}) <= 1")
    return warning, alarm
