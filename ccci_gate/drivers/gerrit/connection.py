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

The parts, one module each: ``stream`` (SSH, reconnecting), ``inbound`` (each line or
catch-up finding → skipped, deduplicated, read over REST, emitted), ``events`` (lines →
facts), ``catchup`` (what a disconnect missed), ``translate`` (facts → core events),
``source`` (submit out), ``reporter`` (reviews out, through the shared outbox). This
module wires them and runs the single event thread that feeds ``inbound`` in order.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import voluptuous as v

from ...ports import Emit
from ..base import Connection, SourceUnavailable
from ..outbox import Outbox, OutboxStore, Outgoing
from .approvals import GerritChange
from .api import ChangeInfo, GerritAPI, GerritError, GerritUnavailable
from .events import GerritEvent
from .inbound import Inbound
from .reporter import GerritReporter
from .settings import OPTIONS, http_password
from .source import GerritSource
from .stream import EventStream

log = logging.getLogger("ccci_gate.drivers.gerrit")



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
        self.inbound = Inbound(name, opts["user"], self.api, self.store, emit,
                               catch_up=opts["catch-up"], clock=clock)
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

    def _retry_later(self) -> None:
        """A catch-up query failed: try again after ``reconnect-max`` seconds."""
        self._retry = threading.Timer(self.options["reconnect-max"], self._connected)
        self._retry.daemon = True
        self._retry.start()

    def resolve_change(self, project: str, number: int, patchset: str | None) -> GerritChange:
        """``enqueue --change N``: the change's current patchset as Gerrit says now;
        with ``--patchset P`` an older one, by its ``refs/changes/NN/N/P`` ref."""
        try:
            info = self.api.change(project, number)
            older = (self.api.revisions(project, number)
                     if patchset not in (None, "", str(info.patchset)) else {})
        except GerritError as exc:
            raise ValueError(f"Gerrit {self.name!r} has no change {number} in {project} "
                             f"({exc.status})") from None
        except GerritUnavailable as exc:
            raise SourceUnavailable(f"Gerrit {self.name!r}: {exc}") from None
        if older or patchset not in (None, "", str(info.patchset)):
            if not (patchset or "").isdigit() or int(patchset or 0) not in older:
                raise ValueError(f"change {number} has patchsets 1 to {info.patchset}, "
                                 f"not {patchset!r}")
            sha, ref = older[int(patchset or 0)]
            return GerritChange(project, info.branch, ref, number=number, patchset=patchset,
                                sha=sha, title=info.subject, author=info.owner)
        return GerritChange(project, info.branch, info.ref, number=number,
                            patchset=str(info.patchset), sha=info.revision, title=info.subject,
                            author=info.owner, approvals=info.approvals, wip=info.wip,
                            private=info.private)

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
                    self.inbound.handle_line(value)
                elif kind == "catch-up":
                    if not self.inbound.catch_up():
                        self._retry_later()
                else:
                    self.inbound.handle(value)
            except Exception:  # pragma: no cover - a driver bug must not stop the thread
                log.exception("gerrit %s: handling %s", self.name, kind)
            finally:
                if self._inbox.empty():
                    self.idle.set()
