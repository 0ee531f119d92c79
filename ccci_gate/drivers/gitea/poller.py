"""Polling in: new comments of the polled repositories, for Gitea servers that cannot
reach the gatekeeper with webhooks.

Each round reads every comment updated since the repository's cursor and queues it as
a :class:`Hook`, the same path a webhook takes; a comment id is acted on once, however
it came (the connection's seen-comment memory), so the cursor may overlap.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from .api import GiteaAPI, GiteaError, GiteaUnavailable
from .payloads import Hook, PayloadError, parse_api_comment, pr_number_of
from .store import GiteaStore

log = logging.getLogger("ccci_gate.drivers.gitea")


class Poller:
    """Reads new comments of ``projects`` and queues them through ``submit``."""

    def __init__(self, api: GiteaAPI, store: GiteaStore, projects: Iterable[str],
                 submit: Callable[[Hook], None]):
        self.api = api
        self.store = store
        self.projects = tuple(projects)
        self.submit = submit

    def poll_once(self) -> int:
        """Read new comments of every polled repository; returns how many were queued."""
        queued = 0
        for repo in self.projects:
            since = self.store.cursor(repo)
            try:
                comments = self.api.comments_since(repo, since)
            except (GiteaError, GiteaUnavailable) as exc:
                log.warning("polling %s: %s", repo, exc)
                continue
            newest = since
            for comment in comments:
                number = pr_number_of(comment)
                updated = str(comment.get("updated_at") or comment.get("created_at") or "")
                newest = max(newest, updated)
                if number is None:
                    continue
                try:
                    hook = parse_api_comment(repo, number, comment)
                except PayloadError as exc:
                    log.warning("polled comment on %s#%s unusable: %s", repo, number, exc)
                    continue
                self.submit(hook)
                queued += 1
            if newest and newest != since:
                self.store.set_cursor(repo, overlap(newest))
        return queued


def overlap(stamp: str) -> str:
    """Poll again from a little before the newest comment seen (clocks and equal
    timestamps); the seen-comment memory drops the repeats."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return (when - timedelta(seconds=60)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
