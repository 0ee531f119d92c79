"""Trigger filters: does a trigger event enter a pipeline?

A pipeline's ``triggers`` maps a source (a driver name as the layout's ``trigger:``
spells it) to a tuple of :class:`TriggerFilter`; an event from that source enters when
any of them matches (an empty tuple accepts every event of the source). Filters are
built by the driver that owns the YAML (``drivers/<name>``): it translates its forge's
words (Gitea's ``event: pull_request``, ``action: synchronized``) into the core's event
classes, so nothing here knows a forge.

A filter matches when every part it sets matches:

- ``events``: the event's class is one of these (exactly: an edited comment is not an
  added one); empty means any
- ``comment``: a regex searched in the comment text (anchor it: ``^!testme\\s*$``)
- ``branch`` / ``ref``: a regex fully matching the change's branch / ref
- ``require_authorized``: the driver vouched for the user; ``None`` means "only for
  comments"
- ``extra``: what the owning driver keeps for itself (the timer's cron); never read here
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .events import CommentAdded, TriggerEvent


@dataclass(frozen=True)
class TriggerFilter:
    """One filter of a pipeline's trigger, in the core's vocabulary."""

    events: tuple[type[TriggerEvent], ...] = ()
    comment: tuple[str, ...] = ()
    branch: tuple[str, ...] = ()
    ref: tuple[str, ...] = ()
    require_authorized: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, event: TriggerEvent) -> bool:
        if self.events and type(event) not in self.events:
            return False
        if self.comment:
            text = event.comment if isinstance(event, CommentAdded) else ""
            if not any(re.search(c, text or "", re.MULTILINE) for c in self.comment):
                return False
        if self.branch and not any(re.fullmatch(b, event.change.branch) for b in self.branch):
            return False
        if self.ref and not any(re.fullmatch(r, event.change.ref) for r in self.ref):
            return False
        require = self.require_authorized
        if require is None:
            require = isinstance(event, CommentAdded)
        return not (require and not event.authorized)


def pipeline_accepts(triggers: Mapping[str, Iterable[TriggerFilter]], event: TriggerEvent) -> bool:
    """Whether any filter of the pipeline's trigger for ``event.source`` matches."""
    filters = triggers.get(event.source)
    if filters is None:
        return False
    filters = tuple(filters)
    if not filters:
        return True
    return any(f.matches(event) for f in filters)
