"""The Gitea REST API, as much of it as the driver uses (``/api/v1``).

Every call carries ``Authorization: token …``, a timeout, and retries with backoff on
5xx answers and connection errors. Nothing here logs the token: requests' errors name
the URL only, and :func:`redact` scrubs any text that reaches a log or a comment.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote

import requests

from .payloads import COMMIT_ID

log = logging.getLogger("ccci_gate.drivers.gitea")

TIMEOUT = 10.0
WRITE_PERMISSIONS = ("write", "admin", "owner")


class GiteaError(Exception):
    """Gitea answered, and said no (4xx): ``status`` and its message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class GiteaUnavailable(Exception):
    """Gitea did not answer usefully (5xx, timeout, connection refused, 401).
    ``maybe_applied``: the request may have reached Gitea (a 5xx, a read timeout), so a
    write may have been carried out though its answer was lost."""

    def __init__(self, message: str, maybe_applied: bool = False):
        super().__init__(message)
        self.maybe_applied = maybe_applied


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_sha: str
    branch: str
    title: str = ""
    url: str = ""
    state: str = "open"


class BadPath(GiteaError):
    """A path part that would leave its place in the URL (empty, ``.``, ``..``); nothing
    is sent."""

    def __init__(self, part: str):
        super().__init__(400, f"refused to send a request with the path part {part[:100]!r}")


def path(template: str, *parts: str | int) -> str:
    """``path("/repos/{}/pulls/{}", "o/r", 2)``: every segment percent-escaped on its own
    (``o/r`` is two, a branch may have more) and none may be empty, ``.`` or ``..``, so no
    part can climb out of its place (``tests/test_gitea_edges.py``)."""
    return template.format(*(_escape(str(p)) for p in parts))


def _escape(part: str) -> str:
    segments = part.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise BadPath(part)
    return "/".join(quote(s, safe="") for s in segments)


class GiteaAPI:
    """A small client: ``call()`` plus the handful of calls the driver makes."""

    def __init__(self, url: str, token: str, retries: int = 3, backoff: float = 0.5,
                 timeout: float = TIMEOUT, verify: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.base = url.rstrip("/") + "/api/v1"
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.sleep = sleep
        self.session = requests.Session()
        self.session.verify = verify
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "ccci-gate"
        if token:
            self.session.headers["Authorization"] = f"token {token}"
        self._secrets = [token] if token else []

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def call(self, method: str, where: str, json: Any = None, params: Mapping | None = None,
             retries: int | None = None) -> requests.Response:
        """One request; 2xx returns the response, 4xx raises ``GiteaError``, 5xx and
        connection errors are retried, then raise ``GiteaUnavailable``."""
        attempts = 1 + (self.retries if retries is None else retries)
        problem = ""
        answered = False     # whether the last try may have reached Gitea
        for attempt in range(attempts):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.request(method, self.base + where, json=json,
                                                params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = self.redact(f"{type(exc).__name__}: {exc}")
                answered = isinstance(exc, requests.ReadTimeout) or \
                    not isinstance(exc, requests.ConnectionError)
                continue
            if response.status_code >= 500 or response.status_code == 429:
                problem = f"{response.status_code} {response.reason}"
                answered = True
                continue
            if response.status_code == 401:
                raise GiteaUnavailable(f"{method} {where}: 401 Unauthorized (is the token "
                                       f"wrong or expired?) {self.redact(_message(response))}")
            if response.status_code >= 400:
                raise GiteaError(response.status_code, self.redact(_message(response)))
            return response
        raise GiteaUnavailable(f"{method} {where}: {problem}", maybe_applied=answered)

    # --- reads -------------------------------------------------------------------------

    def pull(self, repo: str, number: int) -> PullRequest:
        data = self.call("GET", path("/repos/{}/pulls/{}", repo, number)).json()
        head = str(data["head"]["sha"])
        if not COMMIT_ID.fullmatch(head):
            raise GiteaError(502, f"{repo}#{number}: Gitea gave a head that is not a commit id: "
                                  f"{head[:80]!r}")
        return PullRequest(number, head, data["base"]["ref"],
                           data.get("title") or "", data.get("html_url") or "",
                           data.get("state") or "open")

    def changed_files(self, repo: str, number: int, limit: int = 50,
                      max_pages: int = 20) -> tuple[str, ...]:
        """The files a pull request changes (renamed ones under both names)."""
        files: list[str] = []
        for page in range(1, max_pages + 1):
            data = self.call("GET", path("/repos/{}/pulls/{}/files", repo, number),
                             params={"page": page, "limit": limit}).json()
            for entry in data:
                files += [name for name in (entry.get("filename"), entry.get("previous_filename"))
                          if name]
            if len(data) < limit:
                break
        return tuple(dict.fromkeys(files))

    def open_pulls(self, repo: str) -> list[int]:
        data = self.call("GET", path("/repos/{}/pulls", repo),
                         params={"state": "open", "limit": 50}).json()
        return [int(pr["number"]) for pr in data]

    def comments_since(self, repo: str, since: str, limit: int = 50,
                       max_pages: int = 10) -> list[dict]:
        """Comments on the repository's issues and pulls updated since ``since`` (RFC 3339),
        oldest first (Gitea's order), page after page while pages are full."""
        out: list[dict] = []
        for page in range(1, max_pages + 1):
            params: dict[str, Any] = {"limit": limit, "page": page}
            if since:
                params["since"] = since
            data = list(self.call("GET", path("/repos/{}/issues/comments", repo),
                                  params=params).json())
            out += data
            if len(data) < limit:
                break
        return out

    def can_write(self, repo: str, user: str) -> bool:
        """Whether ``user`` is a collaborator with write access to ``repo``."""
        try:
            data = self.call("GET", path("/repos/{}/collaborators/{}/permission", repo, user)).json()
        except GiteaError as exc:
            if exc.status in (403, 404):
                return False
            raise
        return str(data.get("permission", "")).lower() in WRITE_PERMISSIONS

    def is_member(self, org: str, user: str) -> bool:
        """Whether ``user`` is a member of organisation ``org`` (204 yes, 404 no)."""
        try:
            response = self.call("GET", path("/orgs/{}/members/{}", org, user))
        except GiteaError as exc:
            if exc.status in (403, 404):
                return False
            raise
        return response.status_code == 204

    def reachable(self) -> bool:
        """Whether Gitea answers at all (``GET /version``, no retry): tells an outage
        from a request Gitea keeps failing on its own."""
        try:
            self.call("GET", "/version", retries=0)
        except (GiteaError, GiteaUnavailable):
            return False
        return True

    def whoami(self) -> str:
        return str(self.call("GET", "/user").json().get("login", ""))

    # --- writes ------------------------------------------------------------------------

    def merge(self, repo: str, number: int, head_sha: str, style: str = "merge") -> None:
        """One merge request, not retried here: after a lost answer the pull request may
        be merged already, and a second request would be refused (405). The caller
        (``source``) looks before it tries again."""
        body: dict[str, Any] = {"Do": style}
        if head_sha:
            body["head_commit_id"] = head_sha
        self.call("POST", path("/repos/{}/pulls/{}/merge", repo, number), json=body, retries=0)

    def branch_tip(self, repo: str, branch: str) -> str:
        data = self.call("GET", path("/repos/{}/branches/{}", repo, branch)).json()
        return str((data.get("commit") or {}).get("id", ""))


def _message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or response.reason
    if isinstance(data, Mapping):
        return str(data.get("message") or data.get("error") or data)[:200]
    return str(data)[:200]
