"""The MQTT wire protocol: topics, vibration windows (binary and JSON), health and alert messages.

Everything that crosses the wire is built and checked here, so nothing downstream sees raw payloads
(docs/protocol.md is the reference). Decoding untrusted bytes raises only `ProtocolError`, whose
`.reason` is a stable code from `edge_agent.errors.PROTOCOL_REASONS`; encoding checks the same rules,
so a sender cannot publish what the agent would reject.

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
import re
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt

from edge_agent.errors import ProtocolError

__all__ = [
    "AGENTS_LEVEL",
    "AGENT_STATES",
    "DTYPE_FLOAT32",
    "DTYPE_INT16",
    "HEADER",
    "HEADER_SIZE",
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
    "Window",
    "agent_status_topic",
    "alert_topic",
    "decode_alert",
    "decode_health",
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
ID_PATTERN: Final = r"[A-Za-z0-9_-]{1,64}"
#: Deepest JSON nesting accepted (objects and arrays together); checked before parsing.
MAX_JSON_DEPTH: Final = 32
#: Largest health or alert message accepted, in bytes.
MAX_MESSAGE_BYTES: Final = 1 << 20
#: JSON vibration payloads may hold up to this many bytes per allowed sample, plus _JSON_OVERHEAD.
_JSON_BYTES_PER_SAMPLE: Final = 40
_JSON_OVERHEAD: Final = 64 * 1024

STATES: Final = ("ok", "warning", "alarm")
KINDS: Final = ("vibration", "health", "alert")
AGENTS_LEVEL: Final = "_agents"  # reserved topic level; not usable as a machine id

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
_ID_RE: Final = re.compile(ID_PATTERN)
_NUMBER_TYPES: Final = frozenset({int, float})

# JSON nesting scan (only run when a payload holds more brackets than MAX_JSON_DEPTH): strings are
# removed first (an unterminated string runs to the end, so the pattern never backtracks), then the
# remaining brackets are summed as +1/-1 steps.
_JSON_STRING_RE: Final = re.compile(rb'"(?:[^"\\]|\\[\s\S])*+"?')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP: Final = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[list(b"[{")] = 1
_BRACKET_STEP[list(b"]}")] = -1

Float32Array = npt.NDArray[np.float32]
State = Literal["ok", "warning", "alarm"]


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
    """An agent's presence, retained on `{prefix}/_agents/{agent}/status` (and its last will).

    `warning` / `alarm` are the thresholds of the model it serves, when the agent announces them
    (dashboards draw them); both or neither.
    """

    state: Literal["online", "offline"]
    model: str  # model version served ("" before the first model)
    warning: float | None = None
    alarm: float | None = None
    storage: str | None = None  # e.g. "degraded" while the agent cannot commit to its store


@dataclass(frozen=True, slots=True)
class SensorTopic:
    """A parsed `{prefix}/{machine}/{sensor}/{kind}` topic."""

    machine: str
    sensor: str
    kind: str  # "vibration" | "health" | "alert"


# -------------------------------------------------------------------------------------- field checks


def _int_field(value: object, name: str, lo: int, hi: int) -> int:
    # bool is an int subclass but never a number on the wire; numpy integers are accepted for senders.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ProtocolError("bad_field", f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ProtocolError("bad_field", f"{name}={v} is outside [{lo}, {hi}]")
    return v


def _float_field(value: object, name: str, *, positive: bool) -> float:
    """A finite number, > 0 when `positive`, else >= 0 (ints accepted; bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ProtocolError("bad_field", f"{name} must be a number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError as exc:
        raise ProtocolError("bad_field", f"{name} is too large for a float") from exc
    if not math.isfinite(v):
        raise ProtocolError("nan", f"{name} is {v}")
    if v < 0.0 or (positive and v == 0.0):
        raise ProtocolError("bad_field", f"{name}={v} must be {'> 0' if positive else '>= 0'}")
    return v


def _f32_field(value: object, name: str, *, positive: bool) -> float:
    """As `_float_field`, then rounded to float32 as the binary header carries it."""
    v = _float_field(value, name, positive=positive)
    if v > _F32_MAX:
        raise ProtocolError("bad_field", f"{name}={v} does not fit a float32")
    v32 = float(np.float32(v))
    if positive and v32 == 0.0:
        raise ProtocolError("bad_field", f"{name}={v} rounds to 0 as a float32")
    return v32


def _str_field(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"{name} must be a string, got {type(value).__name__}")
    return value


def _state_field(value: object, name: str) -> State:
    if value not in STATES:
        raise ProtocolError("bad_field", f"{name} must be one of {', '.join(STATES)}, got {value!r:.40}")
    return value


def _score_field(value: object) -> float:
    v = _float_field(value, "score", positive=False)
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
    seq = _int_field(w.seq, "seq", 0, _U32_MAX)
    ts = _int_field(w.ts_ns, "ts_ns", _I64_MIN, _I64_MAX)
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
        "seq": _int_field(w.seq, "seq", 0, _U32_MAX),
        "ts": _int_field(w.ts_ns, "ts_ns", _I64_MIN, _I64_MAX),
        "fs": _float_field(w.fs, "fs", positive=True),
        "rpm": _float_field(w.rpm, "rpm", positive=False),
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
    doc = _load_json_object(payload, limit)
    try:
        raw = doc["samples"]
        seq_raw, ts_raw, fs_raw = doc["seq"], doc["ts"], doc["fs"]
    except KeyError as exc:
        raise ProtocolError("bad_field", f"JSON window lacks {exc.args[0]!r}") from exc
    seq = _int_field(seq_raw, "seq", 0, _U32_MAX)
    ts = _int_field(ts_raw, "ts", _I64_MIN, _I64_MAX)
    fs = _float_field(fs_raw, "fs", positive=True)
    rpm = _float_field(doc.get("rpm", 0.0), "rpm", positive=False)
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


# ----------------------------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise ProtocolError("bad_json", f"{name} is not JSON; send finite numbers")


def _json_depth(payload: bytes) -> int:
    """Deepest nesting of arrays/objects in `payload`, ignoring brackets inside strings."""
    brackets = _JSON_STRING_RE.sub(b"", payload).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = _BRACKET_STEP[np.frombuffer(brackets, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max())


def _load_json_object(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """Parse strict JSON (no NaN/Infinity, bounded size and depth) that must be an object."""
    if len(payload) > max_bytes:
        raise ProtocolError("too_large", f"{len(payload)} bytes > {max_bytes} allowed")
    # Nesting is bounded by the number of opening brackets; count is cheap, the scan only runs if needed.
    if payload.count(b"[") + payload.count(b"{") > MAX_JSON_DEPTH:
        depth = _json_depth(payload)
        if depth > MAX_JSON_DEPTH:
            raise ProtocolError("too_large", f"JSON nested {depth} deep > {MAX_JSON_DEPTH} allowed")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError, and ints longer than sys.get_int_max_str_digits()
        raise ProtocolError("bad_json", str(exc)[:200]) from exc
    except RecursionError as exc:  # unreachable after the depth check; kept as a guarantee
        raise ProtocolError("too_large", "JSON nested too deep") from exc
    if not isinstance(doc, dict):
        raise ProtocolError("bad_field", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _json_default(obj: object) -> Any:
    """Let numpy scalars and arrays in `Health.extra` serialise as plain JSON numbers and lists."""
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dump_json(doc: Mapping[str, Any]) -> bytes:
    try:
        data = json.dumps(doc, separators=(",", ":"), allow_nan=False, default=_json_default).encode()
    except ValueError as exc:  # allow_nan=False, or a circular reference
        raise ProtocolError("nan", str(exc)[:200]) from exc
    except (TypeError, RecursionError) as exc:
        raise ProtocolError("bad_field", str(exc)[:200]) from exc
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"{len(data)} bytes > MAX_MESSAGE_BYTES={MAX_MESSAGE_BYTES}")
    return data


def _require(doc: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise ProtocolError("bad_field", f"{what} lacks {', '.join(map(repr, missing))}")


# ------------------------------------------------------------------------------------- health / alert

_HEALTH_KEYS: Final = ("machine", "sensor", "seq", "ts", "score", "state", "model")
_ALERT_KEYS: Final = ("machine", "sensor", "seq", "ts", "state", "previous_state", "score", "model", "reason")


def encode_health(h: Health) -> bytes:
    """Encode a health message as compact JSON; `extra` fields sit beside the fixed ones.

    >>> encode_health(Health("m1", "s0", 4, 99, 0.25, "ok", "v3", {"p_outer": 0.5}))
    b'{"machine":"m1","sensor":"s0","seq":4,"ts":99,"score":0.25,"state":"ok","model":"v3","p_outer":0.5}'
    """
    doc: dict[str, Any] = {
        "machine": validate_id(h.machine),
        "sensor": validate_id(h.sensor),
        "seq": _int_field(h.seq, "seq", 0, _U32_MAX),
        "ts": _int_field(h.ts_ns, "ts_ns", _I64_MIN, _I64_MAX),
        "score": _score_field(h.score),
        "state": _state_field(h.state, "state"),
        "model": _str_field(h.model, "model"),
    }
    if not isinstance(h.extra, Mapping):
        raise ProtocolError("bad_field", f"extra must be a mapping, got {type(h.extra).__name__}")
    for key, value in h.extra.items():
        if not isinstance(key, str) or key in doc:
            raise ProtocolError(
                "bad_field", f"extra key {key!r} is not a string or clashes with a fixed field"
            )
        doc[key] = value
    return _dump_json(doc)


def decode_health(b: bytes | bytearray | memoryview) -> Health:
    """Decode a health message; unknown fields land in `extra`. Raises only ProtocolError."""
    doc = _load_json_object(_as_bytes(b), MAX_MESSAGE_BYTES)
    _require(doc, _HEALTH_KEYS, "health message")
    return Health(
        machine=_id_field(doc["machine"]),
        sensor=_id_field(doc["sensor"]),
        seq=_int_field(doc["seq"], "seq", 0, _U32_MAX),
        ts_ns=_int_field(doc["ts"], "ts", _I64_MIN, _I64_MAX),
        score=_score_field(doc["score"]),
        state=_state_field(doc["state"], "state"),
        model=_str_field(doc["model"], "model"),
        extra={k: v for k, v in doc.items() if k not in _HEALTH_KEYS},
    )


def encode_alert(a: Alert) -> bytes:
    """Encode an alert (alarm-state change) as compact JSON."""
    return _dump_json(
        {
            "machine": validate_id(a.machine),
            "sensor": validate_id(a.sensor),
            "seq": _int_field(a.seq, "seq", 0, _U32_MAX),
            "ts": _int_field(a.ts_ns, "ts_ns", _I64_MIN, _I64_MAX),
            "state": _state_field(a.state, "state"),
            "previous_state": _state_field(a.previous_state, "previous_state"),
            "score": _score_field(a.score),
            "model": _str_field(a.model, "model"),
            "reason": _str_field(a.reason, "reason"),
        }
    )


def decode_alert(b: bytes | bytearray | memoryview) -> Alert:
    """Decode an alert; unknown fields are ignored. Raises only ProtocolError."""
    doc = _load_json_object(_as_bytes(b), MAX_MESSAGE_BYTES)
    _require(doc, _ALERT_KEYS, "alert message")
    return Alert(
        machine=_id_field(doc["machine"]),
        sensor=_id_field(doc["sensor"]),
        seq=_int_field(doc["seq"], "seq", 0, _U32_MAX),
        ts_ns=_int_field(doc["ts"], "ts", _I64_MIN, _I64_MAX),
        state=_state_field(doc["state"], "state"),
        previous_state=_state_field(doc["previous_state"], "previous_state"),
        score=_score_field(doc["score"]),
        model=_str_field(doc["model"], "model"),
        reason=_str_field(doc["reason"], "reason"),
    )


def _as_bytes(b: object) -> bytes:
    if isinstance(b, bytes):
        return b
    if isinstance(b, bytearray | memoryview):
        return bytes(b)
    raise TypeError(f"payload must be bytes-like, got {type(b).__name__}")


# --------------------------------------------------------------------------------------------- topics


def validate_id(s: str) -> str:
    """Return `s` if it is a valid machine, sensor or agent id (`[A-Za-z0-9_-]{1,64}`).

    >>> validate_id("press-7_a")
    'press-7_a'
    >>> validate_id("a/b")
    Traceback (most recent call last):
        ...
    edge_agent.errors.ProtocolError: bad_id: 'a/b' does not match [A-Za-z0-9_-]{1,64}
    """
    if not isinstance(s, str) or _ID_RE.fullmatch(s) is None:
        raise ProtocolError("bad_id", f"{s!r:.80} does not match {ID_PATTERN}")
    return s


def _id_field(value: object) -> str:
    return validate_id(cast(str, value))


def _machine_id(machine: str) -> str:
    if validate_id(machine) == AGENTS_LEVEL:
        raise ProtocolError(
            "bad_id", f"{AGENTS_LEVEL!r} is reserved for agent topics; pick another machine id"
        )
    return machine


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not all(_ID_RE.fullmatch(level) for level in prefix.split("/")):
        raise ProtocolError(
            "bad_topic", f"prefix {prefix!r:.80} must be one or more /-separated levels of {ID_PATTERN}"
        )
    return prefix


def _sensor_topic(prefix: str, machine: str, sensor: str, kind: str) -> str:
    return f"{_check_prefix(prefix)}/{_machine_id(machine)}/{validate_id(sensor)}/{kind}"


def vibration_topic(prefix: str, machine: str, sensor: str) -> str:
    """`{prefix}/{machine}/{sensor}/vibration` (sensor → agent, QoS 1)."""
    return _sensor_topic(prefix, machine, sensor, "vibration")


def health_topic(prefix: str, machine: str, sensor: str) -> str:
    """`{prefix}/{machine}/{sensor}/health` (agent →, QoS 1)."""
    return _sensor_topic(prefix, machine, sensor, "health")


def alert_topic(prefix: str, machine: str, sensor: str) -> str:
    """`{prefix}/{machine}/{sensor}/alert` (agent →, QoS 1, retained)."""
    return _sensor_topic(prefix, machine, sensor, "alert")


def vibration_subscription(prefix: str) -> str:
    """The filter an agent subscribes to: `{prefix}/+/+/vibration`."""
    return f"{_check_prefix(prefix)}/+/+/vibration"


def agent_status_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/status` (retained; also the last will)."""
    return f"{_check_prefix(prefix)}/{AGENTS_LEVEL}/{validate_id(agent)}/status"


def model_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/model` (deployer → agent: a signed bundle)."""
    return f"{_check_prefix(prefix)}/{AGENTS_LEVEL}/{validate_id(agent)}/model"


def model_result_topic(prefix: str, agent: str) -> str:
    """`{prefix}/_agents/{agent}/model/result` (agent →: accepted or rejected, and why)."""
    return f"{model_topic(prefix, agent)}/result"


def parse_sensor_topic(topic: str, prefix: str) -> SensorTopic:
    """Split `{prefix}/{machine}/{sensor}/{kind}`; raises ProtocolError("bad_topic" or "bad_id").

    >>> parse_sensor_topic("gruwatch/press7/s0/vibration", "gruwatch")
    SensorTopic(machine='press7', sensor='s0', kind='vibration')
    """
    _check_prefix(prefix)
    if not isinstance(topic, str) or not topic.startswith(prefix + "/"):
        raise ProtocolError("bad_topic", f"{topic!r:.120} is not under the prefix {prefix!r}")
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) != 3 or levels[2] not in KINDS:
        raise ProtocolError(
            "bad_topic", f"{topic!r:.120} is not {prefix}/<machine>/<sensor>/<{'|'.join(KINDS)}>"
        )
    machine, sensor, kind = levels
    return SensorTopic(_machine_id(machine), validate_id(sensor), kind)


# ------------------------------------------------------------------ fast health encoding (agent hot path)


class HealthEncoder:
    """Health messages as `protocol.encode_health` writes them, byte for byte, without its generality.

    The fixed part is pre-built: `head(machine, sensor)` once per sensor (ids validated when the
    topic was parsed), the model's JSON string once per model, each extra field's JSON key once.
    Values are formatted as `json.dumps` does (ints with str, floats with float.__repr__).
    tests/edge_agent/test_daemon_e2e.py checks the bytes against encode_health.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._tail = f',"model":{json.dumps(model)}'
        self._keys: dict[str, str] = {}

    @staticmethod
    def head(machine: str, sensor: str) -> bytes:
        validate_id(machine)
        validate_id(sensor)
        return f'{{"machine":"{machine}","sensor":"{sensor}","seq":'.encode()

    def encode(self, seq: int, ts_ns: int, score: float, state: str, extra: dict[str, Any]) -> bytes:
        """Everything after the head; `score` finite in [0, 1], `state` one of ok/warning/alarm."""
        if state not in _HEALTH_STATES or not 0.0 <= score <= 1.0:
            raise ProtocolError("bad_field", f"score {score!r} or state {state!r} out of range")
        parts = [f'{seq},"ts":{ts_ns},"score":{score!r},"state":"{state}"', self._tail]
        keys = self._keys
        for name, value in extra.items():
            key = keys.get(name)
            if key is None:
                key = keys[name] = f",{json.dumps(name)}:"
            parts.append(key)
            parts.append(_json_scalar(value))
        parts.append("}")
        return "".join(parts).encode()


_HEALTH_STATES: Final = frozenset({"ok", "warning", "alarm"})


def _json_scalar(value: object) -> str:
    """A value as json.dumps writes it (finite floats, ints, strings)."""
    if type(value) is float:
        if not math.isfinite(value):
            raise ProtocolError("nan", f"health field value {value!r} is not finite")
        return repr(value)
    if type(value) is int:
        return str(value)
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# ------------------------------------------------------------------------------------- agent status

AGENT_STATES: Final = ("online", "offline")


def encode_status(s: AgentStatus) -> bytes:
    """Encode an agent status: `{"state","model"}`, plus `"thresholds": {"warning","alarm"}` and
    `"storage"` when set.

    >>> encode_status(AgentStatus("online", "v3", warning=0.4, alarm=0.6))
    b'{"state":"online","model":"v3","thresholds":{"warning":0.4,"alarm":0.6}}'
    """
    if s.state not in AGENT_STATES:
        raise ProtocolError("bad_field", f"state must be online or offline, got {s.state!r:.40}")
    doc: dict[str, Any] = {"state": s.state, "model": _str_field(s.model, "model")}
    if s.warning is not None or s.alarm is not None:
        warning, alarm = _thresholds_field({"warning": s.warning, "alarm": s.alarm})
        doc["thresholds"] = {"warning": warning, "alarm": alarm}
    if s.storage is not None:
        doc["storage"] = _str_field(s.storage, "storage")
    return _dump_json(doc)


def decode_status(b: bytes | bytearray | memoryview) -> AgentStatus:
    """Decode an agent status; unknown keys are ignored. Raises only ProtocolError."""
    doc = _load_json_object(_as_bytes(b), MAX_MESSAGE_BYTES)
    _require(doc, ("state", "model"), "agent status")
    if doc["state"] not in AGENT_STATES:
        raise ProtocolError("bad_field", f"state must be online or offline, got {doc['state']!r:.40}")
    warning = alarm = None
    if doc.get("thresholds") is not None:
        warning, alarm = _thresholds_field(doc["thresholds"])
    storage = doc.get("storage")
    return AgentStatus(
        doc["state"],
        _str_field(doc["model"], "model"),
        warning,
        alarm,
        None if storage is None else _str_field(storage, "storage"),
    )


def _thresholds_field(value: object) -> tuple[float, float]:
    if not isinstance(value, Mapping) or "warning" not in value or "alarm" not in value:
        raise ProtocolError("bad_field", "thresholds must be an object with warning and alarm")
    warning = _float_field(value["warning"], "thresholds.warning", positive=False)
    alarm = _float_field(value["alarm"], "thresholds.alarm", positive=False)
    if not 0.0 <= warning <= alarm <= 1.0:
        raise ProtocolError("bad_field", f"need 0 <= warning ({warning}) <= alarm ({alarm}) <= 1")
    return warning, alarm
