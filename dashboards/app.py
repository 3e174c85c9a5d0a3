"""The live fleet view: a Dash app over a `FleetModel` fed from the broker, and `serve()` to run it.

Why Dash: pure Python, maintained, serves its own scripts, styles and plotly.js from the installed
packages (nothing from a CDN, so the page works on an isolated plant network), and plotly gives the
detail plots zoom and hover for free.

How the page keeps up with 1,000 sensors at a message a second each: the browser never receives
messages. `assets/fleet.js` polls `gruwatch/fleet` (dashboards/fragments.py: plain JSON, not a Dash
callback) and asks again `refresh_ms` (0.5 s) after the previous answer was drawn, never while one is on
its way — Dash drops a callback's older answer when its interval fires again first, which on a busy
machine could starve the page. Each answer holds only the tiles changed since the previous one (about
150 bytes a tile); fleet.js keeps one DOM node per tile and writes only what changed, filtered and
sorted in the browser. However fast messages arrive, the page shows the latest state of each sensor
and has nothing to catch up on. The detail view (history, thresholds, state changes, spectrum) is one
plotly figure pair for the selected sensor, a Dash callback on its own slower interval; its vibration
topic is subscribed only while the view is open.

Use from another module (e.g. `gruwatch demo`):

    handle = serve("mqtt://127.0.0.1:1883", prefix="gruwatch", port=0)  # 0: any free port
    print(handle.url)  # http://127.0.0.1:PORT/
    ...
    handle.stop()
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import flask
from dash import ClientsideFunction, Dash, Input, Output, dcc, html, no_update
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from dashboards import REFRESH_MS
from dashboards.feed import BrokerFeed
from dashboards.fleet import STALE, FleetConfig, FleetModel
from dashboards.fragments import fleet_payload
from edge_agent.protocol import STATES, vibration_topic

ASSETS = Path(__file__).resolve().parent / "assets"
COLORS = {"ok": "#1a7f37", "warning": "#bf8700", "alarm": "#cf222e", STALE: "#6e7781", "line": "#0969da"}
FLEET_PATH = "/gruwatch/fleet"  # the page's poll (relative in fleet.js, so a reverse proxy's subpath works)


# ------------------------------------------------------------------------------------------ layout
def _layout(refresh_ms: int, where: str) -> html.Div:
    """The page's skeleton. Containers without children here (chips, banner, attention, grid, summary,
    feed, agents, rates) are filled by assets/fleet.js from each poll; Dash never rewrites them."""
    states = [*STATES, STALE]
    return html.Div(
        [
            html.Div(id="gw-config", style={"display": "none"}, **{"data-refresh-ms": str(refresh_ms)}),
            html.Div(
                [
                    html.H1("gruwatch fleet"),
                    html.Span(where, id="where", className="where"),
                    html.Div(id="chips", className="chips"),
                ],
                className="gw-header",
            ),
            html.Div(id="banner", className="gw-banner", style={"display": "none"}),
            html.Div(
                [
                    html.Div(
                        [
                            html.H2("Needs attention, and by when"),
                            html.Div(id="attention"),
                            html.P(
                                "Scores are health scores in [0, 1]: higher = worse. Worst first: alarms, then "
                                "warnings by when they are expected to reach alarm, then silent sensors.",
                                className="gw-note",
                            ),
                        ],
                        className="gw-section",
                    ),
                    html.Div(
                        [
                            html.Div(
                                [
                                    html.H2(id="detail-title"),
                                    html.Button("close", id="detail-close", n_clicks=0),
                                ],
                                className="gw-detail-head",
                            ),
                            html.Div(
                                [
                                    dcc.Graph(
                                        id="history-graph",
                                        config={"displaylogo": False},
                                        responsive=True,  # follows its box, also after the view opens
                                        style={"height": "300px"},
                                    ),
                                    dcc.Graph(
                                        id="spectrum-graph",
                                        config={"displaylogo": False},
                                        responsive=True,  # follows its box, also after the view opens
                                        style={"height": "300px"},
                                    ),
                                ],
                                className="gw-plots",
                            ),
                            html.Div(id="detail-info", className="gw-note"),
                        ],
                        id="detail",
                        className="gw-section",
                        style={"display": "none"},
                    ),
                    html.Div(
                        [
                            html.H2("Fleet"),
                            html.Div(
                                [
                                    dcc.Checklist(
                                        id="filter-state",
                                        options=[{"label": s, "value": s} for s in states],
                                        value=states,
                                        inline=True,
                                    ),
                                    dcc.Input(
                                        id="filter-text",
                                        type="text",
                                        placeholder="filter by name",
                                        debounce=False,
                                        style={"width": "220px"},
                                    ),
                                    dcc.RadioItems(
                                        id="sort",
                                        options=[
                                            {"label": "worst first", "value": "urgency"},
                                            {"label": "highest score", "value": "score"},
                                            {"label": "name", "value": "name"},
                                        ],
                                        value="urgency",
                                        inline=True,
                                    ),
                                    html.Span(id="fleet-summary", className="gw-note"),
                                ],
                                className="gw-controls",
                            ),
                            html.Div(id="fleet-grid", className="gw-grid"),
                        ],
                        className="gw-section",
                    ),
                    html.Div(
                        [
                            html.Div(
                                [
                                    html.H2("Alarm feed (newest first)"),
                                    html.Div(id="alarm-feed", className="gw-scroll"),
                                ],
                                className="gw-section",
                            ),
                            html.Div(
                                [
                                    html.H2("Agents"),
                                    html.Div(id="agents"),
                                    html.Div(id="rates", className="gw-note"),
                                ],
                                className="gw-section",
                            ),
                        ],
                        className="gw-cols",
                    ),
                ],
                className="gw-main",
            ),
            dcc.Store(id="view"),
            dcc.Store(id="selected", data=None),
            # the detail view's own, slower tick: its figures are heavier than a poll of the fleet
            dcc.Interval(id="detail-tick", interval=max(refresh_ms, 2000), n_intervals=0),
        ]
    )


# ---------------------------------------------------------------------------------------- helpers
def _clock(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "–"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _history_figure(d: dict[str, Any]) -> dict[str, Any]:
    t_ms = (d["t"] * 1000.0).tolist()
    data: list[dict[str, Any]] = [
        {
            "type": "scattergl" if len(t_ms) > 2000 else "scatter",
            "mode": "lines",
            "x": t_ms,
            "y": d["scores"].round(4).tolist(),
            "name": "health score",
            "line": {"color": COLORS["line"], "width": 1.5},
            "hovertemplate": "%{x}<br>score %{y:.3f}<extra></extra>",
        }
    ]
    changes = d["changes"]
    if changes:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [c[0] * 1000.0 for c in changes],
                "y": [c[3] for c in changes],
                "name": "state changes",
                "marker": {
                    "color": [COLORS[c[2]] for c in changes],
                    "size": 11,
                    "symbol": "diamond",
                    "line": {"color": "#1f2328", "width": 1},
                },
                "text": [f"{c[1]} → {c[2]}" + (f": {c[4]}" if c[4] else "") for c in changes],
                "hovertemplate": "%{x}<br>%{text}<extra></extra>",
            }
        )
    shapes, notes = [], []
    limits = d["thresholds"]
    if limits is not None:
        warning, alarm = limits
        lines = [("alarm", alarm)] if warning == alarm else [("warning", warning), ("alarm", alarm)]
        for name, y in lines:
            shapes.append(
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": y,
                    "y1": y,
                    "line": {"color": COLORS[name], "dash": "dash", "width": 1.5},
                }
            )
            label = "warning = alarm" if warning == alarm else name
            notes.append(
                {
                    "xref": "paper",
                    "x": 0.0,
                    "y": y,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "text": f"{label} {y:.2f}",
                    "showarrow": False,
                    "font": {"color": COLORS[name], "size": 11},
                }
            )
    else:
        notes.append(
            {
                "xref": "paper",
                "yref": "paper",
                "x": 0.01,
                "y": 0.98,
                "xanchor": "left",
                "showarrow": False,
                "text": "thresholds unknown: the agent does not announce them (start the dashboard with --bundle)",
                "font": {"color": "#57606a", "size": 11},
            }
        )
    return {
        "data": data,
        "layout": {
            "title": {"text": f"health score history ({len(t_ms)} windows)", "font": {"size": 13}, "x": 0.02},
            "xaxis": {"type": "date", "title": {"text": "sensor time"}},
            "yaxis": {"range": [0, 1.02], "title": {"text": "health score (higher = worse)"}},
            "shapes": shapes,
            "annotations": notes,
            "margin": {"l": 55, "r": 10, "t": 30, "b": 40},
            "showlegend": False,
            "uirevision": d["key"],
        },
    }


def _spectrum_figure(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    sp = d["spectrum"]
    layout: dict[str, Any] = {
        "xaxis": {"title": {"text": "frequency (Hz)"}},
        "yaxis": {"title": {"text": "amplitude (g)"}},
        "margin": {"l": 55, "r": 10, "t": 30, "b": 40},
        "showlegend": False,
        "uirevision": d["key"],
    }
    if sp is None:
        topic = vibration_topic(prefix, d["machine"], d["sensor"])
        layout["title"] = {"text": "spectrum of the latest window", "font": {"size": 13}, "x": 0.02}
        layout["annotations"] = [
            {
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "text": f"waiting for a window on {topic}<br>(subscribed only while this view is open)",
            }
        ]
        return {"data": [], "layout": layout}
    layout["title"] = {
        "text": f"spectrum of window {sp['seq']} ({sp['n']} samples at {sp['fs']:g} Hz)",
        "font": {"size": 13},
        "x": 0.02,
    }
    if sp["rpm"] > 0:
        shaft = sp["rpm"] / 60.0
        layout["shapes"] = [
            {
                "type": "line",
                "yref": "paper",
                "x0": shaft,
                "x1": shaft,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#8250df", "dash": "dot", "width": 1},
            }
        ]
        layout["annotations"] = [
            {"yref": "paper", "x": shaft, "y": 1, "text": f"shaft {shaft:.1f} Hz", "showarrow": False}
        ]
    trace = {
        "type": "scatter",
        "mode": "lines",
        "x": sp["freq_hz"].round(2).tolist(),
        "y": sp["amp_g"].astype("float32").tolist(),
        "line": {"color": COLORS["line"], "width": 1},
        "hovertemplate": "%{x:.1f} Hz<br>%{y:.4g} g<extra></extra>",
    }
    return {"data": [trace], "layout": layout}


def _detail_info(d: dict[str, Any]) -> str:
    extra = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in sorted(d["extra"].items())
        if isinstance(v, int | float | str)
    )
    parts = [
        f"state {d['state']}" + (f" (last: {d['last_state']})" if d["state"] == STALE else ""),
        f"score {d['score']:.3f} (higher = worse)",
        f"model {d['model'] or '–'}",
        f"window {d['seq']}",
        f"last message {_clock(d['seen'])}",
    ]
    if extra:
        parts.append(extra)
    return " · ".join(parts)


# -------------------------------------------------------------------------------------- the app
def create_app(model: FleetModel, feed: BrokerFeed, refresh_ms: int = REFRESH_MS) -> Dash:
    """The Dash app over `model` (fed by `feed`); everything it loads is served by itself."""
    app = Dash(
        __name__,
        assets_folder=str(ASSETS),
        title="gruwatch fleet",
        update_title=None,
        serve_locally=True,
        eager_loading=True,  # plotly.js loads with the page, not later on the first tick (a seconds-long stall)
    )
    status = feed.status()
    app.layout = _layout(refresh_ms, f"{status['broker']} · prefix {status['prefix']}")

    @app.server.route(FLEET_PATH)
    def _fleet() -> flask.Response:
        """The page's poll: ?epoch=E&version=V&at=T (from its previous answer) for a delta, else all."""
        args = flask.request.args
        since = None
        try:
            if "epoch" in args:
                since = (args["epoch"], int(args["version"]), float(args["at"]))
        except (KeyError, ValueError):
            since = None  # a malformed query: the full snapshot
        body = fleet_payload(model, feed, since)
        return flask.Response(body, mimetype="application/json", headers={"Cache-Control": "no-store"})

    app.clientside_callback(
        ClientsideFunction(namespace="gruwatch", function_name="setView"),
        Output("view", "data"),
        Input("filter-state", "value"),
        Input("filter-text", "value"),
        Input("sort", "value"),
    )
    app.clientside_callback(
        ClientsideFunction(namespace="gruwatch", function_name="close"),
        Output("selected", "data", allow_duplicate=True),
        Input("detail-close", "n_clicks"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("detail", "style"),
        Output("detail-title", "children"),
        Output("history-graph", "figure"),
        Output("spectrum-graph", "figure"),
        Output("detail-info", "children"),
        Input("detail-tick", "n_intervals"),
        Input("selected", "data"),
    )
    def _detail(_n: int, key: str | None) -> tuple[Any, ...]:
        if not key:
            return {"display": "none"}, "", no_update, no_update, ""
        feed.touch(key)
        d = model.detail(key)
        if d is None:
            return {"display": "block"}, f"{key}: no messages yet", no_update, no_update, ""
        return (
            {"display": "block"},
            f"{key} — {d['state']}",
            _history_figure(d),
            _spectrum_figure(d, feed.prefix),
            _detail_info(d),
        )

    return app


# -------------------------------------------------------------------------------------- serving
class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # one poll a second per page: no log line
        pass


@dataclass
class DashboardHandle:
    """A running dashboard: `url` to open, `stop()` to end it (web server and broker client)."""

    url: str
    model: FleetModel
    feed: BrokerFeed
    server: BaseWSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()
        self.feed.stop()


def serve(
    broker: str,
    prefix: str = "gruwatch",
    port: int = 8050,
    host: str = "127.0.0.1",
    *,
    config: FleetConfig | None = None,
    thresholds: tuple[float, float] | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    refresh_ms: int = REFRESH_MS,
) -> DashboardHandle:
    """Start the live view in background threads and return at once; `port=0` picks a free port.

    Raises ValueError for a bad broker URL or prefix, OSError when the port cannot be bound. The
    broker need not be up: the page then shows the outage banner and the feed keeps reconnecting.
    """
    model = FleetModel(config, thresholds=thresholds)
    feed = BrokerFeed(model, broker, prefix, username=username, password=password, ca_file=ca_file)
    app = create_app(model, feed, refresh_ms)
    server = make_server(host, port, app.server, threaded=True, request_handler=_QuietHandler)
    feed.start()
    thread = threading.Thread(target=server.serve_forever, name="gruwatch-dashboard", daemon=True)
    thread.start()
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return DashboardHandle(f"http://{shown_host}:{server.server_port}/", model, feed, server, thread)


def wait_forever(handle: DashboardHandle) -> None:
    """Block until Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the caller), then stop."""
    try:
        while handle.thread.is_alive():
            time.sleep(0.5)
    finally:
        handle.stop()
