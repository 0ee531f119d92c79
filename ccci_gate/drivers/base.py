"""What a driver is: the plugin interface between a forge (or a clock) and the gate.

A **driver** translates one outside world's vocabulary into the core's: its layout
``trigger:`` filters into :class:`~ccci_gate.core.triggers.TriggerFilter` values, its
events into typed core events (:mod:`ccci_gate.core.events`), and, when configured as a
**connection** in the settings, it reports results and merges changes there.

A driver module (or package) exposes ``DRIVER = Driver(...)``; the registry
(:mod:`ccci_gate.drivers.registry`) finds it under ``ccci_gate/drivers/`` or through a
``ccci_gate.drivers`` entry point of another distribution. See ``doc/architecture.md``,
"Writing a driver".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import voluptuous as v

from ..core.triggers import TriggerFilter
from ..ports import Emit



class SourceUnavailable(Exception):
    """The forge did not answer a lookup (down, timeout): try again later."""


class Connection:
    """A configured connection to one server of a driver. Subclasses set what they
    offer: ``reporter`` (a ``Reporter`` port), ``source`` (a ``Source`` port), HTTP
    routes (webhooks), and threads started and stopped with the gatekeeper."""

    reporter: Any = None
    source: Any = None
    store: Any = None   # its durable outbox (``drivers/outbox.OutboxStore``), if it has one

    def resolve_change(self, project: str, number: int, patchset: str | None) -> Any:
        """The :class:`~ccci_gate.core.model.Change` an operator means by ``enqueue
        --change number [--patchset P]`` (None: the settings' ``change-ref`` names it).
        Called on an HTTP thread, never the scheduler's; raises ``ValueError`` for a
        change the forge does not know and :class:`SourceUnavailable` when it is down."""
        return None

    def register_routes(self, router: Any) -> None:
        """Add the connection's HTTP endpoints (``web.routes.Router``)."""

    def start(self) -> None:
        """Start the connection's threads."""

    def stop(self) -> None:
        """Stop them, and close what the connection holds."""


# (name, options, emit, state_dir) → the connection
Connect = Callable[[str, Mapping[str, Any], Emit, Path], Connection]


@dataclass(frozen=True)
class Driver:
    """One driver: its name, what it accepts in a layout, and how it connects.

    - ``trigger_schema`` validates the value of ``trigger: {<name>: ...}`` in a pipeline
      (``None``: the driver cannot trigger pipelines);
    - ``filters`` turns that validated value into core trigger filters;
    - ``settings_schema`` validates a connection's options in the settings, and
      ``connect`` builds the connection (``None``: it needs no connection).
    """

    name: str
    description: str = ""
    trigger_schema: Any = None
    filters: Callable[[Any], tuple[TriggerFilter, ...]] = lambda value: ()
    settings_schema: v.Schema | None = None
    connect: Connect | None = None
