"""A fake Gitea for tests: an HTTP server that checks every request against Gitea's own
API description (``tests/fixtures/conformance/gitea-api/swagger.v1.json``) and records it.

Checked for each request: the path and method exist in the API, the token is sent,
query parameters are ones the operation declares, a JSON body has every required field,
no unknown field, the right types and enum values (commit status states included).
Violations are collected in ``violations``; tests assert there are none.

State is plain dicts a test sets up (pull requests, org members, collaborators) and
reads back (``statuses``, ``comments``, ``merges``).

Outages: ``fail_next(n)`` answers the next ``n`` requests with 500; ``down = True``
answers everything with ``down_status`` (500; 503 like a proxy whose Gitea is away)
until cleared; ``go_offline()`` closes the port (connections refused) until
``come_back()`` listens on the same port again; ``lose_answers(n)`` carries out the
next ``n`` requests and answers 502, as a proxy that lost Gitea's answer would.
``broken`` holds path fragments Gitea keeps answering 500 while all else works;
``lose_answer_to`` path fragments whose next request is carried out, then answered 502. A
request with a wrong token is a violation, unless a test rotates the token on purpose
(``accept_bad_tokens_as_401``): then it gets Gitea's 401.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests

# copies of the shared conformance fixtures, kept in the repository (provenance: tests/fixtures/README.md)
CONFORMANCE = Path(__file__).resolve().parent / "fixtures" / "conformance"
SWAGGER = CONFORMANCE / "gitea-api" / "swagger.v1.json"
STATUS_STATES = ("pending", "success", "error", "failure", "warning")
TYPES = {"string": str, "boolean": bool, "integer": int, "object": dict, "array": list}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int


class ApiSpec:
    """Operations of the swagger file, matched by method and concrete path."""

    def __init__(self, swagger: Path = SWAGGER):
        spec = json.loads(swagger.read_text())
        self.base = spec.get("basePath", "/api/v1")
        self.definitions = spec["definitions"]
        self.routes: list[tuple[re.Pattern, str, dict]] = []
        for template, ops in spec["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
            self.routes.append((pattern, template, ops))
        # literal segments beat parameters (``/repos/{o}/{r}/issues/comments`` vs ``{index}``)
        self.routes.sort(key=lambda r: r[1].count("{"))

    def operation(self, method: str, path: str) -> tuple[str, dict] | None:
        for pattern, template, ops in self.routes:
            if pattern.match(path) and method.lower() in ops:
                return template, ops[method.lower()]
        return None

    def check(self, method: str, path: str, query: dict, body: Any) -> list[str]:
        """Every way this request differs from the API description."""
        if not path.startswith(self.base):
            return [f"{method} {path}: not under {self.base}"]
        found = self.operation(method, path[len(self.base):])
        if found is None:
            return [f"{method} {path}: no such operation in Gitea's API"]
        template, op = found
        problems: list[str] = []
        params = op.get("parameters", [])
        known_query = {p["name"] for p in params if p.get("in") == "query"}
        for name in query:
            if name not in known_query:
                problems.append(f"{method} {template}: unknown query parameter {name!r}")
        body_param = next((p for p in params if p.get("in") == "body"), None)
        if body_param is None:
            if body not in (None, b"", ""):
                problems.append(f"{method} {template}: sends a body the operation does not take")
            return problems
        schema = body_param.get("schema", {})
        problems += self._check_value(f"{method} {template} body", schema, body)
        return problems

    def _resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def _check_value(self, where: str, schema: dict, value: Any) -> list[str]:
        name = schema.get("$ref", "").rsplit("/", 1)[-1]
        schema = self._resolve(schema)
        if name == "CommitStatusState":
            return [] if value in STATUS_STATES else [f"{where}: bad status state {value!r}"]
        kind = schema.get("type")
        if kind in TYPES and not isinstance(value, TYPES[kind]) or (kind == "integer" and isinstance(value, bool)):
            return [f"{where}: expected {kind}, got {type(value).__name__}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{where}: {value!r} not one of {schema['enum']}"]
        problems = []
        if kind == "object" or "properties" in schema:
            props = schema.get("properties", {})
            for req in schema.get("required", []):
                if req not in value:
                    problems.append(f"{where}: lacks required field {req!r}")
            for key, item in value.items():
                if key not in props:
                    problems.append(f"{where}: unknown field {key!r}")
                else:
                    problems += self._check_value(f"{where}.{key}", props[key], item)
        return problems


@dataclass
class FakeGitea:
    """Start with ``start()``; ``url`` is what a connection's ``url`` should be."""

    token: str = "gitea-test-token"
    bot: str = "ccci-bot"
    pulls: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    members: set[tuple[str, str]] = field(default_factory=set)
    permissions: dict[tuple[str, str], str] = field(default_factory=dict)
    branches: dict[tuple[str, str], str] = field(default_factory=dict)
    merge_answer: tuple[int, str] | None = None   # e.g. (409, "head out of date")
    down: bool = False
    down_status: int = 500
    broken: set[str] = field(default_factory=set)
    lose_answer_to: set[str] = field(default_factory=set)   # once each, then answered
    accept_bad_tokens_as_401: bool = False   # a test that changes the token on purpose

    def __post_init__(self) -> None:
        self.spec = ApiSpec()
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.statuses: list[tuple[str, str, dict]] = []       # (repo, sha, body)
        self.comments: dict[int, dict[str, Any]] = {}         # id → comment
        self.merges: list[tuple[str, int, dict]] = []
        self._ids = itertools.count(100)
        self._fail = 0
        self._lose = 0
        self._port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- set-up helpers ----------------------------------------------------------------

    def add_pull(self, repo: str, number: int, sha: str, branch: str = "main",
                 title: str = "a change") -> None:
        self.pulls[(repo, number)] = {"sha": sha, "branch": branch, "title": title,
                                      "state": "open"}

    def add_comment(self, repo: str, number: int, user: str, body: str,
                    when: str = "") -> int:
        when = when or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cid = next(self._ids)
        self.comments[cid] = {"id": cid, "repo": repo, "number": number, "body": body,
                              "user": user, "created_at": when, "updated_at": when,
                              "pull": (repo, number) in self.pulls}
        return cid

    def fail_next(self, n: int) -> None:
        self._fail = n

    def lose_answers(self, n: int) -> None:
        self._lose = n

    # --- reading back -------------------------------------------------------------------

    def status_states(self, repo: str, sha: str, full: bool = False) -> dict[str, Any]:
        """The latest state per context on ``sha`` (``full``: the whole status)."""
        out: dict[str, Any] = {}
        for r, s, body in self.statuses:
            if (r, s) == (repo, sha):
                out[body["context"]] = body if full else body["state"]
        return out

    def gate_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return [c for c in self.comments.values() if (c["repo"], c["number"]) == (repo, number)
                and c["user"] == self.bot]

    # --- serving ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> "FakeGitea":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload = fake.answer(self.command, self.path, dict(self.headers), raw)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._handler = Handler
        self._listen()
        return self

    def _listen(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def go_offline(self) -> None:
        """Close the port: every connection is refused until ``come_back()``."""
        self.stop()

    def come_back(self) -> None:
        self._listen()

    def answer(self, method: str, target: str, headers: dict, raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with self._lock:
            if any(fragment in path for fragment in self.broken):
                self.requests.append(Recorded(method, path, query, body, 500))
                return 500, {"message": "internal error (this request only)"}
            if self.down or self._fail > 0:
                status = self.down_status if self.down else 500
                self._fail = max(0, self._fail - 1)
                self.requests.append(Recorded(method, path, query, body, status))
                return status, {"message": "internal error (fake outage)"}
            problems = self.spec.check(method, path, query, body)
            if headers.get("Authorization") != f"token {self.token}":
                if problems == [] and self.accept_bad_tokens_as_401:
                    self.requests.append(Recorded(method, path, query, body, 401))
                    return 401, {"message": "token is required"}   # Gitea's answer
                problems.append(f"{method} {path}: missing or wrong Authorization token")
            self.violations += problems
            status, payload = (400, {"message": "; ".join(problems)}) if problems else \
                self._route(method, path[len(self.spec.base):], query, body)
            lost = next((f for f in self.lose_answer_to if f in path), None)
            if (self._lose > 0 or lost) and not problems:
                if lost:
                    self.lose_answer_to.discard(lost)
                else:
                    self._lose -= 1
                status, payload = 502, {"message": "bad gateway (the answer was lost)"}
            self.requests.append(Recorded(method, path, query, body, status))
            return status, payload

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        seg = path.strip("/").split("/")
        if path == "/user":
            return 200, {"login": self.bot, "id": 1}
        if path == "/version":
            return 200, {"version": "1.23.0-fake"}
        if seg[0] == "orgs" and seg[2] == "members":
            return (204, None) if (seg[1], seg[3]) in self.members else (404, {"message": "not a member"})
        repo = "/".join(seg[1:3])
        rest = seg[3:]
        if rest[:1] == ["statuses"] and method == "POST":
            self.statuses.append((repo, rest[1], body))
            return 201, {"id": next(self._ids), **body}
        if rest[:1] == ["commits"] and rest[2:] == ["statuses"] and method == "GET":
            return 200, [{"id": i, "status": b["state"], "context": b["context"],
                          "description": b.get("description", ""),
                          "target_url": b.get("target_url", "")}
                         for i, (r, sha, b) in enumerate(self.statuses)
                         if (r, sha) == (repo, rest[1])][::-1]
        if rest[:1] == ["issues"] and rest[2:] == ["comments"] and method == "GET":
            return 200, [self._comment_json(c) for c in self.comments.values()
                         if (c["repo"], c["number"]) == (repo, int(rest[1]))]
        if rest[:1] == ["commits"] and rest[2:] == ["status"] and method == "GET":
            latest = self.status_states(repo, rest[1], full=True)
            return 200, {"sha": rest[1], "total_count": len(latest),
                         "statuses": list(latest.values())}
        if rest[:1] == ["collaborators"]:
            perm = self.permissions.get((repo, rest[1]))
            return (200, {"permission": perm}) if perm else (404, {"message": "not a collaborator"})
        if rest[:1] == ["pulls"] and len(rest) == 2:
            pr = self.pulls.get((repo, int(rest[1])))
            if pr is None:
                return 404, {"message": "no such pull"}
            return 200, {"number": int(rest[1]), "state": pr["state"], "title": pr["title"],
                         "html_url": f"{self.url}/{repo}/pulls/{rest[1]}",
                         "head": {"sha": pr["sha"], "ref": f"pr{rest[1]}"},
                         "base": {"ref": pr["branch"]}, "merged": pr.get("merged", False)}
        if rest[:1] == ["pulls"] and rest[2:] == ["merge"]:
            if self.pulls[(repo, int(rest[1]))].get("merged"):
                return 405, {"message": "PR already merged"}   # as Gitea answers
            self.merges.append((repo, int(rest[1]), body))
            if self.merge_answer is not None:
                return self.merge_answer[0], {"message": self.merge_answer[1]}
            self.pulls[(repo, int(rest[1]))].update(state="closed", merged=True)
            return 200, None
        if rest[:1] == ["branches"]:
            return 200, {"name": rest[1], "commit": {"id": self.branches.get((repo, rest[1]), "f" * 40)}}
        if rest == ["issues", "comments"] and method == "GET":
            since = (query.get("since") or [""])[0]
            out = [self._comment_json(c) for c in self.comments.values()
                   if c["repo"] == repo and c["updated_at"] >= since]
            limit = int((query.get("limit") or ["50"])[0])
            page = int((query.get("page") or ["1"])[0])
            return 200, out[(page - 1) * limit:page * limit]
        if rest[:2] == ["issues", "comments"] and method == "PATCH":
            comment = self.comments.get(int(rest[2]))
            if comment is None:
                return 404, {"message": "no such comment"}
            comment["body"] = body["body"]
            return 200, self._comment_json(comment)
        if rest[:1] == ["issues"] and rest[2:] == ["comments"] and method == "POST":
            cid = self.add_comment(repo, int(rest[1]), self.bot, body["body"])
            return 201, self._comment_json(self.comments[cid])
        return 404, {"message": f"the fake does not serve {method} {path}"}

    def _comment_json(self, c: dict[str, Any]) -> dict[str, Any]:
        kind = "pulls" if c["pull"] else "issues"
        return {"id": c["id"], "body": c["body"], "user": {"login": c["user"]},
                "created_at": c["created_at"], "updated_at": c["updated_at"],
                "html_url": f"{self.url}/{c['repo']}/{kind}/{c['number']}#issuecomment-{c['id']}",
                "pull_request_url": f"{self.url}/{c['repo']}/pulls/{c['number']}" if c["pull"] else "",
                "issue_url": f"{self.url}/{c['repo']}/issues/{c['number']}"}


# --- sending webhooks the way Gitea does ---------------------------------------------------

def conformance_payload(name: str) -> dict[str, Any]:
    return json.loads((CONFORMANCE / "gitea" / name).read_text())


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


EVENT_HEADERS = {  # file prefix → (X-Gitea-Event, X-Gitea-Event-Type) as a real Gitea sends
    "issue_comment_pr": ("issue_comment", "pull_request_comment"),
    "issue_comment_issue": ("issue_comment", "issue_comment"),
    "pull_request_synchronized": ("pull_request", "pull_request_sync"),
    "pull_request": ("pull_request", "pull_request"),
    "push": ("push", "push"),
}


def headers_for(name: str) -> tuple[str, str]:
    for prefix, pair in EVENT_HEADERS.items():
        if name.startswith(prefix):
            return pair
    raise KeyError(name)


def deliver(url: str, event: str, body: bytes, secret: str | None, delivery: str = "",
            signature: str | None = None, event_type: str = "") -> requests.Response:
    """POST a webhook with the headers a real Gitea sends."""
    headers = {"Content-Type": "application/json", "X-Gitea-Event": event,
               "X-Gitea-Event-Type": event_type or event, "User-Agent": "Go-http-client/1.1"}
    if delivery:
        headers["X-Gitea-Delivery"] = delivery
    if signature is None and secret is not None:
        signature = sign(secret, body)
    if signature is not None:
        headers["X-Gitea-Signature"] = signature
    return requests.post(url, data=body, headers=headers, timeout=10)
