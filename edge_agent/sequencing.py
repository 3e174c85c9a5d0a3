"""Per-sensor sequence tracking: order by `seq`, drop duplicates and replays, tell sensor reboots and long
silences apart from clock steps, bounded in count.

Every vibration window carries a u32 sequence number and the sensor's own timestamp. The agent
advances a sensor's hidden state exactly once per window, in `seq` order, so before scoring each
window passes `SequenceTracker.check`. Order is decided by `seq` alone (u32 serial-number arithmetic,
so 0 follows 4294967295); the sensor's clock only tells a reboot from a replay and measures silences
(docs/protocol.md, "Order, reboots and clocks"):

- same seq as the last accepted window → ``duplicate`` (dropped; a broker redelivery);
- a newer seq → accepted (``ok``); skipped numbers are windows that never arrived (`Verdict.missed`,
  metric `windows_missed_total`, health field `missed`). It resets with ``gap`` only when the
  sensor's clock says more than `gap_reset_s` passed AND the silence is real: windows were missed,
  or the agent itself waited that long for this sensor (or cannot know: the first window after the
  agent restarted). A clock step (NTP) with no window missed never resets;
- an older seq is a replay (``stale``, dropped) only when it could be one. It is a reboot (accepted
  with reset ``restart``) when it is more than `replay_window` behind; or its timestamp is after
  everything accepted since the sensor's last reset (the clock was right); or, for a run the
  tracker saw begin, it is seq 0 unlike the run's own seq 0 (a sensor counts from 0 after a reboot;
  the same seq 0 again is a redelivery), or its timestamp is more than `gap_reset_s` before the
  run's earliest (the clock was fast and the reboot corrected it);
- a sensor never seen (or forgotten) → accepted with reset ``new``.

The run since the last reset (its earliest and latest timestamps and that of its seq 0: `run`) is
saved with the sensor's state, so after an agent restart reboots and replays are told apart as
before it. A row saved without one (an older agent) knows only the last accepted timestamp: until
the sensor's next reset, an older seq within `replay_window` and not later than it counts as stale.

At most `max_sensors` sensors are tracked; the least recently accepted one is forgotten first.

>>> now = [0]
>>> t = SequenceTracker(gap_reset_s=60.0, max_sensors=2, clock=lambda: now[0])
>>> [t.check("m/s", seq, seq * 10**10).outcome for seq in (1, 2, 2, 1, 3)]
['new', 'ok', 'duplicate', 'stale', 'ok']
>>> t.check("m/s", 4, 3 * 10**10 + 61 * 10**9).outcome  # the clock stepped: nothing missed, no wait
'ok'
>>> now[0] = 70 * 10**9
>>> t.check("m/s", 5, 3 * 10**10 + 140 * 10**9).outcome  # a real silence
'gap'
>>> t.check("m/s", 0, 10**9).outcome  # seq back to 0, before this run began: a reboot
'restart'
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Literal, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from edge_agent.settings import AgentSettings

_U32: Final = 1 << 32
_HALF: Final = 1 << 31
REPLAY_WINDOW: Final = 4096  # a replay (redelivery, reorder) is never further back than this

Outcome = Literal["ok", "new", "gap", "restart", "duplicate", "stale"]
DROPS: Final = frozenset({"duplicate", "stale"})
RESETS: Final = frozenset({"new", "gap", "restart"})


def seq_newer(seq: int, last: int) -> bool:
    """True when u32 `seq` comes after `last` (serial-number arithmetic, RFC 1982 style).

    >>> seq_newer(5, 4), seq_newer(0, 2**32 - 1), seq_newer(4, 5)
    (True, True, False)
    """
    return 0 < (seq - last) % _U32 < _HALF


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one window: `accept` it or drop it; `outcome` says why (see the module doc)."""

    outcome: Outcome
    gap_s: float | None = None  # seconds since the sensor's previous window (known sensors only)
    missed: int = 0  # windows never received between the previous accepted one and this (seq jump)

    @property
    def accept(self) -> bool:
        return self.outcome not in DROPS

    @property
    def reset(self) -> bool:
        """The sensor starts from a fresh hidden state with this window."""
        return self.outcome in RESETS


class _Last(NamedTuple):
    seq: int
    ts: int
    rx: int | None  # agent clock (monotonic ns) when it was accepted; None: before this process
    lo: int | None  # earliest / latest sensor timestamp accepted since the sensor's last reset
    hi: int  # (lo None: not known, the entry was restored from the store)
    zero: int | None  # timestamp of this run's seq 0 (None: the run has none, or lo is None)


class Run(NamedTuple):
    """A sensor's run since its last reset, as the states table keeps it (`SequenceTracker.run`)."""

    lo: int  # earliest sensor timestamp accepted
    hi: int  # latest sensor timestamp accepted
    zero: int | None  # timestamp of the run's seq 0 (None: the run has none)


class SequenceTracker:
    """Last accepted window per sensor key (see the module doc), least recently accepted evicted beyond
    `max_sensors`. `clock` (monotonic ns) measures how long the agent waited for a sensor."""

    def __init__(
        self,
        *,
        gap_reset_s: float,
        max_sensors: int,
        replay_window: int = REPLAY_WINDOW,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if gap_reset_s <= 0:
            raise ValueError("gap_reset_s must be > 0")
        if max_sensors < 1:
            raise ValueError("max_sensors must be >= 1")
        if not 1 <= replay_window < _HALF:
            raise ValueError("replay_window must be in 1 .. 2**31 - 1")
        self.gap_reset_s = gap_reset_s
        self.max_sensors = max_sensors
        self.replay_window = replay_window
        self.evicted_total = 0
        self._clock = clock
        self._gap_ns = int(gap_reset_s * 1e9)
        self._last: OrderedDict[str, _Last] = OrderedDict()

    @classmethod
    def from_settings(cls, s: AgentSettings) -> SequenceTracker:
        return cls(
            gap_reset_s=s.gap_reset_s, max_sensors=s.max_tracked_sensors, replay_window=s.seq_replay_window
        )

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def last(self, key: str) -> tuple[int, int] | None:
        """(seq, ts_ns) of the last accepted window of `key`, or None."""
        prev = self._last.get(key)
        return None if prev is None else (prev.seq, prev.ts)

    def check(self, key: str, seq: int, ts_ns: int) -> Verdict:
        """Judge one window of sensor `key`; an accepted window becomes the sensor's last one."""
        prev = self._last.get(key)
        now = self._clock()
        if prev is None:
            verdict = Verdict("new")
        else:
            verdict = self._judge(prev, seq, ts_ns, now)
            if not verdict.accept:
                return verdict
        if verdict.reset or prev is None:
            entry = _Last(seq, ts_ns, now, ts_ns, ts_ns, ts_ns if seq == 0 else None)
        else:
            lo = None if prev.lo is None else min(prev.lo, ts_ns)
            zero = ts_ns if seq == 0 and prev.zero is None else prev.zero
            entry = _Last(seq, ts_ns, now, lo, max(prev.hi, ts_ns), zero)
        self._last[key] = entry
        self._last.move_to_end(key)
        if len(self._last) > self.max_sensors:
            self._last.popitem(last=False)
            self.evicted_total += 1
        return verdict

    def _judge(self, prev: _Last, seq: int, ts_ns: int, now: int) -> Verdict:
        gap_s = (ts_ns - prev.ts) / 1e9
        ahead = (seq - prev.seq) % _U32
        if ahead == 0:
            return Verdict("duplicate", gap_s)
        if ahead < _HALF:
            missed = ahead - 1
            silent = ts_ns - prev.ts > self._gap_ns and (
                missed > 0 or prev.rx is None or now - prev.rx > self._gap_ns
            )
            return Verdict("gap" if silent else "ok", gap_s, missed)
        behind = _U32 - ahead
        rebooted = behind > self.replay_window or ts_ns > prev.hi
        if prev.lo is not None:  # the run since the last reset is known (not restored)
            rebooted = rebooted or ts_ns < prev.lo - self._gap_ns or (seq == 0 and ts_ns != prev.zero)
        return Verdict("restart" if rebooted else "stale", gap_s)

    def run(self, key: str, seq: int, ts_ns: int) -> Run | None:
        """`key`'s run since its last reset, when its last accepted window is (seq, ts_ns) and the run
        is known (not restored from a row without one); None otherwise."""
        prev = self._last.get(key)
        if prev is None or prev.lo is None or (prev.seq, prev.ts) != (seq, ts_ns):
            return None
        return Run(prev.lo, prev.hi, prev.zero)

    def forget(self, key: str) -> bool:
        """Stop tracking `key`; its next window counts as new. True if it was tracked."""
        return self._last.pop(key, None) is not None

    def put(self, key: str, seq: int, ts_ns: int, run: Run | None = None) -> None:
        """Set `key`'s last accepted window (a rollback to what the store holds)."""
        self._last[key] = _restored(seq, ts_ns, run)

    def export(self) -> dict[str, tuple[int, int]]:
        """Every tracked sensor's (seq, ts_ns), least recently accepted first."""
        return {k: (v.seq, v.ts) for k, v in self._last.items()}

    def restore(self, last: dict[str, tuple[int, int]], runs: Mapping[str, Run] | None = None) -> None:
        """Replace everything with an `export()` and the sensors' saved runs (most recent entries kept
        when more than fit)."""
        items = list(last.items())[-self.max_sensors :]
        runs = runs or {}
        self._last = OrderedDict((k, _restored(s, t, runs.get(k))) for k, (s, t) in items)


def _restored(seq: int, ts_ns: int, run: Run | None = None) -> _Last:
    """What a saved (seq, ts_ns) and run tell: the agent's wait is unknown; without the run, so are
    the run's earliest timestamp and seq 0."""
    if run is None:
        return _Last(int(seq), int(ts_ns), None, None, int(ts_ns), None)
    zero = None if run.zero is None else int(run.zero)
    return _Last(int(seq), int(ts_ns), None, int(run.lo), max(int(run.hi), int(ts_ns)), zero)


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


T = TypeVar("T", bound=_Keyed)


@dataclass(slots=True)
class Accepted(Generic[T]):
    """One accepted window on its way through a batch."""

    item: T
    verdict: Verdict
    evicted: bool = False  # its hidden state was evicted although its sequence was still tracked


def split_at_resets(pending: list[Accepted[T]]) -> list[list[Accepted[T]]]:
    """Split a batch where a sensor that already appeared must start afresh (its reset follows its step)."""
    out: list[list[Accepted[T]]] = [[]]
    seen: set[str] = set()
    for p in pending:
        if p.verdict.reset and p.item.key in seen:
            out.append([])
            seen = set()
        out[-1].append(p)
        seen.add(p.item.key)
    return [c for c in out if c]


class PendingResets:
    """Sensors whose state was reset outside the sequence tracker (a model of another state shape, a
    non-finite model output): their next scored window says why in `state_reset`. Bounded in count."""

    def __init__(self, max_sensors: int) -> None:
        self.max_sensors = max_sensors
        self._causes: dict[str, str] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._causes

    def mark(self, keys: Iterable[str], cause: str) -> None:
        for key in keys:
            self._causes.pop(key, None)
            self._causes[key] = cause
        while len(self._causes) > self.max_sensors:
            del self._causes[next(iter(self._causes))]  # oldest

    def clear(self) -> None:
        self._causes.clear()

    def cause_of(self, p: Accepted[T]) -> str | None:
        """Why this accepted window's state started afresh (None: it did not; "new": first sight)."""
        pending = self._causes.pop(p.item.key, None)
        if p.verdict.reset:
            return p.verdict.outcome
        return pending or ("evicted" if p.evicted else None)


def start_afresh(
    chunk: list[Accepted[T]], tracked: Container[str], reset: Callable[[str], object], pending: PendingResets
) -> tuple[dict[str, tuple[int, int]], Counter[str]]:
    """Reset the states the tracker's verdicts ask for, and flag the evicted ones (known by sequence,
    not `tracked`: more sensors than max_tracked_sensors). Returns each sensor's (seq, ts_ns) after
    the chunk and the resets by cause. Items need `.key` and `.window`."""
    resets: Counter[str] = Counter()
    seen: set[str] = set()
    last: dict[str, tuple[int, int]] = {}
    for p in chunk:
        key = p.item.key
        if p.verdict.reset:
            if p.verdict.outcome != "new" or key in tracked:
                reset(key)
            resets[p.verdict.outcome] += 1
        elif key not in seen and key not in tracked and key not in pending:
            p.evicted = True
            resets["evicted"] += 1
        seen.add(key)
        window = p.item.window  # type: ignore[attr-defined]
        last[key] = (window.seq, window.ts_ns)
    return last, resets
