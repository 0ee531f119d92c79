"""Connections: the configured source drivers (Gitea, ...) as one collection.

Settings name each connection and its ``driver``; this module builds them and gives
the gatekeeper their reporters (by connection name and by driver name, so a layout
can say ``gitea: {}``), their sources (for merging), their HTTP routes and their
background threads.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..ports import Emit
from ..web.routes import Router

# driver name → "module:factory"; a factory takes (name, options, emit, state_dir)
# and returns a connection object (see Connection below).
DRIVERS: dict[str, str] = {
    "gitea": "ccci_gate.drivers.gitea.connection:from_settings",
}


@dataclass
class Connections:
    """Every configured connection, and what the gatekeeper needs from them."""

    items: dict[str, Any] = field(default_factory=dict)
    drivers: dict[str, str] = field(default_factory=dict)

    @property
    def reporters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conn in self.items.items():
            reporter = getattr(conn, "reporter", None)
            if reporter is not None:
                out[name] = reporter
                out.setdefault(self.drivers[name], reporter)
        return out

    @property
    def sources(self) -> dict[str, Any]:
        return {name: conn.source for name, conn in self.items.items()
                if getattr(conn, "source", None) is not None}

    def register_routes(self, router: Router) -> None:
        for conn in self.items.values():
            register = getattr(conn, "register_routes", None)
            if register is not None:
                register(router)

    def start(self) -> None:
        for conn in self.items.values():
            if hasattr(conn, "start"):
                conn.start()

    def stop(self) -> None:
        for conn in self.items.values():
            if hasattr(conn, "stop"):
                conn.stop()


def _factory(driver: str) -> Callable[..., Any]:
    try:
        target = DRIVERS[driver]
    except KeyError:
        raise ValueError(f"unknown connection driver {driver!r}; known: {', '.join(DRIVERS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_connections(config: Mapping[str, Mapping[str, Any]], emit: Emit,
                      state_dir: Path) -> Connections:
    """Build every connection of the settings' ``connections`` mapping."""
    conns = Connections()
    for name, options in config.items():
        driver = str(options["driver"])
        conns.items[name] = _factory(driver)(name, dict(options), emit, state_dir / "connections" / name)
        conns.drivers[name] = driver
    return conns
