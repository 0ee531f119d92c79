"""Polling in: new comments of the polled repositories, for Gitea servers that cannot
reach the gatekeeper with webhooks.

Each round reads every comment updated since the repository's cursor and queues it as
a :class:`Hook`, the same path a webhook takes; a comment id is acted on once, however
it came (the connection's seen-comment memory), so the cursor may overlap.

Switching polling on does not replay history: a repository polled for the first time
(no cursor), or again after more than ``CATCH_UP`` without polling, starts at "now"
(the gatekeeper's clock; keep it and Gitea's in sync). A restart within ``CATCH_UP``
resumes from the cursor, so comments made while the gatekeeper was down still run.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable, Iterable

from .api import GiteaAPI, GiteaError, GiteaUnavailable
from .payloads import Hook, PayloadError, parse_api_comment, pr_number_of
from .store import GiteaStore, comment_key

log = logging.getLogger("ccci_gate.drivers.gitea")

CATCH_UP = 24 * 3600.0   # a cursor older than this is not resumed: polling starts at now


class Poller:
    """Reads new comments of ``projects`` and queues them through ``submit``."""

    def __init__(self, api: GiteaAPI, store: GiteaStore, projects: Iterable[str],
                 submit: Callable[[Hook], bool], clock: Callable[[], float] = time.time):
        self.api = api
        self.store = store
        self.projects = tuple(projects)
        self.submit = submit
        self.clock = clock

    def start(self) -> None:
        """Polling is switched on: a repository without a recent cursor starts at now."""
        for repo in self.projects:
            since = self.store.cursor(repo)
            if not since or _age(since, self.clock()) > CATCH_UP:
                log.info("polling %s from now on%s", repo,
                         f" (last polled {since})" if since else "")
                self.store.set_cursor(repo, stamp(self.clock()))

    def poll_once(self) -> int:
        """Read new comments of every polled repository; returns how many were queued."""
        queued = 0
        for repo in self.projects:
            since = self.store.cursor(repo)
            if not since:          # never polled: nothing before now is new
                self.store.set_cursor(repo, stamp(self.clock()))
                continue
            try:
                comments = self.api.comments_since(repo, since)
            except (GiteaError, GiteaUnavailable) as exc:
                log.warning("polling %s: %s", repo, exc)
                continue
            start = _parse(since)
            newest = start.timestamp() if start else 0.0
            for comment in comments:
                number = pr_number_of(comment)
                updated = _parse(str(comment.get("updated_at") or comment.get("created_at") or ""))
                if updated is not None:
                    newest = max(newest, updated.timestamp())
                if number is None:
                    continue
                try:
                    hook = parse_api_comment(repo, number, comment)
                except PayloadError as exc:
                    log.warning("polled comment on %s#%s unusable: %s", repo, number, exc)
                    continue
                if self.store.seen(comment_key(repo, hook.comment_id)):
                    continue      # acted on already (the overlap, or its webhook)
                self.submit(hook)
                queued += 1
            if start is None or newest - 60 > start.timestamp():
                # poll again from a little before the newest comment seen (clocks, equal
                # timestamps); the seen-comment memory drops the repeats
                self.store.set_cursor(repo, stamp(newest - 60) if newest else stamp(self.clock()))
        return queued


def stamp(when: float) -> str:
    """RFC 3339 in UTC, as Gitea's ``since`` takes it."""
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _age(since: str, now: float) -> float:
    when = _parse(since)
    return float("inf") if when is None else now - when.timestamp()
