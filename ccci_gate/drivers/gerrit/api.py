"""The Gerrit REST API, as much of it as the driver uses (authenticated, under ``/a/``).

Every call uses HTTP basic auth with the account's HTTP password (Gerrit's Settings →
HTTP Credentials), a timeout, and retries with backoff on 5xx and connection errors.
Gerrit prefixes JSON answers with ``)]}'`` (an XSSI guard); :func:`decode` drops it.
Gerrit's error bodies are plain text (``change is new``, ``revision ... is not current``).

Vocabulary: a change is named ``<project>~<number>`` (the project URL-encoded), a
revision by its commit sha.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote

import requests

from .events import Vote

TIMEOUT = 10.0
XSSI = ")]}'"
CHANGE_OPTIONS = ("CURRENT_REVISION", "DETAILED_LABELS", "DETAILED_ACCOUNTS")


class GerritError(Exception):
    """Gerrit answered, and said no (4xx): ``status`` and its message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class GerritUnavailable(Exception):
    """Gerrit did not answer usefully (5xx, timeout, connection refused)."""


@dataclass(frozen=True)
class ChangeInfo:
    """What the REST API says about a change now."""

    project: str
    branch: str
    number: int
    status: str                  # NEW, MERGED, ABANDONED
    revision: str                # the current patchset's commit
    patchset: int | None
    ref: str
    approvals: tuple[Vote, ...]
    wip: bool = False
    private: bool = False
    subject: str = ""
    owner: str = ""


def change_id(project: str, number: int | str) -> str:
    return f"{quote(project, safe='')}~{number}"


def decode(text: str) -> Any:
    if text.startswith(XSSI):
        text = text[len(XSSI):]
    return json.loads(text)


def approvals_of(labels: Mapping[str, Any]) -> tuple[Vote, ...]:
    """DETAILED_LABELS ``labels`` → the votes that are not 0."""
    votes = []
    for label, info in (labels or {}).items():
        for vote in (info or {}).get("all") or ():
            if vote.get("value"):
                votes.append(Vote(label, int(vote["value"]), str(vote.get("username") or "")))
    return tuple(votes)


def change_info(data: Mapping[str, Any]) -> ChangeInfo:
    revision = str(data.get("current_revision") or "")
    current = (data.get("revisions") or {}).get(revision) or {}
    return ChangeInfo(
        str(data["project"]), str(data["branch"]), int(data["_number"]), str(data["status"]),
        revision, current.get("_number"), str(current.get("ref") or ""),
        approvals_of(data.get("labels") or {}), bool(data.get("work_in_progress")),
        bool(data.get("is_private")), str(data.get("subject") or ""),
        str((data.get("owner") or {}).get("username") or ""))


class GerritAPI:
    """A small client: ``call()`` plus the calls the driver makes."""

    def __init__(self, url: str, user: str, password: str, retries: int = 3,
                 backoff: float = 0.5, timeout: float = TIMEOUT, verify: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.base = url.rstrip("/") + "/a"
        self.retries, self.backoff, self.timeout, self.sleep = retries, backoff, timeout, sleep
        self.session = requests.Session()
        self.session.verify = verify
        self.session.auth = (user, password)
        self.session.headers.update({"Accept": "application/json", "User-Agent": "ccci-gate"})
        self.password = password

    def redact(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    def call(self, method: str, where: str, body: Any = None, params: Any = None,
             retries: int | None = None) -> Any:
        """One request → the decoded JSON (None when empty); 4xx raise ``GerritError``;
        5xx and connection errors are retried, then raise ``GerritUnavailable``."""
        problem = ""
        for attempt in range(1 + (self.retries if retries is None else retries)):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.request(method, self.base + where, json=body,
                                                params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = self.redact(f"{type(exc).__name__}: {exc}")
                continue
            if response.status_code >= 500 or response.status_code == 429:
                problem = f"{response.status_code} {response.reason}"
                continue
            if response.status_code >= 400:
                raise GerritError(response.status_code, self.redact(response.text.strip()[:300]))
            try:
                return decode(response.text) if response.text.strip() else None
            except ValueError:
                raise GerritUnavailable(f"{method} {where}: the answer is not JSON") from None
        raise GerritUnavailable(f"{method} {where}: {problem}")

    def change(self, project: str, number: int) -> ChangeInfo:
        data = self.call("GET", f"/changes/{change_id(project, number)}",
                         params=[("o", o) for o in CHANGE_OPTIONS])
        try:
            return change_info(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GerritUnavailable(f"change {project}~{number}: unexpected answer ({exc!r})") from None

    def revisions(self, project: str, number: int) -> dict[int, tuple[str, str]]:
        """Every patchset of a change: number → (commit, ``refs/changes/…`` ref)."""
        data = self.call("GET", f"/changes/{change_id(project, number)}",
                         params=[("o", "ALL_REVISIONS")])
        try:
            return {int(rev["_number"]): (sha, str(rev["ref"]))
                    for sha, rev in (data.get("revisions") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GerritUnavailable(f"change {project}~{number}: unexpected answer ({exc!r})") from None

    def query(self, query: str, options: tuple[str, ...] = CHANGE_OPTIONS + ("MESSAGES",),
              page: int = 100, most: int = 5000) -> list[dict[str, Any]]:
        """Every change ``query`` finds (up to ``most``), page by page: Gerrit marks the
        last change of a page that is not the last with ``_more_changes``."""
        found: list[dict[str, Any]] = []
        while len(found) < most:
            params = [("q", query), ("n", str(page)), ("S", str(len(found)))]
            batch = list(self.call("GET", "/changes/", params=params + [("o", o) for o in options]) or [])
            found += batch
            if not batch or not batch[-1].get("_more_changes"):
                break
        return found

    def review(self, project: str, number: int, revision: str, body: Mapping[str, Any]) -> None:
        self.call("POST", f"/changes/{change_id(project, number)}/revisions/{revision}/review",
                  body=dict(body), retries=0)

    def submit(self, project: str, number: int, revision: str) -> Any:
        """Submit ``revision``; Gerrit answers 409 if it is not current or not submittable."""
        return self.call("POST", f"/changes/{change_id(project, number)}/revisions/{revision}/submit",
                         body={}, retries=0)

    def branch_tip(self, project: str, branch: str) -> str:
        data = self.call("GET", f"/projects/{quote(project, safe='')}/branches/{quote(branch, safe='')}")
        return str((data or {}).get("revision") or "")
