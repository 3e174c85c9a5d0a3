"""Logging for the agent's command line: structlog key-value events, JSON lines when stderr is not a terminal.

Only the CLI calls `configure_logging`; library code just asks `structlog.get_logger(name)`. The
standard library's `logging` (used by the MQTT link) is routed through the same renderer, so every
line of a running agent has one format: ``{"event": "alarm_transition", "sensor": ..., "level": ...}``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "info", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging once for the process.

    `json=None` picks JSON when `stream` (default stderr) is not a TTY, readable console lines otherwise.
    """
    out = stream if stream is not None else sys.stderr
    as_json = not out.isatty() if json is None else json
    lvl = getattr(logging, level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info
            if as_json
            else structlog.processors.ExceptionPrettyPrinter(),
            renderer,
        ],
    )
    handler: logging.Handler = logging.StreamHandler(out) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a line is logged, not the stream it was at configure
    time (a test runner that swaps stderr and closes its capture must not turn lines into errors)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass
