"""Per-sensor sequence tracking: drop duplicates and stale windows, reset on long gaps, bounded in count.

Every vibration window carries a u32 sequence number and the sensor's own timestamp. The agent
advances a sensor's hidden state exactly once per window, in sequence order, so before scoring each
window passes `SequenceTracker.check`:

- same seq as the last accepted window of that sensor → ``duplicate`` (dropped; a broker
  redelivery or a sensor that sent twice);
- an older seq (u32 serial-number arithmetic, so 0 follows 4294967295) with a timestamp not after
  the last accepted one → ``stale`` (dropped; a reordered or replayed window);
- an older seq with a LATER timestamp → accepted with reset ``restart`` (the sensor rebooted and
  counts from 0 again);
- a newer seq whose timestamp is more than `gap_reset_s` after the last accepted one → accepted
  with reset ``gap`` (the hidden state describes a machine we have not heard from for too long);
- a sensor never seen (or forgotten) → accepted with reset ``new``.

A newer seq that skips numbers says how many windows never arrived (`Verdict.missed`): the agent
counts them (metric `windows_missed_total`) and says so in that window's health message (`missed`).

At most `max_sensors` sensors are tracked; the least recently accepted one is forgotten first.

>>> t = SequenceTracker(gap_reset_s=60.0, max_sensors=2)
>>> [t.check("m/s", seq, seq * 10**10).outcome for seq in (1, 2, 2, 1, 3)]
['new', 'ok', 'duplicate', 'stale', 'ok']
>>> t.check("m/s", 4, 3 * 10**10 + 61 * 10**9).outcome
'gap'
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Final, Generic, Literal, Protocol, TypeVar

_U32: Final = 1 << 32
_HALF: Final = 1 << 31

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


class SequenceTracker:
    """Last accepted (seq, timestamp) per sensor key, least recently accepted evicted beyond `max_sensors`."""

    def __init__(self, *, gap_reset_s: float, max_sensors: int) -> None:
        if gap_reset_s <= 0:
            raise ValueError("gap_reset_s must be > 0")
        if max_sensors < 1:
            raise ValueError("max_sensors must be >= 1")
        self.gap_reset_s = gap_reset_s
        self.max_sensors = max_sensors
        self.evicted_total = 0
        self._gap_ns = int(gap_reset_s * 1e9)
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def last(self, key: str) -> tuple[int, int] | None:
        """(seq, ts_ns) of the last accepted window of `key`, or None."""
        return self._last.get(key)

    def check(self, key: str, seq: int, ts_ns: int) -> Verdict:
        """Judge one window of sensor `key`; an accepted window becomes the sensor's last one."""
        prev = self._last.get(key)
        if prev is None:
            verdict = Verdict("new")
        else:
            last_seq, last_ts = prev
            gap_s = (ts_ns - last_ts) / 1e9
            if seq == last_seq:
                return Verdict("duplicate", gap_s)
            if seq_newer(seq, last_seq):
                missed = (seq - last_seq - 1) % _U32
                verdict = Verdict("gap" if ts_ns - last_ts > self._gap_ns else "ok", gap_s, missed)
            elif ts_ns > last_ts:
                verdict = Verdict("restart", gap_s)
            else:
                return Verdict("stale", gap_s)
        self._last[key] = (seq, ts_ns)
        self._last.move_to_end(key)
        if len(self._last) > self.max_sensors:
            self._last.popitem(last=False)
            self.evicted_total += 1
        return verdict

    def forget(self, key: str) -> bool:
        """Stop tracking `key`; its next window counts as new. True if it was tracked."""
        return self._last.pop(key, None) is not None

    def put(self, key: str, seq: int, ts_ns: int) -> None:
        """Set `key`'s last accepted window (a rollback to what the store holds)."""
        self._last[key] = (int(seq), int(ts_ns))

    def export(self) -> dict[str, tuple[int, int]]:
        """Every tracked sensor's (seq, ts_ns), least recently accepted first."""
        return dict(self._last)

    def restore(self, last: dict[str, tuple[int, int]]) -> None:
        """Replace everything with an `export()` (most recent entries kept when more than fit)."""
        items = list(last.items())[-self.max_sensors :]
        self._last = OrderedDict((k, (int(s), int(t))) for k, (s, t) in items)


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
