"""Gerrit stream-events lines → :class:`GerritEvent`, the facts the driver acts on.

Pure: no I/O. ``parse(line)`` reads one line of ``gerrit stream-events`` (one JSON
object; see ``tests/fixtures/conformance/gerrit``) and returns a :class:`GerritEvent`, or raises
:class:`EventError` saying why the line cannot be used. It absorbs the drift between
Gerrit versions (Gerrit's ``json.txt``: "any field may be missing"):

- ``change.number`` and ``patchSet.number`` are strings on old servers, integers on new;
- top-level ``project`` is a string (stream-events) or ``{"name": ...}`` (the webhooks
  plugin); ``change.project`` is preferred;
- ``changeKey`` is ``{"id": ...}`` or ``{"key": ...}``; approval values are strings.

Vocabulary:

- **vote**: one label's value by one account (``Code-Review+2``): :class:`Vote`.
- **changed vote**: a vote a comment-added event *changed to* its value: Gerrit sends
  the commenter's current votes, and ``oldValue`` only on those that changed.
- **noise**: events nothing should react to (:func:`noise`): ref-updated of
  ``refs/changes/*``, ``refs/meta/*``, ``refs/users/*``, a deleted branch, kinds the
  driver does not use.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

ZERO_SHA = "0" * 40
KINDS = ("patchset-created", "comment-added", "change-merged", "change-abandoned",
         "change-restored", "ref-updated")
ACTORS = {"patchset-created": "uploader", "comment-added": "author", "change-merged": "submitter",
          "change-abandoned": "abandoner", "change-restored": "restorer",
          "ref-updated": "submitter"}
NOISE_REFS = ("refs/changes/", "refs/meta/", "refs/users/")


class EventError(ValueError):
    """A line the driver cannot use; the message says why."""


@dataclass(frozen=True)
class Vote:
    """``label`` at ``value`` by ``by``; ``old`` is the value before, when it changed."""

    label: str
    value: int
    by: str = ""
    old: int | None = None

    @property
    def changed(self) -> bool:
        return self.old is not None and self.old != self.value

    def __str__(self) -> str:
        return f"{self.label}{self.value:+d}"


@dataclass(frozen=True)
class GerritEvent:
    """What one stream event (or one catch-up finding) says happened."""

    kind: str                    # patchset-created, comment-added, ... (Gerrit's ``type``)
    project: str
    branch: str = ""
    number: int | None = None    # the change
    patchset: int | None = None
    revision: str = ""           # the patchset's commit
    ref: str = ""                # refs/changes/NN/N/P, or ref-updated's full ref
    old_rev: str = ""            # ref-updated
    new_rev: str = ""            # ref-updated, change-merged: the branch's new tip
    change_id: str = ""          # the Change-Id (I...)
    url: str = ""
    subject: str = ""
    owner: str = ""
    user: str = ""               # who did it (uploader, commenter...): the username, or ""
    comment: str = ""
    votes: tuple[Vote, ...] = ()
    wip: bool = False
    private: bool = False
    created_on: int = 0          # eventCreatedOn (seconds)

    @property
    def changed_votes(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.changed)

    @property
    def key(self) -> str:
        """Identity for deduplication: the same happening seen twice (the stream and a
        catch-up query, two connections) has the same key."""
        if self.kind == "ref-updated":
            return f"ref:{self.project}:{self.ref}:{self.new_rev}"
        base = f"{self.kind}:{self.project}:{self.number}"
        if self.kind == "patchset-created":
            return f"{base}:{self.patchset}"
        if self.kind == "change-merged":
            return f"{base}:merged"
        text = hashlib.sha1(self.comment.encode()).hexdigest()[:12]
        return f"{base}:{self.patchset}:{self.user}:{self.created_on}:{text}"


def _int(value: Any) -> int | None:
    """A number Gerrit sent as an int or a string; None when absent or not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _obj(data: Mapping, key: str) -> Mapping:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _name(value: Any) -> str:
    """A project given as a string or as ``{"name": ...}``."""
    if isinstance(value, Mapping):
        value = value.get("name")
    return value if isinstance(value, str) else ""


def _who(account: Any) -> str:
    account = account if isinstance(account, Mapping) else {}
    return str(account.get("username") or account.get("email") or account.get("name") or "")


def _username(account: Any) -> str:
    return str(account.get("username") or "") if isinstance(account, Mapping) else ""


def _votes(data: Any, by: str) -> tuple[Vote, ...]:
    out = []
    for approval in data if isinstance(data, list) else ():
        if not isinstance(approval, Mapping):
            continue
        label, value = approval.get("type") or approval.get("description"), _int(approval.get("value"))
        if isinstance(label, str) and value is not None:
            out.append(Vote(label, value, _username(approval.get("by")) or by,
                            _int(approval.get("oldValue"))))
    return tuple(out)


def parse(line: str | bytes) -> GerritEvent:
    """One line of ``gerrit stream-events`` → :class:`GerritEvent`."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
        raise EventError("not an event (no type)")
    return from_json(data)


def from_json(data: Mapping) -> GerritEvent:
    kind = data["type"]
    change, patchset, ref_update = _obj(data, "change"), _obj(data, "patchSet"), _obj(data, "refUpdate")
    # the actor's username only, as the catch-up reads it: a display name (or an email)
    # is no identity, and the ``username`` filter and the own-comment check trust it
    user = _username(data.get(ACTORS.get(kind, ""))) or _username(data.get("changer"))
    project = (_name(change.get("project")) or _name(ref_update.get("project"))
               or _name(data.get("project")))
    if not project and kind in KINDS:
        raise EventError(f"{kind} event names no project")
    number = _int(change.get("number"))
    if change and number is None:
        raise EventError(f"{kind} event has a change without a number")
    key = _obj(data, "changeKey")
    return GerritEvent(
        kind=kind, project=project,
        branch=str(change.get("branch") or _branch(ref_update.get("refName")) or ""),
        number=number, patchset=_int(patchset.get("number")),
        revision=str(patchset.get("revision") or ""),
        ref=str(ref_update.get("refName") or patchset.get("ref") or ""),
        old_rev=str(ref_update.get("oldRev") or ""),
        new_rev=str(ref_update.get("newRev") or data.get("newRev") or ""),
        change_id=str(change.get("id") or key.get("id") or key.get("key") or ""),
        url=str(change.get("url") or ""), subject=str(change.get("subject") or ""),
        owner=_who(change.get("owner")), user=user,
        comment=str(data.get("comment") or data.get("reason") or ""),
        votes=_votes(data.get("approvals"), user),
        wip=change.get("wip") is True, private=change.get("private") is True,
        created_on=_int(data.get("eventCreatedOn")) or 0)


def _branch(ref: Any) -> str:
    return ref[len("refs/heads/"):] if isinstance(ref, str) and ref.startswith("refs/heads/") else ""


def noise(event: GerritEvent) -> str:
    """Why nothing should react to ``event`` (empty: it is not noise)."""
    if event.kind not in KINDS:
        return f"{event.kind} events are not used"
    if event.kind == "ref-updated":
        if event.ref.startswith(NOISE_REFS):
            return f"{event.ref} is Gerrit's bookkeeping"
        if event.new_rev == ZERO_SHA:
            return f"{event.ref} was deleted"
    return ""


def comment_text(comment: str) -> str:
    """The comment without Gerrit's ``Patch Set N: <votes>`` first line, which the stream
    puts before what the user typed (``recheck`` is matched on what remains)."""
    first, _, rest = comment.partition("\n")
    if first.startswith("Patch Set ") and ":" in first:
        return rest.strip("\n")
    return comment
