"""Gitea webhook payloads → :class:`Hook`, the facts the driver acts on.

Pure: no I/O. ``parse(event, payload)`` reads what a real Gitea sends (the
``X-Gitea-Event`` header and the JSON body; see ``tests/fixtures/conformance/gitea``) and
returns a :class:`Hook`, or raises :class:`PayloadError` with the reason a payload
cannot be used. Unknown keys are ignored (Gitea adds fields over time); missing ones
the driver needs are errors.

Vocabulary:

- **comment hook**: ``issue_comment`` on a pull request (``is_pull`` or
  ``issue.pull_request`` set). Before Gitea 1.23 it carries no head sha: ``head_sha``
  is then empty and the driver asks the API.
- **pull request hook**: ``pull_request`` with ``action`` opened, reopened,
  synchronized, closed, edited...; a merge is ``closed`` with ``pull_request.merged``
  and is reported here as action ``merged``.
- **push hook**: ``push`` to ``ref``; ``after`` is the new tip (all zeros: deleted).

A comment's ``comment`` is what its author says in their own words: the body without
fenced code blocks, quoted lines (with their lazy continuation) or inline code, so a
command shown as code or quoted from someone else does not trigger
(:func:`own_words`; ``tests/test_gitea_edges.py``).

A signed payload is trusted only as far as it deserves: ``repository.full_name`` must be a
well-formed ``owner/name`` (Gitea's name characters, no ``.``/``..`` segment) and every
commit id — a PR head, a merge commit, a push's ``before``/``after`` — lowercase hex of a SHA-1 (40
digits; 64 for a SHA-256 repository), or the payload is refused before any API call
(``tests/test_gitea_edges.py``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

ZERO_SHA = "0" * 40
COMMIT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
REPO_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
EVENTS = ("issue_comment", "pull_request", "push")


class PayloadError(ValueError):
    """A payload the driver cannot use; the message says why."""


@dataclass(frozen=True)
class Hook:
    """What one webhook (or one polled comment) says happened."""

    event: str                 # comment | pull_request | push | ignored
    action: str = ""           # created, edited, opened, synchronized, closed, merged...
    repo: str = ""             # owner/name
    number: int | None = None  # the pull request
    head_sha: str = ""         # the PR head (may be empty for an old comment payload)
    branch: str = ""           # the PR's target branch, or the pushed branch
    ref: str = ""              # push: the full ref
    before: str = ""           # push: the old tip
    after: str = ""            # push: the new tip
    merge_commit: str = ""     # merged PR: the merge commit
    comment: str = ""
    comment_id: int | None = None
    user: str = ""             # who commented, pushed, or acted
    title: str = ""
    url: str = ""              # the PR's web page
    why_ignored: str = ""      # event == "ignored": the reason

    @property
    def pr_ref(self) -> str:
        return f"refs/pull/{self.number}/head"


def _get(data: Any, *path: str, required: bool = True, kind: type | tuple = str) -> Any:
    node = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node or node[key] is None:
            if required:
                raise PayloadError(f"payload lacks {'.'.join(path)}")
            return None
        node = node[key]
    if not isinstance(node, kind) or isinstance(node, bool) and kind is not bool:
        if required:
            raise PayloadError(f"payload field {'.'.join(path)} has the wrong type")
        return None
    return node


def is_commit_id(value: str) -> bool:
    return bool(COMMIT_ID.fullmatch(value))


def is_repo_name(value: str) -> bool:
    return bool(REPO_NAME.fullmatch(value)) and not any(
        part in (".", "..") for part in value.split("/"))


def _repo(payload: Mapping) -> str:
    repo = _get(payload, "repository", "full_name")
    if not is_repo_name(repo):
        raise PayloadError(f"repository.full_name {repo[:100]!r} is not an owner/name")
    return repo


def _commit(value: str | None, field: str, required: bool = True) -> str:
    if not value and not required:
        return ""
    if not isinstance(value, str) or not is_commit_id(value):
        raise PayloadError(f"{field} {str(value)[:80]!r} is not a commit id (40 hex digits)")
    return value


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_QUOTE = re.compile(r" {0,3}>")
_INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")


def own_words(body: str) -> str:
    """A Markdown comment without its fenced code blocks and block quotes, inline code
    replaced by ``(code)``: the text a command may be written in. Line breaks are kept (commands are matched a
    line at a time); an unclosed fence runs to the end, as Gitea renders it."""
    kept: list[str] = []
    fence = ""
    quoting = False
    for line in body.splitlines():
        if fence:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = ""
            kept.append("")
            continue
        opening = _FENCE.match(line)
        if opening:
            fence, quoting = opening.group(1), False
            kept.append("")
            continue
        if _QUOTE.match(line) or (quoting and line.strip()):
            quoting = True                     # a quote, or its lazy continuation line
            kept.append("")
            continue
        quoting = False
        # "(code)", not a space: "!testme `x`" stays what it was, not a command
        kept.append(_INLINE_CODE.sub("(code)", line))
    return "\n".join(kept)


def _ignored(why: str, **kw: Any) -> Hook:
    return Hook("ignored", why_ignored=why, **kw)


def parse(event: str, payload: Any) -> Hook:
    """Read one webhook; ``event`` is the ``X-Gitea-Event`` header."""
    if not isinstance(payload, Mapping):
        raise PayloadError("payload is not a JSON object")
    if event == "issue_comment":
        return parse_comment(payload)
    if event == "pull_request":
        return parse_pull_request(payload)
    if event == "push":
        return parse_push(payload)
    if event in ("", None):
        raise PayloadError("no X-Gitea-Event header")
    return _ignored(f"event {event!r} is not used")


def parse_comment(payload: Mapping) -> Hook:
    repo = _repo(payload)
    action = _get(payload, "action")
    number = _get(payload, "issue", "number", kind=int)
    is_pull = payload.get("is_pull") is True or isinstance(
        (payload.get("issue") or {}).get("pull_request"), Mapping)
    if not is_pull:
        return _ignored("a comment on an issue, not a pull request", repo=repo, number=number)
    body = own_words(_get(payload, "comment", "body")) if action != "deleted" else ""
    pr = payload.get("pull_request") if isinstance(payload.get("pull_request"), Mapping) else {}
    return Hook(
        "comment", action=action, repo=repo, number=number, comment=body,
        comment_id=_get(payload, "comment", "id", kind=int),
        user=_get(payload, "comment", "user", "login", required=False) or _get(payload, "sender", "login"),
        head_sha=_commit(_get(pr, "head", "sha", required=False), "pull_request.head.sha",
                         required=False),
        branch=_get(pr, "base", "ref", required=False) or "",
        title=_get(payload, "issue", "title", required=False) or "",
        url=_get(payload, "issue", "html_url", required=False) or "")


def parse_pull_request(payload: Mapping) -> Hook:
    repo = _repo(payload)
    action = _get(payload, "action")
    number = _get(payload, "pull_request", "number", kind=int)
    merged = _get(payload, "pull_request", "merged", required=False, kind=bool) is True
    if action == "closed" and merged:
        action = "merged"
    return Hook(
        "pull_request", action=action, repo=repo, number=number,
        head_sha=_commit(_get(payload, "pull_request", "head", "sha"), "pull_request.head.sha"),
        branch=_get(payload, "pull_request", "base", "ref"),
        merge_commit=_commit(_get(payload, "pull_request", "merge_commit_sha", required=False),
                             "pull_request.merge_commit_sha", required=False),
        user=_get(payload, "sender", "login", required=False) or "",
        title=_get(payload, "pull_request", "title", required=False) or "",
        url=_get(payload, "pull_request", "html_url", required=False) or "")


def parse_push(payload: Mapping) -> Hook:
    repo = _repo(payload)
    ref = _get(payload, "ref")
    after = _commit(_get(payload, "after"), "after")
    before = _commit(_get(payload, "before", required=False), "before", required=False)
    user = (_get(payload, "pusher", "login", required=False)
            or _get(payload, "sender", "login", required=False) or "")
    if after == ZERO_SHA:
        return _ignored(f"{ref} was deleted", repo=repo, ref=ref)
    branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ""
    action = "created" if before == ZERO_SHA else "updated"
    return Hook("push", action=action, repo=repo, ref=ref, branch=branch, before=before,
                after=after, user=user)


def parse_api_comment(repo: str, number: int, comment: Mapping) -> Hook:
    """A comment as the API lists it (polling): the same facts as a comment hook."""
    return Hook("comment", action="created", repo=repo, number=number,
                comment=own_words(_get(comment, "body")), comment_id=_get(comment, "id", kind=int),
                user=_get(comment, "user", "login"))


def pr_number_of(comment: Mapping) -> int | None:
    """The pull request an API comment belongs to (from its ``pull_request_url``), or
    None for a comment on a plain issue."""
    tail = str(comment.get("pull_request_url") or "").rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None
