"""The Gitea driver: webhooks and polling in (``connection``, ``payloads``), statuses and
comments out (``reporter``, through the ``store``'s outbox), merges via the API (``api``).
Its layout filters and the translation of Gitea's words into core events live in
``triggers``; its connection settings in ``settings``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...ports import Emit
from ..base import Driver
from . import triggers
from .settings import OPTIONS


def _connect(name: str, options: Mapping[str, Any], emit: Emit, state_dir: Path) -> Any:
    from .connection import GiteaConnection
    return GiteaConnection(name, options, emit, state_dir)


DRIVER = Driver(name="gitea", description="Gitea webhooks, polling, statuses, comments, merges",
                trigger_schema=[triggers.FILTER], filters=triggers.filters,
                settings_schema=OPTIONS, connect=_connect)
