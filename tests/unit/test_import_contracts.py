"""Layering rules that keep the protocol cores sans-I/O (docs/design.md §1, §10)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import gateway
import simulators

ROOT = Path(__file__).resolve().parents[2]
CORE_DIRS = [ROOT / "gateway" / "gb28181", ROOT / "gateway" / "media"]
FORBIDDEN_IN_CORE = {"asyncio", "socket", "time", "random", "selectors", "threading", "aiohttp"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# The alarm decisions are sans-I/O too; the service and the sinks are their asyncio adapters.
CORE_FILES = [
    ROOT / "gateway" / "alarms" / name
    for name in ("intake.py", "outbox.py", "lifecycle.py", "payload.py", "model.py", "signing.py")
]
CORE_FILES += [ROOT / "gateway" / "cascade" / name for name in ("policy.py", "upper.py", "admission.py")]


def _core_files() -> list[Path]:
    return sorted([p for d in CORE_DIRS for p in d.rglob("*.py")] + CORE_FILES)


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_protocol_cores_do_no_io(path: Path) -> None:
    assert not (_imports(path) & FORBIDDEN_IN_CORE), f"{path} imports I/O or a clock/RNG"


def _all_modules() -> list[str]:
    names = []
    for package in (gateway, simulators):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module", _all_modules())
def test_every_module_imports_alone_without_warnings(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_platform_is_still_the_standard_library() -> None:
    import platform

    assert hasattr(platform, "system") and "site-packages" not in (platform.__file__ or "")
    assert not (ROOT / "platform" / "__init__.py").exists()
    importlib.import_module("gbplatform")
