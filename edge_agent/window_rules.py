"""What a vibration window must be before the agent scores it, and what a bad peer is told in the log.

`WindowRules.window` decodes one payload with the agent's `max_samples` (checked before any sample
is read) and refuses, with a `ProtocolError` reason, what the served model was not made for:
fewer than `min_samples` samples (`too_short`); a sample rate above `max_fs_hz`, a shaft speed
above `max_rpm` or a sample beyond ±`max_abs_g` (`implausible`); a sample rate below what the
model's feature spec needs for its bands and envelope (`model_mismatch`,
`FeatureSpec.min_full_sample_rate`), or a sample rate, length or shaft speed outside what the
card says the model was trained on (`model_mismatch`, `edge_agent.trained_on`; a card without
`trained_on` gets only the checks before it, and the log says so once per model). A timestamp
between 10^12 and 10^13 is milliseconds (JavaScript's `Date.now()`, Node-RED: 2001 to 2286), not
nanoseconds of 1970: it is converted and said. docs/protocol.md ("What the agent scores") is the
reference.

Every rejection is counted by the link; `RejectionLogger` also says it once per reason every
`every_s` seconds at most, with the topic and the detail, and how many more it did not say.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog

from edge_agent.errors import ProtocolError
from edge_agent.protocol import Window, decode_vibration

if TYPE_CHECKING:
    from edge_agent.features import FeatureSpec
    from edge_agent.settings import AgentSettings
    from edge_agent.trained_on import TrainedOn

log = structlog.get_logger("edge_agent.mqtt")

#: Sensor timestamps in [MS_LOW, MS_HIGH) are milliseconds since the epoch (2001-09-09 .. 2286-11-20).
MS_LOW: Final = 10**12
MS_HIGH: Final = 10**13
LOG_EVERY_S: Final = 10.0


@dataclass
class WindowRules:
    """The agent's limits for incoming windows (settings), the served model's lowest sample rate and
    what it was trained on (None: the card does not say)."""

    max_samples: int
    min_samples: int
    max_fs_hz: float
    max_rpm: float
    max_abs_g: float
    min_fs_hz: float = 0.0  # the served model's (use_spec)
    model: str = ""  # the served model's version, for the rejection's detail
    trained: TrainedOn | None = None  # the served model's (use_spec)

    @classmethod
    def from_settings(cls, s: AgentSettings) -> WindowRules:
        return cls(s.max_samples, s.min_samples, s.max_fs_hz, s.max_rpm, s.max_abs_g)

    def __post_init__(self) -> None:
        self.log = RejectionLogger()
        self.ms_converted = 0

    def use_spec(self, spec: FeatureSpec, model: str, trained: TrainedOn | None = None) -> None:
        """Check windows against the model served from now on (`trained`: its card's `trained_on`)."""
        self.min_fs_hz, self.model, self.trained = spec.min_full_sample_rate, model, trained
        if trained is None:
            # A fresh logger, not the module's: its first use would cache it (cache_logger_on_first_use)
            # with whatever configuration is current at start-up.
            structlog.get_logger("edge_agent.model").warning(
                "model_trained_on_unknown",
                model=model,
                detail="the card does not say what windows the model was trained on (a bundle made "
                f"before cards recorded it): only fs >= {self.min_fs_hz:g} Hz and min_samples/"
                "max_samples are checked; retrain or rebuild the bundle to check sample rate and length",
            )

    def window(self, payload: bytes | bytearray | memoryview, topic: str = "") -> Window:
        """Decode and check one payload; raises only ProtocolError (reasons in PROTOCOL_REASONS)."""
        w = decode_vibration(payload, max_samples=self.max_samples)
        n = int(w.samples.size)
        if n < self.min_samples:
            raise ProtocolError("too_short", f"{n} samples < min_samples={self.min_samples}")
        if w.fs > self.max_fs_hz:
            raise ProtocolError("implausible", f"sample rate fs={w.fs:g} Hz > max_fs_hz={self.max_fs_hz:g}")
        if w.rpm > self.max_rpm:
            raise ProtocolError("implausible", f"rpm={w.rpm:g} > max_rpm={self.max_rpm:g}")
        if w.fs < self.min_fs_hz:
            raise ProtocolError(
                "model_mismatch",
                f"sample rate fs={w.fs:g} Hz: model {self.model} needs >= {self.min_fs_hz:g} Hz for its bands",
            )
        why = None if self.trained is None else self.trained.mismatch(n, w.fs, w.rpm)
        if why is not None:
            raise ProtocolError("model_mismatch", f"model {self.model}: {why}")
        lim = self.max_abs_g
        if float(w.samples.max()) > lim or float(w.samples.min()) < -lim:
            raise ProtocolError("implausible", f"a sample beyond ±{lim:g} g (max_abs_g)")
        if MS_LOW <= w.ts_ns < MS_HIGH:
            self.ms_converted += 1
            self.log.say("window_ts_milliseconds", topic, "ts read as milliseconds since the epoch; send ns")
            return Window(w.seq, w.ts_ns * 1_000_000, w.fs, w.rpm, w.samples)
        return w


class RejectionLogger:
    """One warning per reason every `every_s` seconds at most (thread-safe), with the latest topic and
    detail and the number of rejections of that reason not said since the previous line."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}

    def rejected(self, topic: str, exc: ProtocolError) -> None:
        self.say("window_rejected", topic, exc.detail, reason=exc.reason)

    def dropped(self, sensor: str, seq: int, reason: str) -> None:
        """A window the daemon dropped (duplicate, stale, bad features ...)."""
        self.say("window_dropped", sensor, f"seq {seq}", reason=reason)

    def say(self, event: str, where: str, detail: str, *, reason: str = "") -> bool:
        key = f"{event}:{reason}"
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, float("-inf")):
                self._unsaid[key] = self._unsaid.get(key, 0) + 1
                return False
            self._next[key] = now + self.every_s
            unsaid = self._unsaid.pop(key, 0)
        fields = {"reason": reason} if reason else {}
        log.warning(event, topic=where[:200], detail=detail[:300], not_logged_since=unsaid, **fields)
        return True
