"""Research: a FEMTO bearing's healthy life stretched far beyond any training run — does the GRU stay quiet?

For each held-out bearing (default: all four shared ones, leave one bearing out), `gruwatch train`
defaults on the other three, then `trainer.long_life`: the held-out bearing's first half in order,
`--extra` windows drawn at random from that healthy first half (100,000 = 11.6 days of FEMTO
snapshots, ~110x the longest training run), then its real second half to failure, scored exactly as
the agent scores. Printed per sensor and stretch: the health score (median, p99, max), the median per
quarter of the long stretch (drift), alarm windows and raises, and where the second half first alarms
(with and without the long stretch before it, to see whether a long life dulls the detection).

    .venv/bin/python benchmarks/long_life.py [--bearing Bearing2_2 ...] [--extra 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.scorer import Scorer
from gruwatch.bench import describe
from trainer.cli import main as train_main
from trainer.data.femto import load_femto_bearing
from trainer.long_life import long_life

BEARINGS = ("Bearing1_2", "Bearing2_1", "Bearing2_2", "Bearing3_1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(
        os.environ.get("GRUWATCH_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    p.add_argument("--data", type=Path, default=default_data, help="the shared real data folder")
    p.add_argument(
        "--bearing", action="append", choices=BEARINGS, help="held-out bearings (default: all four)"
    )
    p.add_argument("--extra", type=int, default=100_000, help="healthy windows drawn between the halves")
    p.add_argument(
        "--gain",
        type=float,
        default=1.0,
        help="a slow drift: the drawn windows scaled up geometrically to GAIN x by the last one, the "
        "second half at GAIN x (1: none); prints the gain at the first alarm",
    )
    args = p.parse_args(argv)
    femto = args.data / "femto" / "Learning_set"
    if not femto.is_dir():
        print(f"no FEMTO data at {femto}; give --data or set GRUWATCH_REAL_DATA", file=sys.stderr)
        return 2
    print(describe(), flush=True)
    for held in args.bearing or BEARINGS:
        with tempfile.TemporaryDirectory() as td:
            bundle = Path(td) / "bundle"
            others = [str(femto / b) for b in BEARINGS if b != held]
            said = io.StringIO()
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                trained = train_main(["--data", *others, "--out", str(bundle), "--no-progress", "--json"])
            if trained != 0:
                print(said.getvalue(), file=sys.stderr)
                return 1
            runs = load_femto_bearing(femto / held)
            scorer = Scorer.from_bundle(bundle, allow_unsigned=True)
            t0 = time.perf_counter()
            stretched = long_life(scorer, runs, args.extra, gain=args.gain)
            plain = long_life(Scorer.from_bundle(bundle, allow_unsigned=True), runs, 0)
            took = time.perf_counter() - t0
        th = scorer.thresholds
        drift = f"; the drawn windows drift to {args.gain:g}x the amplitude" if args.gain != 1 else ""
        print(
            f"\n{held} held out (trained on the other three): alarm level {th.alarm:.3f}{drift}; scored in {took:.0f} s"
        )
        print(
            "  sensor      stretch          windows  median    p99    max  quarter medians             alarm windows  raises"
        )
        for (rid, parts), (_, base) in zip(stretched.items(), plain.items(), strict=True):
            sensor = rid.rsplit("-", 1)[-1]
            for s in parts:
                q = " / ".join(f"{x:.3f}" for x in s.quarter_medians)
                print(
                    f"  {sensor:10s}  {s.name:14s} {s.windows:8,d}  {s.median:.3f}  {s.p99:.3f}  {s.max:.3f}  {q:26s}  {s.alarm_windows:13d}  {s.alarm_raises:6d}"
                )
            long = parts[1] if len(parts) == 3 else None
            if args.gain != 1 and long is not None:
                print(
                    f"  {sensor:10s}  drift: GRU first alarm {_at(long.first_alarm, args)}; "
                    f"RMS 6 sigma rule {_at(long.rms_rule_first_alarm, args)}"
                )
            end, end0 = parts[-1], base[-1]
            print(
                f"  {sensor:10s}  second half first alarm: window {end.first_alarm} after the long stretch, "
                f"{end0.first_alarm} without it (of {end.windows})"
            )
    return 0


def _at(window: int | None, args: argparse.Namespace) -> str:
    """Where in the drifting stretch an alarm first stood, and the gain reached by then."""
    if window is None:
        return "none"
    return f"window {window:,} of the stretch, at {args.gain ** ((window + 1) / args.extra):.3f}x"


if __name__ == "__main__":
    raise SystemExit(main())
