"""Frozen events: the only thing other threads hand to the scheduler.

Drivers (Gitea, timer, CLI/admin API) produce **trigger events**; the ports
(merger, Gearman dispatch) produce **result events** about work the scheduler asked
for. Every event is an immutable value, safe to pass between threads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .model import Change


@dataclass(frozen=True)
class Event:
    """Base of all events."""


# --- trigger events (drivers → scheduler) -------------------------------------------

@dataclass(frozen=True)
class TriggerEvent(Event):
    """Something happened at a source; pipelines' trigger filters decide what it means.

    ``type`` is the driver's event name (``comment``, ``pull_request``, ``push``,
    ``timer``...), ``action`` its sub-kind (``opened``, ``synchronized``, ``closed``,
    ``merged``...), ``comment`` the comment text if any, ``user`` who did it.
    ``change`` is what would be enqueued.
    """

    driver: str
    type: str
    change: Change
    action: str = ""
    comment: str = ""
    user: str = ""
    connection: str = ""
    delivery: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnqueueRequest(Event):
    """An operator's ``enqueue``: put ``change`` into ``pipeline`` without filters."""

    pipeline: str
    change: Change
    quick: bool = False


@dataclass(frozen=True)
class DequeueRequest(Event):
    """Remove the item of ``change_key`` from ``pipeline`` (or every pipeline if empty)."""

    change_key: tuple
    pipeline: str = ""
    reason: str = "dequeued by operator"
    report: bool = False


@dataclass(frozen=True)
class ReconfigureRequest(Event):
    """Swap in a new, already validated layout (a ``core.layout.Layout``)."""

    layout: Any


# --- result events (ports → scheduler) ----------------------------------------------

@dataclass(frozen=True)
class RefPrepared(Event):
    """The merger built the speculative ref of a buildset."""

    buildset_id: str
    ref: str
    commit: str
    tip: str = ""   # the target branch tip the ref was built on
    steps: tuple[str, ...] = ()  # the commit after each change was merged, in order


@dataclass(frozen=True)
class MergeFailed(Event):
    """The merger could not build the ref: ``conflict`` (needs a rebase) or an error."""

    buildset_id: str
    conflict: bool
    message: str


@dataclass(frozen=True)
class BuildStarted(Event):
    build_id: str
    worker: str = ""
    url: str = ""


@dataclass(frozen=True)
class BuildProgress(Event):
    build_id: str
    numerator: int
    denominator: int


@dataclass(frozen=True)
class BuildCompleted(Event):
    """A build ended. ``result`` is ``None`` when the attempt was lost (WORK_FAIL, no
    result, worker or server gone): the scheduler retries up to the job's attempts.
    ``not_registered`` is set when no worker can run the function at all."""

    build_id: str
    result: str | None
    not_registered: bool = False
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportDone(Event):
    """A reporter finished (or gave up on) a report; informational."""

    item_id: str
    phase: str
    ok: bool
    message: str = ""


# --- merging at the source (source → scheduler) ------------------------------------

@dataclass(frozen=True)
class ChangeMerged(Event):
    """The source merged an item's change; ``tip`` is the branch's new tip if known."""

    item_id: str
    tip: str = ""


@dataclass(frozen=True)
class MergeRefused(Event):
    """The source refused to merge (``status`` 405/409: not mergeable, head moved)."""

    item_id: str
    status: int
    message: str


@dataclass(frozen=True)
class BranchMoved(Event):
    """A target branch got a new tip outside the gate (a push)."""

    project: str
    branch: str
    tip: str = ""


# --- operator commands ----------------------------------------------------------------

@dataclass(frozen=True)
class PromoteRequest(Event):
    """Move the item of ``change_key`` to the head of its queue in ``pipeline``."""

    pipeline: str
    change_key: tuple


@dataclass(frozen=True)
class RetriggerRequest(Event):
    """Run ``job`` of the item of ``change_key`` in ``pipeline`` again (and what
    requires it), keeping the other jobs' results."""

    pipeline: str
    change_key: tuple
    job: str


@dataclass(frozen=True)
class PauseRequest(Event):
    """Pause (no new builds) or resume a pipeline."""

    pipeline: str
    paused: bool = True
