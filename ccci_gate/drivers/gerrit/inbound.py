"""Events in: what the connection's event thread does with each stream line and each
catch-up finding.

An event is skipped if it is noise (:func:`~.events.noise`), the gate's own comment, or
already seen (its key, remembered in the store); then the change is read over REST, and
an event about a patchset that is no longer current, or a comment on a change closed
since, is skipped too (:func:`stale`); what remains is emitted as a core event carrying
the change's current approvals and WIP/private state.

The **cursor** is the time of the newest stream or catch-up event read (it survives
restarts); a catch-up asks for everything since, and the start of a **gap** is kept
until a catch-up query succeeds, however many live events move the cursor meanwhile.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from ...core.events import TriggerEvent
from ...ports import Emit
from ..outbox import OutboxStore
from . import catchup
from .api import ChangeInfo, GerritAPI, GerritError, GerritUnavailable
from .events import EventError, GerritEvent, noise, parse
from .translate import branch_moved, core_event

log = logging.getLogger("ccci_gate.drivers.gerrit")

ENRICHED = ("patchset-created", "comment-added", "change-restored")   # read over REST
CURSOR = "stream"        # the time of the newest event read
GAP = "gap"              # where an unfinished catch-up must start


class Inbound:
    """Stream lines and catch-up findings of connection ``name`` → core events."""

    def __init__(self, name: str, user: str, api: GerritAPI, store: OutboxStore, emit: Emit,
                 catch_up: bool = True, clock: Callable[[], float] = time.time):
        self.name, self.user, self.api, self.store, self.emit = name, user, api, store, emit
        self.catch_up_enabled = catch_up
        self.clock = clock

    def handle_line(self, line: str) -> list[TriggerEvent]:
        try:
            event = parse(line)
        except EventError as exc:
            log.warning("gerrit %s: unusable stream line (%s): %.200s", self.name, exc, line)
            return []
        self._advance(event)
        return self.handle(event)

    def _advance(self, event: GerritEvent) -> None:
        """Move the cursor to ``event`` if it is newer (stream and catch-up events only:
        what the source finds out itself says nothing about what the stream delivered)."""
        if event.created_on > int(self.store.cursor(CURSOR) or 0):
            self.store.set_cursor(CURSOR, str(event.created_on))

    def catch_up(self) -> bool:
        """Ask the REST API what happened since the cursor (nothing on a first start);
        False when the query failed (the gap is kept for the next try)."""
        since = self.store.cursor(GAP) or self.store.cursor(CURSOR)
        if not since or not self.catch_up_enabled:
            self.store.set_cursor(CURSOR, str(max(int(since or 0), int(self.clock()))))
            return True
        self.store.set_cursor(GAP, since)
        try:
            found = catchup.missed(self.api, int(since))
        except (GerritError, GerritUnavailable) as exc:
            log.error("gerrit %s: catch-up query since %s failed (will retry): %s", self.name,
                      since, exc)
            return False
        log.info("gerrit %s: catch-up found %d events since %s", self.name, len(found), since)
        for event in found:
            self._advance(event)
            self.handle(event)
        self.store.set_cursor(GAP, "")
        self.store.prune_seen()
        return True

    def handle(self, event: GerritEvent) -> list[TriggerEvent]:
        """Skip, deduplicate, enrich and emit one event; returns what was emitted."""
        why = noise(event) or self._own(event)
        if why:
            log.debug("gerrit %s: %s ignored: %s", self.name, event.kind, why)
            return []
        if not self.store.first_time(f"{self.name}:{event.key}"):
            log.info("gerrit %s: %s already handled", self.name, event.key)
            return []
        info = self._current(event)
        why = stale(event, info)
        if why:
            log.info("gerrit %s: %s on %s,%s ignored: %s", self.name, event.kind, event.project,
                     event.number, why)
            return []
        approvals = None
        if info is not None:
            event = dataclasses.replace(event, wip=event.wip or info.wip,
                                        private=event.private or info.private)
            approvals = info.approvals
        out = [core_event(event, self.name, approvals)]
        moved = branch_moved(event)
        if moved is not None and self.store.first_time(f"{self.name}:{moved.key}"):
            out.append(core_event(moved, self.name))
        emitted = [e for e in out if e is not None]
        for core in emitted:
            self.emit(core)
        return emitted

    def _own(self, event: GerritEvent) -> str:
        if event.kind == "comment-added" and event.user == self.user:
            return "the gate's own comment"
        return ""

    def _current(self, event: GerritEvent) -> ChangeInfo | None:
        """The change as the REST API sees it now: its WIP/private state, current
        revision and votes (None when it cannot say: the event's own votes are used)."""
        if event.kind not in ENRICHED or event.number is None:
            return None
        try:
            return self.api.change(event.project, event.number)
        except (GerritError, GerritUnavailable) as exc:
            log.warning("gerrit %s: approvals of %s,%s unknown (using the event's): %s",
                        self.name, event.project, event.number, exc)
            return None


def stale(event: GerritEvent, info: ChangeInfo | None) -> str:
    """Why ``event`` no longer describes the change (empty: it does): a comment on a
    change that is closed now, or on a patchset that is no longer the current one."""
    if info is None:
        return ""
    if event.kind == "comment-added" and info.status != "NEW":
        return f"the change is {info.status.lower()}"
    if event.revision and info.revision and event.revision != info.revision:
        return f"patchset {event.patchset} is not the current one ({info.patchset})"
    return ""
