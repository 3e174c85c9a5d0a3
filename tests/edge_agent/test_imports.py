"""The gateway core stays light: importing every edge_agent module pulls none of the training stack.

Each check runs in a fresh interpreter, because this test session itself may already have imported
torch or pandas through other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "pandas", "sklearn", "scipy", "pyarrow")

# Imports edge_agent, then every module in it (found with pkgutil), then `extra`; prints what it saw.
SCRIPT = """
import importlib, json, pkgutil, sys
import edge_agent, edge_agent.protocol, edge_agent.bearing, edge_agent.errors
names = sorted(
    m.name for m in pkgutil.walk_packages(edge_agent.__path__, "edge_agent.")
    if m.name.rsplit(".", 1)[-1] != "__main__"
)
for name in names:
    importlib.import_module(name)
for name in sys.argv[1:]:
    importlib.import_module(name)
forbidden = sorted(
    m for m in sys.modules if m.split(".", 1)[0] in {forbidden}
)
print(json.dumps({{"imported": names, "forbidden": forbidden}}))
"""


def _import_in_fresh_interpreter(*extra: str) -> dict[str, list[str]]:
    script = SCRIPT.format(forbidden=repr(set(FORBIDDEN)))
    proc = subprocess.run(
        [sys.executable, "-c", script, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"importing edge_agent failed:\n{proc.stderr}"
    result: dict[str, list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_edge_agent_imports_no_training_stack() -> None:
    result = _import_in_fresh_interpreter()
    on_disk = {
        f"edge_agent.{p.stem}"
        for p in (REPO / "edge_agent").glob("*.py")
        if p.stem not in {"__init__", "__main__"}
    }
    assert on_disk <= set(result["imported"]), "pkgutil missed modules that exist on disk"
    assert {"edge_agent.protocol", "edge_agent.bearing", "edge_agent.errors"} <= set(result["imported"])
    assert result["forbidden"] == [], (
        f"edge_agent pulled in {result['forbidden']}; the gateway install has none of {FORBIDDEN}"
    )


def test_the_check_sees_a_forbidden_import() -> None:
    # Control: the same script does report a forbidden package when one is imported.
    result = _import_in_fresh_interpreter("scipy")
    assert "scipy" in result["forbidden"]
