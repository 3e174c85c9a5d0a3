"""What the page's fleet poll (`GET gruwatch/fleet`) returns: the fleet model's snapshot as compact JSON.

`fleet_payload(model, feed, since)` is the one answer the page asks for once a tick: the tiles (all,
or only those changed since the page's previous answer), counts and the "needs attention" rows as
data (drawn by assets/fleet.js), and the header chips, banner, alarm feed, agents table and rates
line as ready HTML fragments (built here with every text escaped; the page swaps a fragment only
when it differs from the one it shows). Plain json, no Dash callback: the page asks again only after
it has drawn the previous answer, so a slow server delays the page, it never makes it drop updates.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from html import escape
from typing import Any

from dashboards.feed import BrokerFeed
from dashboards.fleet import URGENCY, FleetModel
from gruwatch.options import format_duration as duration

FEED_ROWS = 50


def _clock(t: float | None) -> str:
    if t is None or not math.isfinite(t) or t <= 0:
        return "–"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _ago(s: float) -> str:
    """How long ago, coarse below a minute (the table is redrawn only when its text changes)."""
    return "within 10 s" if s < 10 else "within a minute" if s < 60 else f"{duration(s)} ago"


def _td(text: object, cls: str = "") -> str:
    return f"<td class='{cls}'>{escape(str(text))}</td>" if cls else f"<td>{escape(str(text))}</td>"


def _table(head: tuple[str, ...], rows: list[str]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    return f"<table class='gw-table'><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def feed_table(feed: list[dict[str, Any]], current: dict[str, str]) -> str:
    """The alarm feed, newest first: since, sensor, change, score, model, the state now, reason.

    `current`: the state of every sensor that is not ok (the "needs attention" rows)."""
    if not feed:
        return "<p class='gw-note'>No alarm-state changes yet.</p>"
    rows = [
        "<tr>"
        + _td(_clock(e["ts"]))
        + _td(e["key"])
        + _td(f"{e['previous']} → {e['state']}", f"st-{e['state']}")
        + _td(f"{e['score']:.2f}")
        + _td(e["model"])
        + _td(current.get(e["key"], "ok"), f"st-{current.get(e['key'], 'ok')}")
        + _td(e["reason"], "gw-note")
        + "</tr>"
        for e in feed[:FEED_ROWS]
    ]
    return _table(("since", "sensor", "change", "score", "model", "now", "reason"), rows)


def agents_table(agents: list[dict[str, Any]], now: float) -> str:
    """One row per agent: state (since when, on hover), model, health messages per second, when its
    latest health message and status came, storage."""
    if not agents:
        return "<p class='gw-note'>No agent has announced itself on …/_agents/+/status yet.</p>"
    rows = []
    for a in agents:
        rate = a["health_per_s"]
        heard = _ago(now - a["heard"]) if a["heard"] else "–"
        since = escape(f"{a['state']} since {_clock(a['since'])}", quote=True)
        rows.append(
            "<tr>"
            + _td(a["agent"])
            + f"<td class='st-{escape(a['state'])}' title='{since}'>{escape(a['state'])}</td>"
            + _td(a["model"] or "–")
            + _td("–" if rate is None else f"{rate:.1f}/s")
            + _td(heard)
            + _td(_ago(now - a["seen"]) if a["seen"] else "none yet")
            + (_td(a["storage"], "st-alarm") if a["storage"] else _td("ok", "gw-note"))
            + "</tr>"
        )
    head = ("agent", "state", "model", "health msgs", "last health", "last status", "storage")
    return _table(head, rows)


def rates_line(snap: dict[str, Any]) -> str:
    """Fleet-wide message rates and what was refused, as one line of text."""
    r, c = snap["rates"], snap["counters"]
    rejected = {k.removeprefix("rejected_"): v for k, v in c.items() if k.startswith("rejected_")}
    parts = [
        f"health messages {r['health_per_s']:.1f}/s",
        f"alerts {r['alerts_per_s']:.2f}/s (over {r['window_s']} s)",
        f"{snap['sensors']} sensors",
    ]
    if rejected:
        parts.append("rejected " + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())))
    if c.get("refused_sensors"):
        parts.append(f"sensors beyond the limit, not shown: {c['refused_sensors']} messages")
    if c.get("late"):
        parts.append(f"late or repeated windows {c['late']}")
    return escape(" · ".join(parts))


def chips(counts: dict[str, int]) -> str:
    return "".join(
        f"<span class='chip {s}' id='count-{s}'>{counts[s]} {s}</span>"
        for s in sorted(counts, key=URGENCY.__getitem__)
    )


def banner(status: dict[str, Any]) -> str | None:
    """The outage banner's text, or None while the broker is reachable."""
    if status["connected"]:
        return None
    return (
        f"Broker {status['broker']} unreachable since {_clock(status['since'])} "
        f"({status['error']}). Showing the last known state; reconnecting…"
    )


def fleet_payload(model: FleetModel, feed: BrokerFeed, since: tuple[str, int, float] | None) -> bytes:
    """The page's one poll: the snapshot (a delta after `since`) plus its HTML fragments, as JSON bytes."""
    feed.sweep()
    snap = model.snapshot(since=since)
    status = feed.status()
    current = {r["key"]: r["state"] for r in snap["attention"]}  # sensors not listed are ok
    out = {
        "now": snap["now"],
        "epoch": snap["epoch"],
        "version": snap["version"],
        "full": snap["full"],
        "sensors": snap["sensors"],
        "tiles": snap["tiles"],
        "counts": snap["counts"],
        "attention": snap["attention"],
        "banner": banner(status),
        "html": {
            "chips": chips(snap["counts"]),
            "feed": feed_table(snap["feed"], current),
            "agents": agents_table(snap["agents"], snap["now"]),
            "rates": rates_line(snap),
        },
    }
    try:
        return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # a non-finite number slipped in: null it rather than send what JSON.parse refuses
        return json.dumps(_finite(out), separators=(",", ":")).encode()


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x
