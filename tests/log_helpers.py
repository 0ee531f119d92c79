"""Helpers for the log, retention and replay tests: store rows without an engine, a
listener serving ``web/logs.py`` routes."""
from __future__ import annotations

import uuid
from typing import Any

from ccci_gate.logstore import LogStore
from ccci_gate.store import Store
from ccci_gate.web.logs import LogRoutes
from ccci_gate.web.routes import Router
from ccci_gate.web.server import WebServer


def item_summary(jobs: list[dict[str, Any]], buildset: str | None = None,
                 state: str = "REPORTED", result: str | None = "SUCCESS") -> dict[str, Any]:
    """An item's summary as ``core.status`` makes it, with ``jobs`` (id, result...)."""
    return {
        "item_id": uuid.uuid4().hex, "pipeline": "check", "state": state, "result": result,
        "quick": False, "enqueued_at": 1.0, "message": "",
        "change": {"project": "org/p", "number": 1, "patchset": "abc", "ref": "refs/pull/1/head",
                   "branch": "main", "sha": "abc"},
        "buildset": {"id": buildset or uuid.uuid4().hex, "ref": "refs/zuul/main/Z1",
                     "commit": "abc", "merge_state": "MERGED", "changes": []},
        "jobs": [{"name": f"job{i}", "attempt": 1, "state": "COMPLETED", "voting": True,
                  "result": "SUCCESS", **j} for i, j in enumerate(jobs)],
    }


def serve_logs(tmp_path, store: Store | None = None) -> tuple[WebServer, LogStore, Store]:
    logs = LogStore(tmp_path / "logs")
    store = store or Store(tmp_path / "db.sqlite")
    router = Router()
    LogRoutes(logs, store).register(router)
    web = WebServer(router, "127.0.0.1", 0)
    web.start()
    return web, logs, store
