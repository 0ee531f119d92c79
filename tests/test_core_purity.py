"""The pure core imports no I/O: no sockets, gear, docker, git, subprocess or threads."""
from __future__ import annotations

import ast
from pathlib import Path

import ccci_gate.core

FORBIDDEN = {"socket", "gear", "docker", "subprocess", "threading", "sqlite3", "requests",
             "http", "urllib", "asyncio", "select", "selectors", "shutil", "os", "pathlib",
             "multiprocessing", "signal", "ccci_gate.gearman", "ccci_gate.merger",
             "ccci_gate.drivers", "ccci_gate.swarm", "ccci_gate.web", "ccci_gate.store",
             "ccci_gate.scheduler"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_modules_import_no_io():
    root = Path(ccci_gate.core.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 8
    offenders = {}
    for path in files:
        bad = {m for m in imported_modules(path)
               if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}
        if bad:
            offenders[str(path.relative_to(root))] = sorted(bad)
    assert offenders == {}


def test_the_scan_catches_an_io_import(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import socket\nfrom gear import Client\n")
    assert {"socket", "gear"} <= imported_modules(sample)
