"""What a Gitea connection must remember across restarts, in its own SQLite file.

- **outbox**: API writes (statuses, comments) not yet accepted by Gitea, in order; a
  Gitea outage delays them, a restart does not lose them.
- **comments**: the comment the gate keeps updating per pull request and pipeline.
- **seen**: webhook deliveries and comment ids already acted on, so a redelivered
  webhook, or a comment seen both by webhook and by polling, triggers once.
- **cursor**: how far polling has read each repository.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEEN_KEEP = 30 * 24 * 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,           -- status | comment
    repo TEXT NOT NULL,
    target TEXT NOT NULL,         -- the sha (status) or 'number/pipeline' (comment)
    body TEXT NOT NULL,           -- JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS comments (
    repo TEXT NOT NULL, target TEXT NOT NULL, comment_id INTEGER NOT NULL,
    PRIMARY KEY (repo, target)
);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (repo TEXT PRIMARY KEY, since TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Outgoing:
    id: int
    kind: str
    repo: str
    target: str
    body: dict[str, Any]
    attempts: int


class GiteaStore:
    """Thread-safe; every method is one short transaction."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- outbox --------------------------------------------------------------------------

    def push(self, kind: str, repo: str, target: str, body: dict[str, Any]) -> None:
        self._run("INSERT INTO outbox (kind, repo, target, body) VALUES (?, ?, ?, ?)",
                  (kind, repo, target, json.dumps(body)))

    def head(self) -> Outgoing | None:
        """The oldest unsent write (writes go out in order)."""
        rows = self._run("SELECT id, kind, repo, target, body, attempts, next_at FROM outbox "
                         "ORDER BY id LIMIT 1")
        if not rows:
            return None
        id_, kind, repo, target, body, attempts, _ = rows[0]
        return Outgoing(id_, kind, repo, target, json.loads(body), attempts)

    def next_at(self) -> float | None:
        rows = self._run("SELECT next_at FROM outbox ORDER BY id LIMIT 1")
        return rows[0][0] if rows else None

    def sent(self, id_: int) -> None:
        self._run("DELETE FROM outbox WHERE id = ?", (id_,))

    def failed(self, id_: int, error: str, delay: float) -> None:
        self._run("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                  "WHERE id = ?", (time.time() + delay, error[:500], id_))

    def pending(self) -> int:
        return self._run("SELECT COUNT(*) FROM outbox")[0][0]

    # --- the gate's comments -----------------------------------------------------------

    def comment_id(self, repo: str, target: str) -> int | None:
        rows = self._run("SELECT comment_id FROM comments WHERE repo = ? AND target = ?",
                         (repo, target))
        return rows[0][0] if rows else None

    def set_comment_id(self, repo: str, target: str, comment_id: int | None) -> None:
        if comment_id is None:
            self._run("DELETE FROM comments WHERE repo = ? AND target = ?", (repo, target))
        else:
            self._run("INSERT OR REPLACE INTO comments VALUES (?, ?, ?)", (repo, target, comment_id))

    # --- seen deliveries and comments --------------------------------------------------

    def first_time(self, key: str) -> bool:
        """Record ``key``; True only the first time it is seen."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (key, time.time()))
            return cur.rowcount == 1

    def prune_seen(self, keep: float = SEEN_KEEP) -> None:
        self._run("DELETE FROM seen WHERE at < ?", (time.time() - keep,))

    # --- polling cursors -----------------------------------------------------------------

    def cursor(self, repo: str) -> str:
        rows = self._run("SELECT since FROM cursor WHERE repo = ?", (repo,))
        return rows[0][0] if rows else ""

    def set_cursor(self, repo: str, since: str) -> None:
        self._run("INSERT OR REPLACE INTO cursor VALUES (?, ?)", (repo, since))

    def close(self) -> None:
        with self._lock:
            self._db.close()
