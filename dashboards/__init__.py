"""dashboards: what people look at — the live fleet view in the browser, and the evaluation report.

Live fleet view (`gruwatch dashboard`, docs/dashboard.md):
  fleet.py    messages → fleet state (plain Python, bounded memory; unit-tested on its own)
  feed.py     the one MQTT client: health / alert / agent-status topics → fleet.py
  fragments.py  the page's poll (`GET gruwatch/fleet`): a snapshot delta and HTML fragments, as JSON
  app.py      the Dash app, its callbacks, and `serve()` (a handle with .url and .stop())
  assets/     the page's own script and style (served by the app; no CDN)
  cli.py      `gruwatch dashboard` / `python -m dashboards`
  testing.py  a synthetic fleet's messages, for tests, the screenshot and the load benchmark

Evaluation report (`gruwatch evaluate` writes it through `write_report`, docs/evaluation.md):
  evaluation_report.py
"""

#: How often the page polls the fleet, ms: half a second keeps it within ~1 s of the broker on a busy
#: machine (docs/dashboard.md, measured), and each poll carries only the tiles changed since the last.
REFRESH_MS = 500
