"""The layering contract, checked the way it can fail (docs/architecture.md §2, docs/design.md §1, §4).

* Protocol cores are sans-I/O: they import no I/O, clock or randomness module
  themselves (AST), nothing they pull in loads one (``sys.modules`` after importing
  every core in a fresh interpreter), and they contain no ``async def``/``await``.
* Imports go one way: cores import only cores; the socket adapters (``gateway.io``)
  only cores and adapters; nothing in ``gateway`` imports ``gbplatform`` or
  ``simulators`` but ``gateway.cli`` (the one place that dispatches to all three);
  nothing in ``gateway`` imports the composition root ``gateway.app``; ``gbplatform``
  never imports ``simulators``.
* No import cycles, counting imports made only for type checking and imports
  inside functions.
* Every module imports alone with warnings as errors.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

import gateway
import gbplatform
import simulators

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "gateway": ROOT / "gateway",
    "gbplatform": ROOT / "platform" / "gbplatform",
    "simulators": ROOT / "simulators",
}

# --- what is a core -----------------------------------------------------------------------------------------

CORE_PACKAGES = ("gateway.gb28181", "gateway.media")
NOT_CORE = ("gateway.media.webrtc",)  # aiortc glue: asyncio code, an adapter that lives beside the media cores
CORE_MODULES = frozenset(
    {
        "gateway.errors",
        "gateway.alarms.drills",
        "gateway.alarms.intake",
        "gateway.alarms.lifecycle",
        "gateway.alarms.model",
        "gateway.alarms.outbox",
        "gateway.alarms.payload",
        "gateway.ratelimit",
        "gateway.alarms.signing",
        "gateway.audit.chain",
        "gateway.cascade.admission",
        "gateway.coverage",
        "gateway.coverage.history",
        "gateway.coverage.model",
        "gateway.coverage.uplink",
        "gateway.cascade.policy",
        "gateway.cascade.upper",
        "gateway.cascade.upper_config",
        "gateway.cascade.upper_trust",
        "gateway.onvif",
        "gateway.onvif.errors",
        "gateway.onvif.soap",
        "gateway.onvif.urls",
        "gateway.onvif.wsdiscovery",
        "gateway.onvif.xml",
        "gateway.registry",
        "gateway.registry.catalogs",
        "gateway.registry.directory",
        "gateway.registry.listing",
        "gateway.registry.model",
        "gateway.registry.placement",
        "gateway.registry.presence",
        "gateway.registry.store",
        "gateway.rtsp.model",
        "gateway.rtsp.units",
        "gateway.security.principal",
        "gateway.security.scope",
    }
)
ADAPTER_PACKAGES = ("gateway.io",)
# A core may not import these itself (the clock and randomness are passed in: docs/design.md §2).
FORBIDDEN_DIRECT = frozenset(
    {"asyncio", "socket", "selectors", "ssl", "time", "random", "secrets", "threading", "concurrent", "sqlite3"}
    | {"aiohttp", "aiortc", "aiomqtt", "uvloop", "prometheus_client"}
)
# ...nor load these through anything it imports (logging loads threading, so that one is only direct).
FORBIDDEN_LOADED = frozenset(
    {"asyncio", "socket", "selectors", "ssl", "random", "secrets", "sqlite3", "_sqlite3", "concurrent"}
    | {"aiohttp", "aiortc", "aiomqtt", "uvloop", "prometheus_client", "gateway.io", "gateway.app"}
)


@dataclass
class Module:
    """One module of the tree as its source says: what it imports (internal and external)."""

    name: str
    path: Path
    tree: ast.Module
    internal: set[str] = field(default_factory=set)
    external: set[str] = field(default_factory=set)


def _module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((package, *parts))


@cache
def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            name = _module_name(package, path)
            found[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8")))
    for module in found.values():
        is_package = module.path.name == "__init__.py"
        for node in ast.walk(module.tree):  # every import: top level, TYPE_CHECKING blocks, function bodies
            for target in _targets(node, module.name, is_package):
                top = target.split(".")[0]
                if top in PACKAGES:
                    module.internal.add(_resolve(target, found))
                else:
                    module.external.add(top)
    return found


def _targets(node: ast.AST, current: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = current.split(".")
            base = base if is_package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        yield prefix
        for alias in node.names:  # ``from package import module`` imports the module
            yield f"{prefix}.{alias.name}"


def _resolve(target: str, found: dict[str, Module]) -> str:
    """The longest module of the tree that ``target`` names (``a.b.Name`` -> ``a.b``)."""
    parts = target.split(".")
    while parts and ".".join(parts) not in found:
        parts.pop()
    return ".".join(parts)


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_core(name: str) -> bool:
    return name in CORE_MODULES or (_in(name, CORE_PACKAGES) and not _in(name, NOT_CORE))


def _cores() -> list[str]:
    return sorted(name for name in _modules() if _is_core(name))


# --- cores are sans-I/O ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _cores())
def test_cores_import_no_io_clock_or_randomness(name: str) -> None:
    assert not (_modules()[name].external & FORBIDDEN_DIRECT), (
        f"{name} imports {_modules()[name].external & FORBIDDEN_DIRECT}"
    )


@pytest.mark.parametrize("name", _cores())
def test_cores_import_only_cores(name: str) -> None:
    outside = sorted(t for t in _modules()[name].internal if t and not _is_core(t))
    assert not outside, f"core {name} imports non-core {outside}"


@pytest.mark.parametrize("name", _cores())
def test_cores_have_no_coroutines(name: str) -> None:
    found = [n.lineno for n in ast.walk(_modules()[name].tree) if isinstance(n, (ast.AsyncFunctionDef, ast.Await))]
    assert not found, f"{name} has async code at lines {found}"


def test_importing_every_core_loads_no_io_module() -> None:
    """What ``sys.modules`` holds after importing all cores in a fresh interpreter: no I/O, no clock-free random."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {_cores()!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(result.stdout)
    bad = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_LOADED))
    assert not bad, f"importing the cores loads {bad}"


# --- direction -------------------------------------------------------------------------------------------------


def test_adapters_import_only_cores_and_adapters() -> None:
    wrong = {
        name: sorted(t for t in module.internal if t and not (_is_core(t) or _in(t, ADAPTER_PACKAGES)))
        for name, module in _modules().items()
        if _in(name, ADAPTER_PACKAGES)
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong


def test_gateway_never_imports_the_platform_role_or_the_simulators() -> None:
    """Only ``gateway.cli`` dispatches to all three (``kgw gateway|platform|simulate|demo``)."""
    wrong = {
        name: sorted(t for t in module.internal if t.split(".")[0] in ("gbplatform", "simulators"))
        for name, module in _modules().items()
        if name.startswith("gateway.") and name != "gateway.cli"
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong


def test_nothing_in_gateway_imports_the_composition_root() -> None:
    importers = sorted(
        name for name, m in _modules().items() if name.startswith("gateway.") and "gateway.app" in m.internal
    )
    assert importers == [], importers


def test_the_platform_role_never_imports_the_simulators() -> None:
    wrong = sorted(
        n
        for n, m in _modules().items()
        if n.startswith("gbplatform") and any(t.startswith("simulators") for t in m.internal)
    )
    assert wrong == [], wrong


def test_no_import_cycles_counting_type_checking_and_lazy_imports() -> None:
    graph = {name: {t for t in module.internal if t and t != name} for name, module in _modules().items()}
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == [], cycles


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the tree is deep enough for recursion to matter)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    out.append(component)
    return out


def test_the_contract_sees_the_tree() -> None:
    """The checks above read real imports (a tree the parser missed would make them pass vacuously)."""
    modules = _modules()
    assert "gateway.gb28181.sip.endpoint" in modules["gateway.gb28181.access"].internal
    assert "gateway.app" in modules["gbplatform.app"].internal
    assert "asyncio" in modules["gateway.live"].external
    assert len(_cores()) > 80
    assert _strongly_connected({"a": {"b"}, "b": {"a"}, "c": set()}) in ([["b", "a"], ["c"]], [["a", "b"], ["c"]])


# --- every module alone ---------------------------------------------------------------------------------------


def _all_modules() -> list[str]:
    names = []
    for package in (gateway, simulators, gbplatform):
        names.append(package.__name__)
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
