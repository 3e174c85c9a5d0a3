"""What a model was trained on (the card's optional `trained_on`), and whether one window matches it.

The trainer records the windows it fitted and calibrated on (docs/model-bundle.md):

    "trained_on": {"sample_rates_hz": [25600.0], "window_samples": [2560, 2560],
                   "rpm": [1455.2, 1546.1], "rms_g": [0.012, 3.4], "windows": 48210}

`TrainedOn.from_card` reads and checks it (ValueError says which part is wrong; the bundle loader
turns that into `bad_card`), and `TrainedOn.mismatch` says why a window is not one the model was
made for, or None. `edge_agent.window_rules.WindowRules` raises it as `model_mismatch`:

- sample rate: within ±`FS_TOLERANCE` (1 %) of one of the trained rates. A rate in between two
  trained rates is refused too: the model saw those rates, not every rate between them.
- length: within a factor `LENGTH_FACTOR` (2) of the trained lengths, [shortest / 2, longest × 2].
  The features are in Hz and shaft orders, not bins, so the length changes only the spectral
  resolution and the time statistics' spread (docs/features.md); half or twice the trained length
  keeps them close, a 2-sample or a 1 M-sample window does not.
- shaft speed: when both the window and the training data know it (rpm > 0), within
  [lowest / `RPM_FACTOR`, highest × `RPM_FACTOR`] (±25 % beyond the trained range). rpm 0
  (unknown) is not refused here: the features fall back to the spec's nominal speed.

`rms_g` (per-window RMS, lowest and highest) is recorded, never enforced: a failing bearing
vibrates harder than anything it did when healthy, and refusing that would hide the alarm
(`max_abs_g` refuses what is not a vibration at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

FS_TOLERANCE: Final = 0.01
LENGTH_FACTOR: Final = 2.0
RPM_FACTOR: Final = 1.25
MAX_RATES: Final = 64


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _pair(v: Any, what: str, *, positive: bool, integer: bool = False) -> tuple[float, float]:
    ok = isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v)
    if ok and integer:
        ok = all(isinstance(x, int) for x in v)
    if not ok or not (v[0] > 0 if positive else v[0] >= 0) or v[1] < v[0]:
        kind = "integers" if integer else "finite numbers"
        low = "> 0" if positive else ">= 0"
        raise ValueError(f"trained_on.{what} must be [lowest, highest], {kind} {low}, got {v!r}")
    return float(v[0]), float(v[1])


@dataclass(frozen=True)
class TrainedOn:
    """The training windows' sample rates (Hz), length range (samples), shaft-speed range (None:
    unknown) and per-window RMS range (g)."""

    sample_rates_hz: tuple[float, ...]
    window_samples: tuple[int, int]
    rpm: tuple[float, float] | None = None
    rms_g: tuple[float, float] | None = None
    windows: int = 0

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> TrainedOn | None:
        """The card's `trained_on`, or None when the card has none (a bundle made before it existed)."""
        if "trained_on" not in card:
            return None
        doc = card["trained_on"]
        if not isinstance(doc, dict):
            raise ValueError("trained_on must be an object")
        rates = doc.get("sample_rates_hz")
        if not (
            isinstance(rates, list)
            and 1 <= len(rates) <= MAX_RATES
            and all(_number(r) and r > 0 for r in rates)
        ):
            raise ValueError(
                f"trained_on.sample_rates_hz must list 1 to {MAX_RATES} sample rates > 0 Hz, got {rates!r}"
            )
        lo, hi = _pair(doc.get("window_samples"), "window_samples", positive=True, integer=True)
        rpm = doc.get("rpm")
        rms = doc.get("rms_g")
        windows = doc.get("windows", 0)
        if not (isinstance(windows, int) and not isinstance(windows, bool) and windows >= 0):
            raise ValueError(f"trained_on.windows must be a non-negative integer, got {windows!r}")
        return cls(
            sample_rates_hz=tuple(sorted(float(r) for r in rates)),
            window_samples=(int(lo), int(hi)),
            rpm=None if rpm is None else _pair(rpm, "rpm", positive=True),
            rms_g=None if rms is None else _pair(rms, "rms_g", positive=False),
            windows=windows,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_rates_hz": list(self.sample_rates_hz),
            "window_samples": list(self.window_samples),
            "rpm": None if self.rpm is None else list(self.rpm),
            "rms_g": None if self.rms_g is None else list(self.rms_g),
            "windows": self.windows,
        }

    def describe(self) -> str:
        """One line for people: what the model was trained on and what the agent accepts."""
        lo, hi = self.length_range
        rates = ", ".join(f"{r:g}" for r in self.sample_rates_hz)
        speed = "speed unknown" if self.rpm is None else f"{self.rpm[0]:g}..{self.rpm[1]:g} rpm"
        a, b = self.window_samples
        return f"{rates} Hz, {a}..{b} samples, {speed} (accepts ±1 % in rate, {lo}..{hi} samples)"

    @property
    def length_range(self) -> tuple[int, int]:
        """The window lengths accepted: a factor LENGTH_FACTOR either side of the trained ones."""
        lo, hi = self.window_samples
        return math.ceil(lo / LENGTH_FACTOR), math.floor(hi * LENGTH_FACTOR)

    def mismatch(self, n: int, fs: float, rpm: float) -> str | None:
        """Why a window of `n` samples at `fs` Hz and `rpm` is not one the model was made for, or None."""
        if not any(abs(fs - r) <= FS_TOLERANCE * r for r in self.sample_rates_hz):
            rates = ", ".join(f"{r:g}" for r in self.sample_rates_hz)
            return f"sample rate fs={fs:g} Hz is not one the model was trained on ({rates} Hz, ±1 %)"
        lo, hi = self.length_range
        if not lo <= n <= hi:
            short, long = self.window_samples
            return (
                f"{n} samples: the model was trained on windows of {short}..{long} samples "
                f"(accepted {lo}..{hi}, a factor {LENGTH_FACTOR:g} either side)"
            )
        if rpm > 0 and self.rpm is not None:
            slow, fast = self.rpm
            if not slow / RPM_FACTOR <= rpm <= fast * RPM_FACTOR:
                return (
                    f"rpm={rpm:g}: the model was trained at {slow:g}..{fast:g} rpm "
                    f"(accepted {slow / RPM_FACTOR:.6g}..{fast * RPM_FACTOR:.6g}, ±25 % beyond)"
                )
        return None
