"""Fault injection for the simulated fleet: what a flaky sensor network does to vibration messages.

Pure logic, no I/O: `FaultInjector` turns each sensor's windows into the payloads to publish, after
dropping, duplicating, reordering, corrupting, NaN-filling, clock-skewing and silencing them at the
configured rates. Every decision comes from the injector's own random streams, one per sensor, seeded
from the fault seed and the sensor's index, so the same seed gives the same faults whatever the pacing
and whichever order sensors are interleaved in. `FaultCounters` records exactly what was done.

Fault model (rates are probabilities in [0, 1]):

- drop: a window is not published at all.
- duplicate: a window is published twice, back to back.
- reorder: a window is held back and published right after the next published window of the same
  sensor (a window chosen while another is held is swapped with the held one instead). Only windows
  that really went out after a later one are counted; one still held when its sensor ends is published
  in order.
  drop + duplicate + reorder must not exceed 1: a window suffers at most one delivery fault.
- corrupt: the payload's bytes are mutated so that the agent's decoder rejects it: the magic is
  overwritten ("magic"), the payload is cut to at most half its length ("truncate"), or junk bytes are
  appended ("trailing"). A corrupted window is counted as corrupted only, never as a NaN window.
- nan_burst: the chance that a window starts a burst of `nan_burst_length` consecutive windows whose
  samples contain NaN (a contiguous run of at least one sample). Dropped windows still use up the burst.
  The protocol's encoders refuse NaN, so `encode_with_nan` writes them as a faulty sensor would: a
  float32 binary window (decoder reason "nan") or JSON with the NaN literal (reason "bad_json").
- clock_skew: the fraction of sensors whose clock is off by a fixed skew, drawn once per sensor with
  magnitude between 10 % and 100 % of `clock_skew_max_s` and either sign.
- silent: the fraction of sensors that stop publishing for good after a point drawn uniformly between
  their first and last planned window (they always publish at least one window first).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from edge_agent.protocol import HEADER_SIZE, Window, encode_binary

# Tags mixed into the seed so the fault streams never coincide with the physics streams of the same seed.
_SETUP_TAG = 0x6661756C  # "faul"
_WINDOW_TAG = 0x74730001
CORRUPT_KINDS: tuple[str, ...] = ("magic", "truncate", "trailing")
_DRAWS_PER_WINDOW = 6


@dataclass(frozen=True)
class FaultConfig:
    """Rates of each fault; all zero (the default) means a clean fleet."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    nan_burst: float = 0.0
    nan_burst_length: int = 3
    clock_skew: float = 0.0
    clock_skew_max_s: float = 30.0
    silent: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "corrupt", "nan_burst", "clock_skew", "silent"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"fault rate {name}={value} is outside [0, 1]; give a probability")
        if self.drop + self.duplicate + self.reorder > 1.0:
            raise ValueError(
                "drop + duplicate + reorder rates exceed 1; a window suffers at most one delivery fault, "
                "so lower one of them"
            )
        if self.nan_burst_length < 1:
            raise ValueError(f"nan_burst_length={self.nan_burst_length}: a burst needs at least 1 window")
        if not (self.clock_skew_max_s >= 0.0 and np.isfinite(self.clock_skew_max_s)):
            raise ValueError(f"clock_skew_max_s={self.clock_skew_max_s}: give a finite number of seconds ≥ 0")

    @property
    def active(self) -> bool:
        """True when any fault is switched on."""
        return any(
            getattr(self, n) > 0
            for n in ("drop", "duplicate", "reorder", "corrupt", "nan_burst", "clock_skew", "silent")
        )


@dataclass
class FaultCounters:
    """Exactly what the injector did. Message counts include duplicates; window counts do not."""

    windows: int = 0  # windows offered to the injector (silenced windows are never offered)
    messages: int = 0  # payloads handed out for publishing (a duplicated window counts twice)
    dropped: int = 0
    duplicated: int = 0  # windows published twice (= extra messages)
    reordered: int = 0  # windows published after a later window of the same sensor
    corrupted: int = 0  # windows published with a corrupted payload
    nan_windows: int = 0  # windows published (not corrupted) with NaN samples
    nan_bursts: int = 0  # bursts started
    skewed_sensors: int = 0
    silent_sensors: int = 0  # sensors that reached their silence point during the run
    corrupt_kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CORRUPT_KINDS, 0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SensorFaultPlan:
    """What is fixed per sensor from the start: its clock skew and where it goes silent."""

    skew_ns: int  # added to every timestamp of this sensor (0 = accurate clock)
    silent_after: int | None  # index of the first window never published (None = never silent)


def encode_with_nan(w: Window, encoding: Literal["binary", "json"]) -> bytes:
    """Encode a window whose samples hold NaN, as a faulty sensor would; the protocol's encoders refuse to.

    binary: a float32 window (whatever dtype the fleet uses, since int16 cannot carry NaN), which the
    decoder rejects with reason "nan"; json: the non-standard `NaN` literal, rejected as "bad_json".
    """
    samples = np.asarray(w.samples, dtype=np.float32)
    if encoding == "json":
        doc = {
            "seq": w.seq,
            "ts": w.ts_ns,
            "fs": w.fs,
            "rpm": w.rpm,
            "samples": samples.astype(np.float64).tolist(),
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
    finite = Window(w.seq, w.ts_ns, w.fs, w.rpm, np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0))
    payload = bytearray(encode_binary(finite, dtype="float32"))
    payload[HEADER_SIZE:] = samples.astype("<f4").tobytes()
    return bytes(payload)


def corrupt_payload(payload: bytes, kind: str, u: float) -> bytes:
    """Mutate `payload` so a decoder must reject it. `u` in [0, 1) picks the cut length or junk length.

    magic: the first two bytes become NUL (neither the binary magic nor a JSON object);
    truncate: keep between 1 byte and half the payload (a header announcing more samples, or unclosed JSON);
    trailing: append 1–16 bytes of 0xFF (more bytes than announced, or invalid UTF-8 after the JSON).
    """
    if kind == "magic":
        return b"\x00\x00" + payload[2:]
    if kind == "truncate":
        keep = 1 + int(u * max(1, len(payload) // 2))
        return payload[: min(keep, max(1, len(payload) // 2))]
    if kind == "trailing":
        return payload + b"\xff" * (1 + int(u * 16))
    raise ValueError(f"unknown corruption kind {kind!r}; use one of {CORRUPT_KINDS}")


class _SensorState:
    __slots__ = ("burst_left", "held", "plan", "rng")

    def __init__(self, rng: np.random.Generator, plan: SensorFaultPlan) -> None:
        self.rng = rng
        self.plan = plan
        self.burst_left = 0
        self.held: bytes | None = None


class FaultInjector:
    """Applies `FaultConfig` to each sensor's windows; deterministic given `seed`.

    `planned_windows[i]` is how many windows sensor i would publish without faults (it places the
    silence point). Sensors are identified by their index in the fleet.
    """

    def __init__(self, config: FaultConfig, seed: int, planned_windows: Sequence[int]) -> None:
        self.config = config
        self.seed = int(seed)
        self.counters = FaultCounters()
        self._sensors: list[_SensorState] = []
        for i, planned in enumerate(planned_windows):
            setup = np.random.default_rng([self.seed, _SETUP_TAG, i])
            u_skew, u_mag, u_sign, u_silent, u_point = setup.random(5)
            skew_ns = 0
            if u_skew < config.clock_skew and config.clock_skew_max_s > 0:
                magnitude = (0.1 + 0.9 * u_mag) * config.clock_skew_max_s
                skew_ns = round((1.0 if u_sign < 0.5 else -1.0) * magnitude * 1e9)
                skew_ns = skew_ns or 1
                self.counters.skewed_sensors += 1
            silent_after = None
            if u_silent < config.silent and planned >= 2:
                silent_after = 1 + int(u_point * (planned - 1))  # in [1, planned - 1]
            rng = np.random.default_rng([self.seed, _WINDOW_TAG, i])
            self._sensors.append(_SensorState(rng, SensorFaultPlan(skew_ns, silent_after)))

    def plan(self, i: int) -> SensorFaultPlan:
        """Sensor i's fixed faults (clock skew, silence point)."""
        return self._sensors[i].plan

    def skew_ns(self, i: int) -> int:
        return self._sensors[i].plan.skew_ns

    def is_silent(self, i: int, k: int) -> bool:
        """True when sensor i publishes nothing from window k on."""
        after = self._sensors[i].plan.silent_after
        return after is not None and k >= after

    def messages(
        self, i: int, k: int, samples: np.ndarray, encode: Callable[[np.ndarray, bool], bytes]
    ) -> list[bytes]:
        """The payloads to publish, in order, for window k of sensor i (possibly none, or a held earlier one).

        `encode(samples, has_nan)` turns the samples into the wire payload (with `has_nan` True it must
        write NaN as a faulty sensor would, e.g. with `encode_with_nan`); it is called at most once.
        Windows of one sensor must be offered in increasing k.
        """
        cfg = self.config
        st = self._sensors[i]
        c = self.counters
        u_delivery, u_corrupt, u_nan, u_kind, u_pos, u_len = st.rng.random(_DRAWS_PER_WINDOW)
        c.windows += 1

        if st.burst_left == 0 and u_nan < cfg.nan_burst:
            st.burst_left = cfg.nan_burst_length
            c.nan_bursts += 1
        in_burst = st.burst_left > 0
        if in_burst:
            st.burst_left -= 1

        if u_delivery < cfg.drop:
            c.dropped += 1
            return []

        corrupt = u_corrupt < cfg.corrupt
        if in_burst and not corrupt and samples.size > 0:
            samples = np.array(samples, dtype=np.float32, copy=True)
            n = samples.size
            start = int(u_pos * n)
            length = 1 + int(u_len * (n - start))
            samples[start : start + length] = np.nan
            c.nan_windows += 1
        has_nan = in_burst and not corrupt and samples.size > 0
        payload = encode(samples, has_nan)
        if corrupt:
            kind = CORRUPT_KINDS[int(u_kind * len(CORRUPT_KINDS))]
            payload = corrupt_payload(payload, kind, u_pos)
            c.corrupted += 1
            c.corrupt_kinds[kind] += 1

        out: list[bytes]
        if u_delivery < cfg.drop + cfg.duplicate:
            out = [payload, payload]
            c.duplicated += 1
        elif u_delivery < cfg.drop + cfg.duplicate + cfg.reorder and st.held is None:
            st.held = payload
            return []
        else:
            out = [payload]
        if st.held is not None:
            out.append(st.held)
            st.held = None
            c.reordered += 1
        c.messages += len(out)
        return out

    def finish(self, i: int, *, silent: bool = False) -> list[bytes]:
        """Sensor i publishes no more windows: release a held window (in order). `silent` counts a silencing."""
        st = self._sensors[i]
        if silent:
            self.counters.silent_sensors += 1
        if st.held is None:
            return []
        held, st.held = st.held, None
        self.counters.messages += 1
        return [held]
