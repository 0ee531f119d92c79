"""A Gerrit connection: everything one Gerrit server is to the gatekeeper.

Configured in the gatekeeper's settings under ``connections`` (see ``doc/gerrit.md``
and ``settings.py``)::

    connections:
      review:
        driver: gerrit
        host: review.example.org
        user: ccci-gate
        key-file: /etc/ccci-gate/gerrit_ed25519
        url: https://review.example.org
        http-password-file: /etc/ccci-gate/gerrit-http-password

The parts, one module each: ``stream`` (SSH, reconnecting), ``events`` (lines → facts),
``catchup`` (what a disconnect missed), ``translate`` (facts → core events), ``source``
(submit out), ``reporter`` (reviews out, through the shared outbox). This module wires
them and runs the single event thread: each stream line and each catch-up finding is
skipped if it is noise, the gate's own comment, or already seen (its key), enriched
with the change's current approvals over REST, and emitted as a core event.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import voluptuous as v

from ...core.events import TriggerEvent
from ...ports import Emit
from ..base import Connection
from ..outbox import Outbox, OutboxStore, Outgoing
from . import catchup
from .api import ChangeInfo, GerritAPI, GerritError, GerritUnavailable
from .events import EventError, GerritEvent, noise, parse
from .reporter import GerritReporter
from .settings import OPTIONS, http_password
from .source import GerritSource
from .stream import EventStream
from .translate import branch_moved, core_event

log = logging.getLogger("ccci_gate.drivers.gerrit")

ENRICHED = ("patchset-created", "comment-added", "change-restored")   # asked for approvals
CURSOR = "stream"        # the time of the newest event read
GAP = "gap"              # where an unfinished catch-up must start


class GerritConnection(Connection):
    """One Gerrit server as trigger, source and reporter."""

    def __init__(self, name: str, options: Mapping[str, Any], emit: Emit, state_dir: Path,
                 api: GerritAPI | None = None, clock: Callable[[], float] = time.time):
        try:
            opts = OPTIONS(dict(options))
        except v.Invalid as exc:
            raise ValueError(f"connection {name!r}: {exc}") from None
        self.name, self.options, self.emit, self.clock = name, opts, emit, clock
        self.user = opts["user"]
        self.api = api or GerritAPI(opts["url"], opts["user"], http_password(opts),
                                    retries=opts["api-retries"], verify=opts["verify-tls"])
        self.store = OutboxStore(state_dir / "gerrit.sqlite")
        wake = threading.Event()
        self.reporter = GerritReporter(name, self.store, wake, redact=self.api.redact)
        self.outbox = Outbox(self.store, wake, self._send, unavailable=(GerritUnavailable,),
                             refused=(GerritError,), name=f"gerrit-outbox-{name}")
        self.source = GerritSource(self.api, emit, self.requeue)
        self.stream = EventStream(opts["host"], opts["port"], opts["user"], opts["key-file"],
                                  self.submit_line, self._connected, known_hosts=opts["known-hosts"],
                                  backoff=opts["reconnect-min"], backoff_max=opts["reconnect-max"],
                                  keepalive=opts["keepalive"],
                                  name=f"gerrit-stream-{name}")
        self._inbox: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._retry: threading.Timer | None = None
        self.idle = threading.Event()   # set when the inbox is drained (tests wait on it)
        self.idle.set()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.outbox.start()
        self._thread = threading.Thread(target=self._work, name=f"gerrit-events-{self.name}",
                                        daemon=True)
        self._thread.start()
        self.stream.start()

    def stop(self) -> None:
        self.stream.stop()
        if self._retry is not None:
            self._retry.cancel()
        self._inbox.put(None)
        self.outbox.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()

    def _send(self, out: Outgoing) -> None:
        number, _, revision = out.target.partition(",")
        self.api.review(out.repo, int(number), revision, out.body)

    # --- the event thread -----------------------------------------------------------------

    def _put(self, kind: str, value: Any) -> None:
        self.idle.clear()
        self._inbox.put((kind, value))

    def submit_line(self, line: str) -> None:
        self._put("line", line)

    def _connected(self) -> None:
        self._put("catch-up", None)

    def requeue(self, info: ChangeInfo) -> None:
        """The source found a newer patchset than the one tested: act on it as on the
        patchset-created the stream sends (once, whichever comes first)."""
        self._put("event", GerritEvent(
            "patchset-created", info.project, info.branch, info.number, info.patchset,
            info.revision, info.ref, subject=info.subject, owner=info.owner, wip=info.wip,
            private=info.private, created_on=int(self.clock())))

    def _work(self) -> None:
        while True:
            entry = self._inbox.get()
            if entry is None:
                return
            kind, value = entry
            try:
                if kind == "line":
                    self.handle_line(value)
                elif kind == "catch-up":
                    self.catch_up()
                else:
                    self.handle(value)
            except Exception:  # pragma: no cover - a driver bug must not stop the thread
                log.exception("gerrit %s: handling %s", self.name, kind)
            finally:
                if self._inbox.empty():
                    self.idle.set()

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

    def catch_up(self) -> list[TriggerEvent]:
        """Ask the REST API what happened since the cursor (nothing on a first start).
        The start of the gap is kept until a query succeeds: a failed one is retried
        after ``reconnect-max`` seconds, and stream events read meanwhile do not move it."""
        since = self.store.cursor(GAP) or self.store.cursor(CURSOR)
        if not since or not self.options["catch-up"]:
            self.store.set_cursor(CURSOR, str(max(int(since or 0), int(self.clock()))))
            return []
        self.store.set_cursor(GAP, since)
        try:
            found = catchup.missed(self.api, int(since))
        except (GerritError, GerritUnavailable) as exc:
            log.error("gerrit %s: catch-up query failed (retried in %ss): %s", self.name,
                      self.options["reconnect-max"], exc)
            self._retry = threading.Timer(self.options["reconnect-max"], self._connected)
            self._retry.daemon = True
            self._retry.start()
            return []
        log.info("gerrit %s: catch-up found %d events since %s", self.name, len(found), since)
        emitted = []
        for event in found:
            self._advance(event)
            emitted += self.handle(event)
        self.store.set_cursor(GAP, "")
        self.store.prune_seen()
        return emitted

    def handle(self, event: GerritEvent) -> list[TriggerEvent]:
        """Skip, deduplicate, enrich and emit one event; returns what was emitted."""
        why = noise(event) or self._own(event)
        if why:
            log.debug("gerrit %s: %s ignored: %s", self.name, event.kind, why)
            return []
        if not self.store.first_time(f"{self.name}:{event.key}"):
            log.info("gerrit %s: %s already handled", self.name, event.key)
            return []
        event, approvals = self._enriched(event)
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

    def _enriched(self, event: GerritEvent) -> tuple[GerritEvent, Any]:
        """The event with the change's WIP/private state, and its current approvals
        (None when the REST API cannot say: the event's own votes are used)."""
        if event.kind not in ENRICHED or event.number is None:
            return event, None
        try:
            info = self.api.change(event.project, event.number)
        except (GerritError, GerritUnavailable) as exc:
            log.warning("gerrit %s: approvals of %s,%s unknown (using the event's): %s",
                        self.name, event.project, event.number, exc)
            return event, None
        event = dataclasses.replace(event, wip=event.wip or info.wip,
                                    private=event.private or info.private)
        return event, info.approvals
