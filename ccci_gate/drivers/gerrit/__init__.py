"""The Gerrit driver: ``gerrit stream-events`` over SSH in (``stream``, ``events``,
``catchup``), review votes and messages out (``reporter``, through the shared durable
outbox), gated submit at the tested revision (``source``), over the REST API (``api``).
Its layout filters and the translation of Gerrit's words into core events live in
``triggers``, ``approvals`` and ``translate``; its connection settings in ``settings``.
See ``doc/gerrit.md``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...ports import Emit
from ..base import Driver
from . import triggers
from .settings import OPTIONS
from .translate import DRIVER as NAME


def _connect(name: str, options: Mapping[str, Any], emit: Emit, state_dir: Path) -> Any:
    from .connection import GerritConnection
    return GerritConnection(name, options, emit, state_dir)


DRIVER = Driver(name=NAME, description="Gerrit stream-events over SSH, review votes, submit",
                trigger_schema=[triggers.FILTER], filters=triggers.filters,
                settings_schema=OPTIONS, connect=_connect)
