"""Approvals: the votes a Gerrit change carries, and the requirements a layout puts on them.

- **GerritChange**: the core's :class:`~ccci_gate.core.model.Change` plus what only the
  Gerrit filters read: the change's current ``approvals`` (over REST when the driver
  could ask, else the event's own votes), the votes the event ``changed`` (a
  comment-added's ``oldValue`` semantics), and whether it is ``wip`` or ``private``.
  The core sees a plain ``Change``; records keep only the core's fields.
- **requirement**: one entry of ``approval`` / ``require-approval`` /
  ``reject-approval`` in a layout (Zuul's syntax): ``{Code-Review: 2}``,
  ``{Verified: [-1, -2], username: '^(?!ci-bot$)'}``. Values match exactly (a list:
  any of them); ``username`` is a regex the voter's account must fully match. Every
  label named must have a matching vote.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import voluptuous as v

from ...core.model import Change
from .events import Vote

Requirement = Mapping[str, Any]   # {"username": regex?, label: [values]}


@dataclass(frozen=True)
class GerritChange(Change):
    """A Gerrit change as the driver saw it when the event came."""

    approvals: tuple[Vote, ...] = ()
    changed: tuple[Vote, ...] = ()
    wip: bool = False
    private: bool = False


def _values(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise v.Invalid(f"vote values are numbers, not {item!r}")
        try:
            out.append(int(item))
        except ValueError:
            raise v.Invalid(f"vote values are numbers, not {item!r}") from None
    return out


def requirement(value: Any) -> dict[str, Any]:
    """Validate one requirement; labels map to lists of ints afterwards."""
    if not isinstance(value, Mapping) or not value:
        raise v.Invalid("an approval is a mapping like {Code-Review: 2}")
    out: dict[str, Any] = {}
    for key, val in value.items():
        if key == "username":
            if not isinstance(val, str):
                raise v.Invalid("username is a regular expression")
            try:
                re.compile(val)
            except re.error as exc:
                raise v.Invalid(f"bad username regex {val!r}: {exc}") from None
            out[key] = val
        else:
            out[str(key)] = _values(val)
    if set(out) == {"username"}:
        raise v.Invalid("an approval names at least one label")
    return out


def _satisfied(req: Requirement, votes: Iterable[Vote]) -> bool:
    user = req.get("username")
    for label, values in req.items():
        if label == "username":
            continue
        if not any(vote.label == label and vote.value in values
                   and (user is None or re.fullmatch(user, vote.by)) for vote in votes):
            return False
    return True


def meets(votes: Iterable[Vote], require: Iterable[Requirement] = (),
          reject: Iterable[Requirement] = ()) -> bool:
    """Every ``require`` entry is met by ``votes`` and no ``reject`` entry is."""
    votes = tuple(votes)
    return (all(_satisfied(r, votes) for r in require)
            and not any(_satisfied(r, votes) for r in reject))


def unmet(votes: Iterable[Vote], require: Iterable[Requirement] = (),
          reject: Iterable[Requirement] = ()) -> str:
    """Why ``votes`` do not meet the requirements, in words (empty: they do)."""
    votes = tuple(votes)
    missing = [_describe(r) for r in require if not _satisfied(r, votes)]
    vetoed = [_describe(r) for r in reject if _satisfied(r, votes)]
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
            ([f"rejected by {', '.join(vetoed)}"] if vetoed else [])
    return "; ".join(parts)


def _describe(req: Requirement) -> str:
    labels = [f"{k}{'/'.join(f'{x:+d}' for x in vals)}" for k, vals in req.items() if k != "username"]
    who = f" by {req['username']}" if "username" in req else ""
    return " ".join(labels) + who
