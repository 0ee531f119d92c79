"""Gerrit's vocabulary → the core's: one table, read both ways, and the layout's filters.

:data:`KINDS` maps a stream event's ``type`` to the core event class; it serves both
the layout's filters (``trigger: {gerrit: [{event: comment-added, ...}]}``) and the
events the connection receives (:func:`event_class`). A ref-updated that creates a
branch is a ``BranchCreated``; change-abandoned closes a change, change-restored
reopens it.

Filter keys (Zuul's): ``event`` (one or more kinds), ``branch`` / ``ref`` (regexes
fully matching), ``comment`` (regex searched in what the user typed, without Gerrit's
``Patch Set N:`` line), ``approval`` (comment-added only: the event changed a vote to
this value), ``require-approval`` / ``reject-approval`` (the change's current votes;
see :mod:`.approvals`), ``wip`` / ``private`` (default false: such changes are
skipped), ``username`` (regexes fully matching the account that caused the event:
Zuul's allow list, e.g. ``'^(alice|bob)$'`` or ``'^(?!ci-bot$).*'``), ``require-authorized``
(default: on for comments; every account that may comment on a Gerrit change counts as
authorized, Gerrit's ACLs decide who may — narrow it with ``username``).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable

import voluptuous as v

from ...config.schema import listify, regex
from ...core import events as ev
from ...core.triggers import TriggerFilter
from .approvals import GerritChange, Requirement, meets, requirement, unmet
from .events import ZERO_SHA, GerritEvent, Vote

KINDS: dict[str, type[ev.TriggerEvent]] = {
    "patchset-created": ev.PatchsetCreated,
    "comment-added": ev.CommentAdded,
    "change-merged": ev.ChangeMerged,
    "change-abandoned": ev.ChangeClosed,
    "change-restored": ev.ChangeReopened,
    "ref-updated": ev.BranchMoved,
}

FILTER = v.Schema({
    v.Required("event"): listify(v.In(list(KINDS), msg=f"event must be one of {', '.join(KINDS)}")),
    v.Optional("branch"): listify(regex),
    v.Optional("ref"): listify(regex),
    v.Optional("comment"): listify(regex),
    v.Optional("approval"): listify(requirement),
    v.Optional("require-approval"): listify(requirement),
    v.Optional("reject-approval"): listify(requirement),
    v.Optional("username"): listify(regex),
    v.Optional("wip"): bool,
    v.Optional("private"): bool,
    v.Optional("require-authorized"): bool,
})


def event_class(event: GerritEvent) -> type[ev.TriggerEvent] | None:
    """The core event for a Gerrit event (None: nothing the core uses)."""
    if event.kind == "ref-updated" and event.old_rev == ZERO_SHA:
        return ev.BranchCreated
    return KINDS.get(event.kind)


@dataclasses.dataclass(frozen=True)
class GerritFilter(TriggerFilter):
    """A core filter plus what only Gerrit changes carry (:class:`GerritChange`)."""

    approval: tuple[Requirement, ...] = ()
    require: tuple[Requirement, ...] = ()
    reject: tuple[Requirement, ...] = ()
    wip: bool = False
    private: bool = False
    username: tuple[str, ...] = ()

    def matches(self, event: ev.TriggerEvent) -> bool:
        if not super().matches(event):
            return False
        if self.username and not any(re.fullmatch(u, event.user or "") for u in self.username):
            return False
        change = event.change
        if not isinstance(change, GerritChange):
            return not (self.approval or self.require or self.reject)
        if (change.wip and not self.wip) or (change.private and not self.private):
            return False
        if self.approval and not all(meets(change.changed, [r]) for r in self.approval):
            return False
        return meets(change.approvals, self.require, self.reject)


def still_unmet(pipeline_filters: Iterable[TriggerFilter], approvals: tuple[Vote, ...]) -> str:
    """Before a merge: why the change's current ``approvals`` no longer meet the
    requirements of any of the pipeline's Gerrit filters (empty: they do, or the
    pipeline has a filter without requirements)."""
    gerrit = [f for f in pipeline_filters if isinstance(f, GerritFilter)]
    reasons = [unmet(approvals, f.require, f.reject) for f in gerrit]
    if not reasons or not all(reasons):
        return ""
    return reasons[0]


def filters(value: list[dict[str, Any]]) -> tuple[TriggerFilter, ...]:
    """The layout's Gerrit filters as core filters."""
    out = []
    for flt in value:
        classes = [KINDS[kind] for kind in flt["event"]]
        if ev.BranchMoved in classes:
            classes.append(ev.BranchCreated)
        out.append(GerritFilter(
            events=tuple(classes), comment=tuple(flt.get("comment", ())),
            branch=tuple(flt.get("branch", ())), ref=tuple(flt.get("ref", ())),
            require_authorized=flt.get("require-authorized"),
            approval=tuple(flt.get("approval", ())), require=tuple(flt.get("require-approval", ())),
            reject=tuple(flt.get("reject-approval", ())), wip=flt.get("wip", False),
            private=flt.get("private", False), username=tuple(flt.get("username", ()))))
    return tuple(out)
