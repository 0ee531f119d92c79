"""A :class:`~.events.GerritEvent` → the core event it means (pure).

Change events carry a :class:`~.approvals.GerritChange` whose ``ref`` is the patchset's
``refs/changes/NN/N/P`` (the merger fetches it from the Gerrit git URL, as it fetches
``refs/pull/N/head`` from Gitea) and whose ``patchset`` is the patchset number. A
change-merged also moves its branch: :func:`branch_moved` is that move, with the same
deduplication key as the ref-updated Gerrit sends for it, so it is acted on once.
"""
from __future__ import annotations

from ...core import events as ev
from ...core.model import Change
from .approvals import GerritChange
from .events import ZERO_SHA, GerritEvent, Vote, comment_text
from .triggers import event_class

DRIVER = "gerrit"   # the driver's name: trigger and reporter key, ``event.source``


def change_of(event: GerritEvent, approvals: tuple[Vote, ...] | None = None) -> GerritChange:
    """The event's change; ``approvals`` are its current votes if the driver asked."""
    return GerritChange(
        event.project, event.branch, event.ref, number=event.number,
        patchset=str(event.patchset) if event.patchset is not None else None,
        sha=event.revision or None, url=event.url, title=event.subject, author=event.owner,
        approvals=event.votes if approvals is None else approvals,
        changed=event.changed_votes, wip=event.wip, private=event.private)


def core_event(event: GerritEvent, connection: str,
               approvals: tuple[Vote, ...] | None = None) -> ev.TriggerEvent | None:
    """The core event for ``event`` (None: nothing the core uses)."""
    cls = event_class(event)
    if cls is None:
        return None
    if issubclass(cls, ev.BranchMoved):
        change = Change(event.project, event.branch, event.ref, sha=event.new_rev,
                        oldrev=None if event.old_rev in ("", ZERO_SHA) else event.old_rev)
        return cls(DRIVER, change, user=event.user, authorized=True, connection=connection)
    extra = {"comment": comment_text(event.comment)} if issubclass(cls, ev.CommentAdded) else {}
    return cls(DRIVER, change_of(event, approvals), user=event.user, authorized=True,
               connection=connection, **extra)


def branch_moved(event: GerritEvent) -> GerritEvent | None:
    """The ref-updated a change-merged implies (None when its new tip is unknown)."""
    if event.kind != "change-merged" or event.new_rev in ("", ZERO_SHA) or not event.branch:
        return None
    return GerritEvent("ref-updated", event.project, event.branch,
                       ref=f"refs/heads/{event.branch}", new_rev=event.new_rev,
                       user=event.user, created_on=event.created_on)
