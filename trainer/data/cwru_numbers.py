"""What each original CWRU recording number holds: class, motor load and sampling rate.

The Bearing Data Center serves its files under their recording number (`105.mat`, `3001.mat`) and
copies circulate with short names (`IR007_0.mat`, `normal_1.mat`); neither name says the rate or,
for the numbered ones, the class. The number of the file's `X<no>_DE_time` variable does, through
the tables of the Data Center's pages "12k Drive End Bearing Fault Data", "48k Drive End Bearing
Fault Data" and "Normal Baseline Data", transcribed here (loads 0, 1, 2, 3 hp in that order).

Only drive-end faults and the normal baselines: in the fan-end fault files (recordings 270–318,
`FAN_END`) the drive-end channel watches a healthy bearing, so they are left out rather than
labelled wrongly. Outer-race faults at
3, 6 and 12 o'clock share one class (`OR007`, ...), as the descriptive file names already do.
The quirks of the originals are kept: the 48 kHz IR014 file at 0 hp (`174.mat`) holds `X173_*`,
and the 0.028 in faults (files 3001–3008) hold `X048_*`–`X051_*` (ball) and `X056_*`–`X059_*`
(inner race).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Recording(NamedTuple):
    cls: str  # "normal", "IR007", "B014", "OR021", ...
    load: int  # motor load, hp
    fs: float  # sampling rate of the drive-end channel, Hz


# variable numbers at loads 0, 1, 2, 3 hp
_DE_12K: Final[dict[str, tuple[tuple[int, ...], ...]]] = {
    "IR007": ((105, 106, 107, 108),),
    "B007": ((118, 119, 120, 121),),
    "OR007": ((130, 131, 132, 133), (144, 145, 146, 147), (156, 158, 159, 160)),  # @6, @3, @12
    "IR014": ((169, 170, 171, 172),),
    "B014": ((185, 186, 187, 188),),
    "OR014": ((197, 198, 199, 200),),
    "IR021": ((209, 210, 211, 212),),
    "B021": ((222, 223, 224, 225),),
    "OR021": ((234, 235, 236, 237), (246, 247, 248, 249), (258, 259, 260, 261)),
    "B028": ((48, 49, 50, 51),),
    "IR028": ((56, 57, 58, 59),),
}
_DE_48K: Final[dict[str, tuple[tuple[int, ...], ...]]] = {
    "IR007": ((109, 110, 111, 112),),
    "B007": ((122, 123, 124, 125),),
    "OR007": ((135, 136, 137, 138), (148, 149, 150, 151), (161, 162, 163, 164)),
    "IR014": ((173, 175, 176, 177),),
    "B014": ((189, 190, 191, 192),),
    "OR014": ((201, 202, 203, 204),),
    "IR021": ((213, 214, 215, 217),),
    "B021": ((226, 227, 228, 229),),
    "OR021": ((238, 239, 240, 241), (250, 251, 252, 253), (262, 263, 264, 265)),
    "normal": ((97, 98, 99, 100),),  # the normal baselines are 48 kHz recordings
}


def _table() -> dict[int, Recording]:
    out: dict[int, Recording] = {}
    for fs, classes in ((12_000.0, _DE_12K), (48_000.0, _DE_48K)):
        for cls, rows in classes.items():
            for row in rows:
                for load, number in enumerate(row):
                    if number in out:  # pragma: no cover - a transcription error, caught by the tests
                        raise AssertionError(f"CWRU recording {number} listed twice")
                    out[number] = Recording(cls, load, fs)
    return out


RECORDINGS: Final[dict[int, Recording]] = _table()
FAN_END: Final = range(270, 319)  # 12 kHz fan-end fault recordings (IR, B, OR at 0.007-0.021 in)


def fault_size_in(cls: str) -> float:
    """0.007 for "IR007", 0.0 for "normal"."""
    return 0.0 if cls == "normal" else int(cls[-3:]) / 1000.0
