"""Packaging promises: the gateway extra pulls no heavy ML stack; the torch pin admits the 2.13.0 CPU build."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
HEAVY = {"torch", "pandas", "scikit-learn", "scipy", "pyarrow"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[Requirement], extras: set[str]) -> set[str]:
    """Names of every installed distribution the requirements pull in, transitively (markers evaluated)."""
    seen: set[str] = set()
    todo = [(r, extras) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (active or {""})):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # optional platform dependency not installed here
        for raw in dist.requires or []:
            todo.append((Requirement(raw), set(req.extras)))
    return seen


def _project() -> dict[str, object]:
    return tomllib.loads(PYPROJECT.read_text())["project"]  # type: ignore[no-any-return]


def test_agent_extra_pulls_no_heavy_package() -> None:
    project = _project()
    reqs = [Requirement(r) for r in project["dependencies"]]  # type: ignore[attr-defined]
    reqs += [Requirement(r) for r in project["optional-dependencies"]["agent"]]  # type: ignore[index]
    pulled = _closure(reqs, set())
    assert "onnxruntime" in pulled  # the closure really was walked
    assert "paho-mqtt" in pulled
    assert not (pulled & HEAVY), f"gruwatch[agent] pulls {sorted(pulled & HEAVY)}"


def test_torch_requirement_admits_the_local_cpu_build() -> None:
    train = [Requirement(r) for r in _project()["optional-dependencies"]["train"]]  # type: ignore[index]
    (torch,) = [r for r in train if r.name == "torch"]
    assert torch.specifier.contains(Version("2.13.0"))
    assert not torch.specifier.contains(Version("2.14.1")), "a newer torch would pull a CUDA build"
