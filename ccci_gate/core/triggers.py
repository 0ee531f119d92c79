"""Trigger filters: does a trigger event enter a pipeline?

A pipeline's ``trigger`` maps a driver name to a list of filters; an event enters when
any filter of its driver matches. A filter matches when every key it sets matches:

- ``event``: the event's ``type`` is one of these (``comment``, ``pull_request``, ``push``...)
- ``action``: the event's ``action`` is one of these (``opened``, ``synchronized``...);
  comment events default to ``created`` (edits do not trigger unless asked for)
- ``comment``: regex searched in the comment text (anchor it: ``^!testme\\s*$``)
- ``branch`` / ``ref``: regex fully matching the change's branch / ref
- ``require-authorized``: the driver vouched for the user (``data["authorized"]``);
  on by default for comment events
- ``pipeline``: (timer) the pipeline the timer fired for
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from .events import TriggerEvent


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _get(flt: Mapping, key: str) -> object:
    return flt.get(key, flt.get(key.replace("-", "_")))


def filter_matches(flt: Mapping, event: TriggerEvent) -> bool:
    """Whether one filter of a pipeline's trigger matches ``event``."""
    events = _as_list(_get(flt, "event"))
    if events and event.type not in events:
        return False
    actions = _as_list(_get(flt, "action"))
    if not actions and event.type == "comment":
        actions = ["created", ""]  # an edited comment triggers only when asked for
    if actions and event.action not in actions:
        return False
    comment = _get(flt, "comment")
    if comment is not None:
        if not any(re.search(c, event.comment or "", re.MULTILINE) for c in _as_list(comment)):
            return False
    branch = _get(flt, "branch")
    if branch is not None and not any(re.fullmatch(b, event.change.branch) for b in _as_list(branch)):
        return False
    ref = _get(flt, "ref")
    if ref is not None and not any(re.fullmatch(r, event.change.ref) for r in _as_list(ref)):
        return False
    pipeline = _get(flt, "pipeline")
    if pipeline is not None and event.data.get("pipeline") != pipeline:
        return False
    require_auth = _get(flt, "require-authorized")
    if require_auth is None:
        require_auth = event.type == "comment"
    if require_auth and not event.data.get("authorized", False):
        return False
    return True


def pipeline_accepts(triggers: Mapping[str, Iterable[Mapping]], event: TriggerEvent) -> bool:
    """Whether any filter of the pipeline's trigger for ``event.driver`` matches."""
    filters = triggers.get(event.driver)
    if filters is None:
        return False
    filters = list(filters)
    if not filters:
        return True
    return any(filter_matches(f, event) for f in filters)
