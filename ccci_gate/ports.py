"""The small interfaces between the scheduler and the outside world.

The scheduler thread calls these with actions from the pure core; each port does its
I/O on its own threads and answers by putting frozen events (``core.events``) on the
scheduler's queue through the ``emit`` callback it was built with. A port never
touches scheduler state. Fakes for tests implement the same protocols.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

from .core.actions import CancelBuild, MergeChange, PrepareRef, Report, StartBuild
from .core.events import Event

Emit = Callable[[Event], None]


class Merger(Protocol):
    """Builds speculative refs (git) and serves them to workers."""

    def prepare(self, action: PrepareRef) -> None:
        """Start building the ref; emit ``RefPrepared`` or ``MergeFailed`` later."""

    def url(self) -> str:
        """Base URL workers fetch from (``ZUUL_URL``); ``<url>/<project>`` is a repo."""


class Dispatcher(Protocol):
    """Runs builds over Gearman; the only user of the gear library."""

    def start(self, action: StartBuild) -> None:
        """Submit; emit ``BuildStarted``/``BuildProgress``/``BuildCompleted`` later."""

    def cancel(self, action: CancelBuild) -> None:
        """Dequeue a queued build or send ``stop:<worker>`` for a running one. The
        build then completes with ``ABORTED`` or ``CANCELED`` (or not at all)."""

    def pool(self) -> Mapping[str, Any]:
        """Workers and functions known to the Gearman servers, for the status."""


class Reporter(Protocol):
    """Tells a source (Gitea, Gerrit, ...) about an item's result."""

    def report(self, action: Report) -> None: ...


class Source(Protocol):
    """Where changes live: merging a tested change belongs here."""

    def merge(self, action: MergeChange) -> None:
        """Merge; emit ``ItemMerged`` or ``MergeRefused`` later."""
