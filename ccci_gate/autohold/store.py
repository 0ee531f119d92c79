"""Hold requests and held apps in SQLite (``state/autohold.sqlite``), so both survive a
gatekeeper restart.

- ``requests``: one row per ``ccci-gate autohold`` (``spec.HoldRequest``).
- ``held``: one row per held app, keyed by build id: a hold handed over twice (Gearman
  and HTTP, or a retried hand-over) counts once. A hold arriving for a request that is
  no longer active (released, or its count spent by a build that failed at the same
  time) is recorded already released, so its worker's janitor removes it.

Active requests are also kept in memory (``match`` runs on the scheduler thread and
never touches the database).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from .spec import HoldRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, job TEXT NOT NULL,
    change INTEGER, count INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0,
    for_seconds INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
    released_at REAL
);
CREATE TABLE IF NOT EXISTS held (
    build_id TEXT PRIMARY KEY, request_id INTEGER NOT NULL, project TEXT, job TEXT,
    change INTEGER, worker TEXT, host TEXT, stack TEXT NOT NULL, domain TEXT,
    networks TEXT, log_url TEXT, held_at REAL NOT NULL, until REAL NOT NULL,
    released_at REAL, why TEXT
);
"""
REQUEST_COLUMNS = ("id", "project", "job", "change", "count", "used", "for_seconds", "reason",
                   "created_at", "released_at")


class HoldStore:
    """Thread-safe: one connection behind a lock (writes are rare and small)."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        self._active: list[HoldRequest] = []
        self._refresh()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- requests ----------------------------------------------------------------------

    def add(self, fields: Mapping[str, Any], now: float | None = None) -> HoldRequest:
        """A new request from ``spec.request_fields``."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO requests (project, job, change, count, for_seconds, reason, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (fields["project"], fields["job"], fields.get("change"), fields["count"],
                 fields["for_seconds"], fields.get("reason", ""), now or time.time()))
            request_id = int(cursor.lastrowid or 0)
        self._refresh()
        found = self.request(request_id)
        assert found is not None
        return found

    def request(self, request_id: int) -> HoldRequest | None:
        rows = self._query("SELECT * FROM requests WHERE id = ?", (request_id,))
        return _request(rows[0]) if rows else None

    def requests(self) -> list[HoldRequest]:
        return [_request(r) for r in self._query("SELECT * FROM requests ORDER BY id")]

    def match(self, project: str, job: str, change: int | str | None) -> HoldRequest | None:
        """The oldest active request matching a build (from memory)."""
        for request in self._active:
            if request.matches(project, job, change):
                return request
        return None

    def release(self, request_id: int, now: float | None = None) -> list[dict[str, Any]] | None:
        """Release a request and its held apps; the apps released now (None: no request)."""
        now = now or time.time()
        with self._lock:
            row = self._db.execute("SELECT id FROM requests WHERE id = ?",
                                   (request_id,)).fetchone()
            if row is None:
                return None
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE requests SET released_at = ? WHERE id = ? AND "
                             "released_at IS NULL", (now, request_id))
            rows = self._db.execute("SELECT * FROM held WHERE request_id = ? AND "
                                    "released_at IS NULL", (request_id,)).fetchall()
            self._db.execute("UPDATE held SET released_at = ?, why = 'released' WHERE "
                             "request_id = ? AND released_at IS NULL", (now, request_id))
            self._db.execute("COMMIT")
        self._refresh()
        return [_held(r) for r in rows]

    # --- held apps ---------------------------------------------------------------------

    def record_held(self, build_id: str, report: Mapping[str, Any], log_url: str,
                    now: float | None = None) -> tuple[dict[str, Any], bool]:
        """Record the app a worker held for ``build_id``; (its row, whether it counts
        against its request). Idempotent per build id."""
        now = now or time.time()
        request_id = int(report["request"])
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                known = self._db.execute("SELECT * FROM held WHERE build_id = ?",
                                         (build_id,)).fetchone()
                if known is not None:
                    self._db.execute("COMMIT")
                    return _held(known), known["why"] in (None, "released", "expired")
                row = self._db.execute("SELECT * FROM requests WHERE id = ?",
                                       (request_id,)).fetchone()
                request = _request(row) if row is not None else None
                counts = request is not None and request.active
                why = None if counts else (
                    "no such request" if request is None else
                    f"request {request_id} was {request.state} before this hold arrived")
                if counts:
                    self._db.execute("UPDATE requests SET used = used + 1 WHERE id = ?",
                                     (request_id,))
                self._db.execute(
                    "INSERT INTO held (build_id, request_id, project, job, change, worker, "
                    "host, stack, domain, networks, log_url, held_at, until, released_at, why) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (build_id, request_id, request.project if request else "",
                     request.job if request else "", request.change if request else None,
                     str(report.get("worker", "")), str(report.get("host", "")),
                     str(report["stack"]), str(report.get("domain", "")),
                     json.dumps(list(report.get("networks") or [])), log_url,
                     float(report.get("held_at") or now), float(report["until"]),
                     None if counts else now, why))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            stored = self._db.execute("SELECT * FROM held WHERE build_id = ?",
                                      (build_id,)).fetchone()
        self._refresh()
        return _held(stored), counts

    def held(self, build_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM held WHERE build_id = ?", (build_id,))
        return _held(rows[0]) if rows else None

    def held_apps(self) -> list[dict[str, Any]]:
        return [_held(r) for r in self._query("SELECT * FROM held ORDER BY held_at")]

    def expire(self, now: float | None = None) -> list[dict[str, Any]]:
        """Mark held apps past their expiry released; those marked now."""
        now = now or time.time()
        with self._lock:
            rows = self._db.execute("SELECT * FROM held WHERE released_at IS NULL AND "
                                    "until <= ?", (now,)).fetchall()
            if rows:
                self._db.execute("UPDATE held SET released_at = until, why = 'expired' "
                                 "WHERE released_at IS NULL AND until <= ?", (now,))
        return [_held(r) for r in rows]

    # --- internals -----------------------------------------------------------------------

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _refresh(self) -> None:
        self._active = [r for r in self.requests() if r.active]


def held_state(row: Mapping[str, Any], now: float | None = None) -> str:
    """``held`` while a held app is kept, else ``released`` or ``expired``."""
    if row.get("released_at") is not None:
        return "expired" if row.get("why") == "expired" else "released"
    return "held" if (now or time.time()) < float(row["until"]) else "expired"


def _request(row: sqlite3.Row) -> HoldRequest:
    return HoldRequest(**{k: row[k] for k in REQUEST_COLUMNS})


def _held(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["networks"] = json.loads(data.get("networks") or "[]")
    data["state"] = held_state(data)
    return data
