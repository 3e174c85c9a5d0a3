"""`gruwatch[agent]` as installed for aarch64: exactly the agent extra's closure, aarch64 binaries, no torch.

The environment's packages were installed by the host's pip for the aarch64 platform
(scripts/build-arm-env.sh); here the host reads their metadata and the emulated interpreter
reports what it can import.
"""

from __future__ import annotations

import platform
import re
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.arm.conftest import ProbeRuns
from tests.arm.helpers import FORBIDDEN, ArmEnv

pytestmark = pytest.mark.arm

# The marker environment of Debian's arm64 python3.11 (what pip on the gateway evaluates).
GATEWAY_MARKERS = {
    "implementation_name": "cpython",
    "platform_machine": "aarch64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "platform_python_implementation": "CPython",
}


def _installed(site: Path) -> dict[str, tuple[Version, list[Requirement]]]:
    out = {}
    for info in site.glob("*.dist-info"):
        meta = Parser().parsestr((info / "METADATA").read_text(encoding="utf-8"))
        reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
        out[canonicalize_name(meta["Name"])] = (Version(meta["Version"]), reqs)
    return out


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**GATEWAY_MARKERS, "extra": e}) for e in extras | {""})


def test_exactly_the_agent_extra_is_installed(arm_env: ArmEnv) -> None:
    installed = _installed(arm_env.site)
    assert "gruwatch" in installed, "gruwatch itself is not installed"
    # Walk gruwatch[agent]'s requirements as the gateway's pip would: all satisfied, nothing else there.
    needed: set[str] = {"gruwatch"}
    todo: list[tuple[str, set[str]]] = [("gruwatch", {"agent"})]
    while todo:
        name, extras = todo.pop()
        for req in installed[name][1]:
            if not _applies(req, extras):
                continue
            dep = canonicalize_name(req.name)
            assert dep in installed, f"{name} needs {req}, which is not installed"
            version = installed[dep][0]
            assert req.specifier.contains(version, prereleases=True), (
                f"{dep} {version} does not satisfy {req}"
            )
            if dep not in needed or req.extras:
                needed.add(dep)
                todo.append((dep, set(req.extras)))
    assert set(installed) == needed, f"installed beyond gruwatch[agent]: {sorted(set(installed) - needed)}"
    assert not needed & {canonicalize_name(m) for m in (*FORBIDDEN, "scikit-learn")}


def test_native_code_is_aarch64(arm_env: ArmEnv) -> None:
    """Every compiled extension in the environment is an AArch64 ELF (e_machine 183), none x86-64."""
    sos = [p for p in arm_env.site.rglob("*.so*") if p.is_file() and re.search(r"\.so(\.|$)", p.name)]
    assert any(p.name.startswith("onnxruntime_pybind11_state") for p in sos)
    machines = {}
    for p in sos:
        head = p.read_bytes()[:20]
        assert head[:4] == b"\x7fELF", p
        machines[p.name] = int.from_bytes(head[18:20], "little")
    assert set(machines.values()) == {183}, {k: v for k, v in machines.items() if v != 183}


def test_the_emulated_agent_runs_on_aarch64_without_heavy_packages(
    probe_runs: ProbeRuns, arm_env: ArmEnv
) -> None:
    arm, host = probe_runs.arm, probe_runs.host
    assert platform.machine() == "x86_64", "the host side of this comparison should be x86_64"
    assert host["machine"] == "x86_64"
    assert arm["machine"] == "aarch64"
    assert arm["python"].startswith("3.11.")
    assert arm["edge_agent_file"].startswith(str(arm_env.site)), (
        "the emulated agent must come from the install"
    )
    assert arm["forbidden_importable"] == [], f"importable on the gateway: {arm['forbidden_importable']}"
    assert arm["forbidden_loaded"] == []
