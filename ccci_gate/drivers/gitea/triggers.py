"""Gitea's vocabulary → the core's: one table, read both ways.

Gitea names what happened with an event and an action (``pull_request`` /
``synchronized``, ``issue_comment`` / ``created``, ``push``); the core has typed events
(:mod:`ccci_gate.core.events`). :data:`KINDS` maps one to the other; it serves both the
layout's filters (``trigger: {gitea: [{event: comment, comment: ...}]}`` becomes a
:class:`~ccci_gate.core.triggers.TriggerFilter` on ``CommentAdded``) and the hooks the
connection receives (:func:`event_class`).

Filter keys: ``event`` (comment, pull_request, push), ``action`` (created, opened,
synchronized, reopened, closed, merged, edited, updated), ``comment`` (regex searched in
the comment), ``branch`` / ``ref`` (regex fully matching), ``require-authorized``
(default: on for comments). A comment filter without ``action`` matches new comments
only. Gitea has no approvals: an ``approval:`` key is refused at load time.
"""
from __future__ import annotations

import voluptuous as v

from ...config.schema import listify, regex
from ...core import events as ev
from ...core.triggers import TriggerFilter

KINDS: dict[tuple[str, str], type[ev.TriggerEvent]] = {
    ("comment", "created"): ev.CommentAdded,
    ("comment", "edited"): ev.CommentEdited,
    ("pull_request", "opened"): ev.ChangeOpened,
    ("pull_request", "reopened"): ev.ChangeReopened,
    ("pull_request", "synchronized"): ev.PatchsetCreated,
    ("pull_request", "edited"): ev.ChangeEdited,
    ("pull_request", "closed"): ev.ChangeClosed,
    ("pull_request", "merged"): ev.ChangeMerged,
    ("push", "created"): ev.BranchCreated,
    ("push", "updated"): ev.BranchMoved,
}
EVENTS = tuple(dict.fromkeys(e for e, _ in KINDS))
ACTIONS = tuple(dict.fromkeys(a for _, a in KINDS))
DEFAULT_ACTIONS = {"comment": ("created",)}   # an edited comment triggers only when asked

_KEYS = v.Schema({
    v.Optional("event"): listify(v.In(EVENTS, msg=f"event must be one of {', '.join(EVENTS)}")),
    v.Optional("action"): listify(v.In(ACTIONS, msg=f"action must be one of {', '.join(ACTIONS)}")),
    v.Optional("comment"): listify(regex),
    v.Optional("branch"): listify(regex),
    v.Optional("ref"): listify(regex),
    v.Optional("require-authorized"): bool,
})


def _possible(flt: dict) -> dict:
    if not _classes(flt.get("event", []), flt.get("action", [])):
        raise v.Invalid(f"no Gitea event is {'/'.join(flt.get('event', []))} "
                        f"{'/'.join(flt.get('action', []))}: this filter could never match")
    return flt


FILTER = v.All(_KEYS, _possible)


def event_class(event: str, action: str) -> type[ev.TriggerEvent] | None:
    """The core event for a Gitea event and action (None: nothing the core uses)."""
    return KINDS.get((event, action))


def _classes(events: list[str], actions: list[str]) -> tuple[type[ev.TriggerEvent], ...]:
    out = []
    for (event, action), cls in KINDS.items():
        if events and event not in events:
            continue
        wanted = actions or DEFAULT_ACTIONS.get(event, ())
        if wanted and action not in wanted:
            continue
        out.append(cls)
    return tuple(out)


def filters(value: list[dict]) -> tuple[TriggerFilter, ...]:
    """The layout's Gitea filters as core filters."""
    out = []
    for flt in value:
        out.append(TriggerFilter(
            events=_classes(flt.get("event", []), flt.get("action", [])), comment=tuple(flt.get("comment", ())),
            branch=tuple(flt.get("branch", ())), ref=tuple(flt.get("ref", ())),
            require_authorized=flt.get("require-authorized")))
    return tuple(out)
