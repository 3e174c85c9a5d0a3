"""Rolling-element bearing geometry and its characteristic defect frequencies.

One implementation shared by the simulator (to place fault impulses) and the feature extractor (to
look for them in the envelope spectrum). Standard kinematic formulas (Randall & Antoni, "Rolling
element bearing diagnostics — a tutorial", MSSP 25 (2011) 485–520, eqs. 1–4), with the outer race
fixed and the inner race turning at shaft speed:

    FTF  = fr/2 · (1 − d/D·cosφ)                 cage (fundamental train)
    BPFO = n·fr/2 · (1 − d/D·cosφ)               ball pass, outer race
    BPFI = n·fr/2 · (1 + d/D·cosφ)               ball pass, inner race
    BSF  = D/(2d) · fr · (1 − (d/D·cosφ)²)       ball spin (a ball defect strikes twice per turn)

>>> g = PRESETS["cwru_6205"]
>>> round(g.bpfo(1797.0), 1), round(g.bpfi(1797.0), 1), round(g.bsf(1797.0), 1), round(g.ftf(1797.0), 1)
(107.4, 162.2, 70.6, 11.9)

CWRU's own table lists 141.2 Hz as "BSF" at 1797 rpm: that is 2×BSF, the rate at which one ball
defect strikes the races. Here `bsf` is the spin frequency itself; the simulator and features use
2×BSF where impacts are meant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Geometry of one bearing. Diameters in any one unit (only their ratio matters); angle in degrees."""

    name: str
    n_balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_balls < 3:
            raise ValueError(f"a bearing needs at least 3 rolling elements, got {self.n_balls}")
        if not 0 < self.ball_diameter < self.pitch_diameter:
            raise ValueError("need 0 < ball_diameter < pitch_diameter")
        if not 0 <= self.contact_angle_deg < 90:
            raise ValueError("contact angle must be in [0, 90) degrees")

    @property
    def _ratio(self) -> float:
        return self.ball_diameter / self.pitch_diameter * math.cos(math.radians(self.contact_angle_deg))

    # Orders: defect frequency divided by shaft frequency (independent of speed).
    @property
    def ftf_order(self) -> float:
        return 0.5 * (1.0 - self._ratio)

    @property
    def bpfo_order(self) -> float:
        return 0.5 * self.n_balls * (1.0 - self._ratio)

    @property
    def bpfi_order(self) -> float:
        return 0.5 * self.n_balls * (1.0 + self._ratio)

    @property
    def bsf_order(self) -> float:
        return self.pitch_diameter / (2.0 * self.ball_diameter) * (1.0 - self._ratio**2)

    def ftf(self, rpm: float) -> float:
        return self.ftf_order * rpm / 60.0

    def bpfo(self, rpm: float) -> float:
        return self.bpfo_order * rpm / 60.0

    def bpfi(self, rpm: float) -> float:
        return self.bpfi_order * rpm / 60.0

    def bsf(self, rpm: float) -> float:
        return self.bsf_order * rpm / 60.0

    def orders(self) -> dict[str, float]:
        """Defect orders keyed 'bpfo', 'bpfi', 'bsf', 'ftf' (multiples of shaft frequency)."""
        return {
            "bpfo": self.bpfo_order,
            "bpfi": self.bpfi_order,
            "bsf": self.bsf_order,
            "ftf": self.ftf_order,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BearingGeometry:
        return cls(
            name=str(data["name"]),
            n_balls=int(data["n_balls"]),
            ball_diameter=float(data["ball_diameter"]),
            pitch_diameter=float(data["pitch_diameter"]),
            contact_angle_deg=float(data.get("contact_angle_deg", 0.0)),
        )


PRESETS: dict[str, BearingGeometry] = {
    # SKF 6205-2RS JEM, CWRU drive end: 9 balls, 0.3126 in balls, 1.537 in pitch (CWRU data README).
    "cwru_6205": BearingGeometry("cwru_6205", 9, 0.3126, 1.537, 0.0),
    # PRONOSTIA test bearing (NSK 6804DD as documented by Nectoux et al. 2012): 13 balls,
    # 3.5 mm balls, 25.6 mm pitch diameter, 0° contact angle.
    "femto_6804": BearingGeometry("femto_6804", 13, 3.5, 25.6, 0.0),
}
