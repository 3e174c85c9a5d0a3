"""The agent's logging setup: JSON lines on stderr, following stderr when it is swapped."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from edge_agent.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


def test_lines_go_to_the_stderr_of_the_moment_and_a_closed_one_is_no_error(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("info", json=True)
    structlog.get_logger("t").info("one", n=1)
    first.close()  # what a test runner's capture does at the end of a test
    monkeypatch.setattr(sys, "stderr", second)
    errors: list[BaseException | None] = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: errors.append(sys.exc_info()[1]))
    structlog.get_logger("t").warning("two", n=2)
    logging.getLogger("paho").warning("three")  # the standard library's loggers share the handler
    assert errors == []
    lines = [json.loads(x) for x in second.getvalue().splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [("two", "warning"), ("three", "warning")]
    assert lines[0]["n"] == 2


def test_an_explicit_stream_is_kept(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("warning", json=True, stream=out)
    structlog.get_logger("t").info("quiet")
    structlog.get_logger("t").error("loud")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["loud"]
