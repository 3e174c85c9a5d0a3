"""Strict JSON for the wire: bounded size and depth, no NaN/Infinity, objects only, checked fields; errors are ProtocolError."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from edge_agent.errors import ProtocolError

#: Deepest JSON nesting accepted (objects and arrays together); checked before parsing.
MAX_JSON_DEPTH: Final = 32
#: Largest health or alert message accepted, in bytes.
MAX_MESSAGE_BYTES: Final = 1 << 20

# JSON nesting scan (only run when a payload holds more brackets than MAX_JSON_DEPTH): strings are
# removed first (an unterminated string runs to the end, so the pattern never backtracks), then the
# remaining brackets are summed as +1/-1 steps.
_JSON_STRING_RE: Final = re.compile(rb'"(?:[^"\\]|\\[\s\S])*+"?')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP: Final = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[list(b"[{")] = 1
_BRACKET_STEP[list(b"]}")] = -1


def _reject_constant(name: str) -> Any:
    raise ProtocolError("bad_json", f"{name} is not JSON; send finite numbers")


#: One decoder for every message (json.loads with a keyword builds a new JSONDecoder per call).
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _json_depth(payload: bytes) -> int:
    """Deepest nesting of arrays/objects in `payload`, ignoring brackets inside strings."""
    brackets = _JSON_STRING_RE.sub(b"", payload).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = _BRACKET_STEP[np.frombuffer(brackets, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max())


def load_json_object(payload: bytes, max_bytes: int) -> dict[str, Any]:
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
        doc = _DECODER.decode(text)
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


def dump_json(doc: Mapping[str, Any]) -> bytes:
    try:
        data = json.dumps(doc, separators=(",", ":"), allow_nan=False, default=_json_default).encode()
    except ValueError as exc:  # allow_nan=False, or a circular reference
        raise ProtocolError("nan", str(exc)[:200]) from exc
    except (TypeError, RecursionError) as exc:
        raise ProtocolError("bad_field", str(exc)[:200]) from exc
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"{len(data)} bytes > MAX_MESSAGE_BYTES={MAX_MESSAGE_BYTES}")
    return data


def require_fields(doc: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise ProtocolError("bad_field", f"{what} lacks {', '.join(map(repr, missing))}")


def int_field(value: object, name: str, lo: int, hi: int) -> int:
    # bool is an int subclass but never a number on the wire; numpy integers are accepted for senders.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ProtocolError("bad_field", f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ProtocolError("bad_field", f"{name}={v} is outside [{lo}, {hi}]")
    return v


def float_field(value: object, name: str, *, positive: bool) -> float:
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


def str_field(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"{name} must be a string, got {type(value).__name__}")
    return value
