"""The pure core imports no I/O: no sockets, gear, docker, git, subprocess or threads,
and none of the gatekeeper's edges (drivers, ports, scheduler, web...).

Relative imports are resolved against the importing module's package, so
``from ..drivers import gitea`` inside ``ccci_gate/core/`` is seen as
``ccci_gate.drivers.gitea``; the self-tests below prove the scan catches them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import ccci_gate.core

FORBIDDEN = {"socket", "gear", "docker", "subprocess", "threading", "sqlite3", "requests",
             "http", "urllib", "asyncio", "select", "selectors", "shutil", "os", "pathlib",
             "multiprocessing", "signal", "ccci_gate.gearman", "ccci_gate.merger",
             "ccci_gate.drivers", "ccci_gate.swarm", "ccci_gate.web", "ccci_gate.store",
             "ccci_gate.scheduler", "ccci_gate.worker", "ccci_gate.app", "ccci_gate.ports",
             "ccci_gate.config", "ccci_gate.settings", "ccci_gate.cli"}


def module_name(path: Path, root: Path, package: str) -> str:
    """The dotted name of the module at ``path`` (``root`` is ``package``'s folder)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def imported_modules(path: Path, module: str = "") -> set[str]:
    """Every module ``path`` imports, relative imports resolved against ``module``
    (the dotted name of ``path`` itself). With ``from pkg import name`` both ``pkg``
    and ``pkg.name`` are listed: ``name`` may be a submodule."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if module else []
                keep = len(parts) - node.level + (1 if is_package else 0)
                if not module or keep < 1:
                    names.add("." * node.level + (node.module or ""))  # outside: flag it
                    continue
                base = ".".join(parts[:keep])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def forbidden(names: set[str]) -> set[str]:
    return {m for m in names if m.startswith(".")
            or any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}


def test_core_modules_import_no_io():
    root = Path(ccci_gate.core.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 8
    offenders = {}
    for path in files:
        bad = forbidden(imported_modules(path, module_name(path, root, "ccci_gate.core")))
        if bad:
            offenders[str(path.relative_to(root))] = sorted(bad)
    assert offenders == {}


def test_the_scan_catches_an_io_import(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import socket\nfrom gear import Client\n")
    assert {"socket", "gear"} <= imported_modules(sample)


def test_the_scan_resolves_relative_imports_inside_the_core(tmp_path):
    core = tmp_path / "core"
    (core / "managers").mkdir(parents=True)
    engine = core / "engine.py"
    engine.write_text("from ..drivers import gitea\nfrom ..scheduler import Scheduler\n"
                      "from .model import Item\nfrom . import events\n")
    names = imported_modules(engine, module_name(engine, core, "ccci_gate.core"))
    assert {"ccci_gate.drivers.gitea", "ccci_gate.scheduler", "ccci_gate.core.model",
            "ccci_gate.core.events"} <= names
    assert forbidden(names) == {"ccci_gate.drivers", "ccci_gate.drivers.gitea",
                                "ccci_gate.scheduler", "ccci_gate.scheduler.Scheduler"}
    deep = core / "managers" / "base.py"
    deep.write_text("from ...web import routes\nfrom ..model import Item\n")
    names = imported_modules(deep, module_name(deep, core, "ccci_gate.core"))
    assert "ccci_gate.web.routes" in names and "ccci_gate.core.model" in names
    assert forbidden(names) == {"ccci_gate.web", "ccci_gate.web.routes"}
    package = core / "managers" / "__init__.py"
    package.write_text("from ...ports import Emit\nfrom .base import PipelineManager\n")
    names = imported_modules(package, module_name(package, core, "ccci_gate.core"))
    assert forbidden(names) == {"ccci_gate.ports", "ccci_gate.ports.Emit"}
    assert "ccci_gate.core.managers.base" in names
