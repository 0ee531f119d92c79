"""The driver registry, and the configured connections as one collection.

Drivers are plugins (see :mod:`ccci_gate.drivers.base`): every module or package under
``ccci_gate/drivers/`` that defines ``DRIVER``, and every ``ccci_gate.drivers`` entry
point of an installed distribution (``name = package.module:DRIVER``). Nothing here
names a driver: adding one touches no file of the registry, the core or the config.

Settings name each connection and its ``driver``; :func:`build_connections` builds them
and gives the gatekeeper their reporters (by connection name and by driver name, so a
layout can say ``gitea: {}``), their sources (for merging), their HTTP routes and their
background threads.
"""
from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping

import voluptuous as v

from ..ports import Emit
from ..web.routes import Router
from .base import Connection, Driver

log = logging.getLogger("ccci_gate.drivers")

ENTRY_POINTS = "ccci_gate.drivers"
_NOT_DRIVERS = {"base", "registry"}


@functools.lru_cache(maxsize=1)
def drivers() -> Mapping[str, Driver]:
    """Every installed driver by name (found once per process)."""
    found: dict[str, Driver] = {}
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_DRIVERS:
            continue
        driver = getattr(importlib.import_module(f"{__package__}.{info.name}"), "DRIVER", None)
        if isinstance(driver, Driver):
            found[driver.name] = driver
    for point in entry_points(group=ENTRY_POINTS):
        try:
            driver = point.load()
        except Exception:  # a broken plugin must not stop the gatekeeper
            log.exception("driver entry point %s failed to load", point.name)
            continue
        if isinstance(driver, Driver):
            found.setdefault(driver.name, driver)
    return dict(sorted(found.items()))


def get(name: str) -> Driver:
    """The driver called ``name``; ValueError naming the installed ones if missing."""
    known = drivers()
    if name not in known:
        raise ValueError(f"no driver {name!r} is installed (installed: {', '.join(known)})")
    return known[name]


@dataclass
class Connections:
    """Every configured connection, and what the gatekeeper needs from them."""

    items: dict[str, Connection] = field(default_factory=dict)
    drivers: dict[str, str] = field(default_factory=dict)

    @property
    def reporters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conn in self.items.items():
            if conn.reporter is not None:
                out[name] = conn.reporter
                out.setdefault(self.drivers[name], conn.reporter)
        return out

    @property
    def sources(self) -> dict[str, Any]:
        return {name: conn.source for name, conn in self.items.items() if conn.source is not None}

    def register_routes(self, router: Router) -> None:
        for conn in self.items.values():
            conn.register_routes(router)

    def start(self) -> None:
        for conn in self.items.values():
            conn.start()

    def stop(self) -> None:
        for conn in self.items.values():
            conn.stop()


def build_connections(config: Mapping[str, Mapping[str, Any]], emit: Emit,
                      state_dir: Path) -> Connections:
    """Build every connection of the settings' ``connections`` mapping; each driver
    checks its own options."""
    conns = Connections()
    for name, options in config.items():
        driver = get(str(options["driver"]))
        if driver.connect is None:
            raise ValueError(f"connection {name!r}: driver {driver.name!r} takes no connection")
        opts = dict(options)
        if driver.settings_schema is not None:
            try:
                opts = driver.settings_schema(opts)
            except v.Invalid as exc:
                raise ValueError(f"connection {name!r}: {exc}") from None
        conns.items[name] = driver.connect(name, opts, emit, state_dir / "connections" / name)
        conns.drivers[name] = driver.name
    return conns
