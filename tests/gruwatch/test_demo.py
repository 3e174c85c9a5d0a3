"""`gruwatch demo` publishes a short fleet to a real broker and every window arrives and decodes."""

from __future__ import annotations

import pytest

from gruwatch import demo
from tests.conftest import Broker


@pytest.mark.mqtt
def test_demo_counts_every_window(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    rc = demo.main(["--broker", broker.url, "--machines", "2", "--windows", "5", "--speedup", "max"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "OK: 10 of 10 windows arrived and decoded" in out
