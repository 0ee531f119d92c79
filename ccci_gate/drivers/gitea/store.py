"""What a Gitea connection must remember across restarts, in its own SQLite file.

The shared part (:mod:`ccci_gate.drivers.outbox`): the **outbox** of API writes
(statuses, comments) not yet accepted by Gitea, the **seen** webhook deliveries and
comment ids (a redelivered webhook, or a comment seen both by webhook and by polling,
triggers once), and the polling **cursor** of each repository. Gitea's own:

- **comments**: the comment the gate keeps updating per pull request and pipeline.
"""
from __future__ import annotations

from ..outbox import Outgoing, OutboxStore

__all__ = ["GiteaStore", "Outgoing"]


class GiteaStore(OutboxStore):
    """The shared store plus the gate's comment per pull request and pipeline."""

    extra_schema = """
CREATE TABLE IF NOT EXISTS comments (
    repo TEXT NOT NULL, target TEXT NOT NULL, comment_id INTEGER NOT NULL,
    PRIMARY KEY (repo, target)
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
