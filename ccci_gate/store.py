"""The SQLite store: items, buildsets and builds, so history survives a restart.

The scheduler thread writes (one transaction per batch of events); web threads read
through their own connections (WAL lets them read while a batch is written), so an HTTP
handler never waits for the scheduler's write lock.
Rows are written from the plain snapshots of ``core.status`` — the store never sees
live model objects. Items that are still queued (``finished_at`` NULL) are what a
restart recovers from.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, project TEXT NOT NULL,
    change_number INTEGER, patchset TEXT, ref TEXT, branch TEXT, sha TEXT,
    state TEXT, result TEXT, quick INTEGER, enqueued_at REAL, finished_at REAL,
    message TEXT, summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_open ON items (finished_at);
CREATE INDEX IF NOT EXISTS items_change ON items (project, change_number);
CREATE TABLE IF NOT EXISTS buildsets (
    id TEXT PRIMARY KEY, item_id TEXT NOT NULL, ref TEXT, commit_sha TEXT,
    merge_state TEXT, changes TEXT
);
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY, buildset_id TEXT, item_id TEXT NOT NULL, job TEXT NOT NULL,
    attempt INTEGER, state TEXT, result TEXT, voting INTEGER, worker TEXT, url TEXT,
    log_url TEXT, enqueued_at REAL, started_at REAL, finished_at REAL, message TEXT
);
CREATE INDEX IF NOT EXISTS builds_item ON builds (item_id);
CREATE TABLE IF NOT EXISTS reports (
    item_id TEXT NOT NULL, phase TEXT NOT NULL, driver TEXT NOT NULL, at REAL,
    PRIMARY KEY (item_id, phase, driver)
);
"""


class Store:
    """A thread-safe handle on the state database (WAL; one writing connection behind a
    lock, one reading connection per reading thread)."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _reader(self) -> sqlite3.Connection | None:
        """This thread's read-only connection (None for an in-memory database)."""
        if self.path == ":memory:":
            return None
        reader = getattr(self._local, "db", None)
        if reader is None:
            uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
            reader = sqlite3.connect(uri, uri=True, check_same_thread=False)
            reader.row_factory = sqlite3.Row
            self._local.db = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    # --- writes ----------------------------------------------------------------------

    def save_items(self, summaries: Iterable[Mapping[str, Any]], finished: bool = False) -> None:
        """Upsert items (and their buildset and builds) from ``item_summary`` snapshots.

        ``finished`` marks them as out of every queue (reported or dequeued).
        """
        now = time.time()
        item_rows, bs_rows, build_rows = [], [], []
        for s in summaries:
            c = s["change"]
            item_rows.append((s["item_id"], s["pipeline"], c["project"], c["number"], c["patchset"],
                              c["ref"], c["branch"], c["sha"], s["state"], s["result"],
                              int(bool(s["quick"])), s["enqueued_at"], now if finished else None,
                              s.get("message") or s.get("failing_reason") or "",
                              json.dumps(s, sort_keys=True)))
            bs = s["buildset"]
            if bs["id"]:
                bs_rows.append((bs["id"], s["item_id"], bs["ref"], bs["commit"], bs["merge_state"],
                                json.dumps(bs["changes"])))
            for j in s["jobs"]:
                if j.get("id"):
                    build_rows.append((j["id"], bs["id"], s["item_id"], j["name"], j["attempt"],
                                       j["state"], j["result"], int(bool(j["voting"])), j.get("worker", ""),
                                       j.get("url", ""), j.get("log_url", ""), j.get("enqueued_at"),
                                       j.get("started_at"), j.get("finished_at"), j.get("message", "")))
        if not item_rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", item_rows)
                self._db.executemany(
                    "INSERT OR REPLACE INTO buildsets VALUES (?,?,?,?,?,?)", bs_rows)
                self._db.executemany(
                    "INSERT OR REPLACE INTO builds VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", build_rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_report(self, item_id: str, phase: str, driver: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO reports VALUES (?,?,?,?)",
                             (item_id, phase, driver, time.time()))

    # --- reads -----------------------------------------------------------------------

    def _rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        reader = self._reader()
        if reader is None:
            with self._lock:
                return [dict(r) for r in self._db.execute(sql, args).fetchall()]
        return [dict(r) for r in reader.execute(sql, args).fetchall()]

    def item(self, item_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT summary FROM items WHERE id = ?", (item_id,))
        return json.loads(rows[0]["summary"]) if rows else None

    def open_items(self) -> list[dict[str, Any]]:
        """Snapshots of items that were still queued (what a restart recovers)."""
        return [json.loads(r["summary"]) for r in
                self._rows("SELECT summary FROM items WHERE finished_at IS NULL ORDER BY enqueued_at")]

    def history(self, limit: int = 50, project: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT id, pipeline, project, change_number, patchset, ref, sha, result, state,"
               " enqueued_at, finished_at, message FROM items WHERE finished_at IS NOT NULL")
        args: tuple = ()
        if project:
            sql += " AND project = ?"
            args = (project,)
        return self._rows(sql + " ORDER BY finished_at DESC LIMIT ?", args + (limit,))

    def build(self, build_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM builds WHERE id = ?", (build_id,))
        return rows[0] if rows else None

    def builds_of(self, item_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM builds WHERE item_id = ? ORDER BY enqueued_at", (item_id,))

    def reports_of(self, item_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM reports WHERE item_id = ? ORDER BY at", (item_id,))
