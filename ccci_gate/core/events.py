"""Frozen events: the only thing other threads hand to the scheduler.

Drivers (Gitea, timer) produce **trigger events** with a meaning of their own
(:class:`PatchsetCreated`, :class:`CommentAdded`, :class:`BranchMoved`...); the CLI and
admin API produce **operator requests**; the ports (merger, Gearman dispatch, sources)
produce **result events** about work the scheduler asked for. Every event is an
immutable value, safe to pass between threads. The engine handles each class through
an explicit table (``core.engine.Engine.HANDLERS``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .model import Change


@dataclass(frozen=True)
class Event:
    """Base of all events."""


# --- trigger events (drivers → scheduler) -------------------------------------------
#
# Each driver translates its forge's vocabulary (Gitea's ``pull_request``/``synchronized``,
# Gerrit's ``patchset-created``...) into these; the core never sees a forge's words.
# ``source`` is the name of the driver as the layout's ``trigger:`` spells it
# (``gitea``, ``timer``...): it picks the filters that apply, nothing more.

@dataclass(frozen=True)
class TriggerEvent(Event):
    """Something happened to ``change`` at a source; pipelines' filters decide what it
    means. ``user`` did it; ``authorized`` is the driver's word that the user may trigger
    (comments need it unless a filter says otherwise)."""

    source: str
    change: Change
    user: str = ""
    authorized: bool = False
    connection: str = ""


@dataclass(frozen=True)
class ChangeOpened(TriggerEvent):
    """A change (pull request) was opened."""


@dataclass(frozen=True)
class ChangeReopened(TriggerEvent):
    """A closed change was opened again."""


@dataclass(frozen=True)
class PatchsetCreated(TriggerEvent):
    """A change got a new head (a new patchset): items of older ones are superseded."""


@dataclass(frozen=True)
class ChangeEdited(TriggerEvent):
    """A change's title or description was edited (its code did not change)."""


@dataclass(frozen=True)
class ChangeClosed(TriggerEvent):
    """A change was closed without merging: it leaves every pipeline, unreported."""


@dataclass(frozen=True)
class ChangeMerged(TriggerEvent):
    """A change was merged at its source (by the gate or by hand): it leaves every
    pipeline, and its branch moved."""


@dataclass(frozen=True)
class CommentAdded(TriggerEvent):
    """Someone commented on a change; ``comment`` is the text."""

    comment: str = ""


@dataclass(frozen=True)
class CommentEdited(CommentAdded):
    """A comment was edited (triggers only filters that ask for edits)."""


@dataclass(frozen=True)
class BranchMoved(TriggerEvent):
    """A branch got a new tip (a push); ``change`` is the ref item of the new tip
    (``change.sha``; ``change.oldrev`` the old one)."""


@dataclass(frozen=True)
class BranchCreated(BranchMoved):
    """A branch was created by a push."""


@dataclass(frozen=True)
class TimerFired(TriggerEvent):
    """A timer schedule of ``pipeline`` came due; ``change`` is the ref item to run."""

    pipeline: str = ""
    time: float = 0.0


TRIGGER_EVENTS: tuple[type[TriggerEvent], ...] = (
    ChangeOpened, ChangeReopened, PatchsetCreated, ChangeEdited, ChangeClosed, ChangeMerged,
    CommentAdded, CommentEdited, BranchMoved, BranchCreated, TimerFired)


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
    reason: str = "dequeued by an operator"
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


# --- merging at the source (source → scheduler) ------------------------------------

@dataclass(frozen=True)
class ItemMerged(Event):
    """The source merged an item's change as the gate asked; ``tip`` is the branch's
    new tip if known."""

    item_id: str
    tip: str = ""


@dataclass(frozen=True)
class MergeRefused(Event):
    """The source refused to merge (``status`` 405/409: not mergeable, head moved)."""

    item_id: str
    status: int
    message: str


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
