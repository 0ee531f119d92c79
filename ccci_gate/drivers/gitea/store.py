"""What a Gitea connection must remember across restarts, in its own SQLite file.

The shared part (:mod:`ccci_gate.drivers.outbox`): the **outbox** of API writes
(statuses, comments) not yet accepted by Gitea, the **seen** webhook deliveries and
comment ids (a redelivered webhook, or a comment seen both by webhook and by polling,
triggers once), and the polling **cursor** of each repository. Gitea's own:

- **comments**: the comment the gate keeps updating per pull request and pipeline.
- **inbox**: hooks (webhooks and polled comments) accepted but not yet turned into
  core events, in order; a Gitea outage delays them, a restart does not lose them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..outbox import Outgoing, OutboxStore

__all__ = ["GiteaStore", "Incoming", "Outgoing", "comment_key"]


def comment_key(repo: str, comment_id: int | None) -> str:
    """The ``seen`` key of a comment acted on (by webhook or by polling)."""
    return f"comment:{repo}:{comment_id}"


@dataclass(frozen=True)
class Incoming:
    """One queued hook."""

    id: int
    hook: dict[str, Any]
    delivery: str
    received_at: float
    attempts: int
    next_at: float


class GiteaStore(OutboxStore):
    """The shared store plus the gate's comment per pull request and pipeline."""

    extra_schema = """
CREATE TABLE IF NOT EXISTS comments (
    repo TEXT NOT NULL, target TEXT NOT NULL, comment_id INTEGER NOT NULL,
    PRIMARY KEY (repo, target)
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hook TEXT NOT NULL,           -- JSON of a payloads.Hook
    delivery TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
"""

    def comment_id(self, repo: str, target: str) -> int | None:
        rows = self._run("SELECT comment_id FROM comments WHERE repo = ? AND target = ?",
                         (repo, target))
        return rows[0][0] if rows else None

    def set_comment_id(self, repo: str, target: str, comment_id: int | None) -> None:
        if comment_id is None:
            self._run("DELETE FROM comments WHERE repo = ? AND target = ?", (repo, target))
        else:
            self._run("INSERT OR REPLACE INTO comments VALUES (?, ?, ?)", (repo, target, comment_id))

    # --- inbox ---------------------------------------------------------------------------

    def accept(self, hook: dict[str, Any], delivery: str = "") -> bool:
        """Queue a hook; with a ``delivery`` id, only the first time it is seen (one
        transaction: a delivery is never marked seen without its hook queued)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if delivery:
                    cur = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)",
                                           (f"delivery:{delivery}", time.time()))
                    if cur.rowcount != 1:
                        self._db.execute("ROLLBACK")
                        return False
                self._db.execute("INSERT INTO inbox (hook, delivery, received_at) VALUES (?, ?, ?)",
                                 (json.dumps(hook), delivery, time.time()))
                self._db.execute("COMMIT")
                return True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def inbox_head(self) -> Incoming | None:
        """The oldest hook not yet handled (hooks are handled in order)."""
        rows = self._run("SELECT id, hook, delivery, received_at, attempts, next_at FROM inbox "
                         "ORDER BY id LIMIT 1")
        if not rows:
            return None
        id_, hook, delivery, received_at, attempts, next_at = rows[0]
        return Incoming(id_, json.loads(hook), delivery, received_at, attempts, next_at)

    def inbox_done(self, id_: int) -> None:
        self._run("DELETE FROM inbox WHERE id = ?", (id_,))

    def inbox_retry(self, id_: int, error: str, delay: float) -> None:
        self._run("UPDATE inbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                  "WHERE id = ?", (time.time() + delay, error[:500], id_))

    def inbox_size(self) -> int:
        return self._run("SELECT COUNT(*) FROM inbox")[0][0]

    # --- seen keys -----------------------------------------------------------------------

    def seen(self, key: str) -> bool:
        return bool(self._run("SELECT 1 FROM seen WHERE key = ?", (key,)))

    def forget(self, key: str) -> None:
        self._run("DELETE FROM seen WHERE key = ?", (key,))
