"""A fake Gerrit for tests: real SSH for the event stream, a REST side that checks shapes.

- **SSH** (paramiko server mode): public-key auth for one account; ``gerrit
  stream-events`` streams every event published while the channel is open (no replay,
  as Gerrit), ``gerrit version`` answers. ``drop()`` cuts every connection, ``down``
  refuses new ones, ``stream_refused`` makes ``stream-events`` fail as Gerrit does
  for an account without the capability. Stream lines are built from the recorded fixtures in
  ``fixtures/conformance/gerrit`` with the fields changed, so they keep a real server's shape.
- **REST** under ``/a/`` with HTTP basic auth, answers prefixed with ``)]}'``: changes
  (``o=CURRENT_REVISION``, ``DETAILED_LABELS``, ``DETAILED_ACCOUNTS``, ``MESSAGES``),
  a ``since:"..."`` query, ``revisions/{sha}/review`` (ReviewInput checked: known
  fields and types, ``notify`` values, labels configured and in range) and
  ``revisions/{sha}/submit`` (SubmitInput checked; 409 when the revision is not
  current or ``refuse_submit`` says why), branches. Violations go to ``violations``.
"""
from __future__ import annotations

import base64
import calendar
import copy
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import paramiko

FIXTURES = Path(__file__).with_name("fixtures") / "conformance" / "gerrit"
REVIEW_INPUT = {"message": str, "tag": str, "labels": dict, "notify": str, "comments": dict,
                "notify_details": dict, "omit_duplicate_comments": bool, "on_behalf_of": str,
                "reviewers": list, "ready": bool, "work_in_progress": bool}
SUBMIT_INPUT = {"on_behalf_of": str, "notify": str, "notify_details": dict}
NOTIFY = ("NONE", "OWNER", "OWNER_REVIEWERS", "ALL")
OPTIONS = ("CURRENT_REVISION", "ALL_REVISIONS", "DETAILED_LABELS", "DETAILED_ACCOUNTS", "MESSAGES",
           "LABELS")
_KEYS: dict[str, paramiko.RSAKey] = {}


def key(name: str) -> paramiko.RSAKey:
    """One RSA key per name per test run (generating is slow)."""
    if name not in _KEYS:
        _KEYS[name] = paramiko.RSAKey.generate(2048)
    return _KEYS[name]


def stamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when)) + ".000000000"


def account(user: str) -> dict[str, Any]:
    return {"name": user.title(), "email": f"{user}@example.org", "username": user}


@dataclass
class FakeChange:
    project: str
    number: int
    branch: str
    owner: str
    revisions: list[tuple[str, float, str]] = field(default_factory=list)  # sha, created, uploader
    status: str = "NEW"
    votes: dict[tuple[str, str], int] = field(default_factory=dict)      # (label, user) → value
    messages: list[dict[str, Any]] = field(default_factory=list)
    wip: bool = False
    updated: float = 0.0

    @property
    def patchset(self) -> int:
        return len(self.revisions)

    @property
    def sha(self) -> str:
        return self.revisions[-1][0]

    def ref(self, ps: int | None = None) -> str:
        return f"refs/changes/{self.number % 100:02d}/{self.number}/{ps or self.patchset}"


class _SSH(paramiko.ServerInterface):
    def __init__(self, fake: "FakeGerrit"):
        self.fake = fake

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, offered: paramiko.PKey) -> int:
        ok = username == self.fake.user and offered == self.fake.client_key
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        if text == "gerrit stream-events" and self.fake.stream_refused:
            threading.Thread(target=self.fake._answer, args=(channel, self.fake.stream_refused, 1),
                             daemon=True).start()
            return True
        if text == "gerrit stream-events":
            with self.fake.lock:
                self.fake.streams.append(channel)
            return True
        if text == "gerrit version":
            threading.Thread(target=self.fake._answer, args=(channel, "gerrit version 3.9.1"),
                             daemon=True).start()
            return True
        self.fake.violations.append(f"ssh: unknown command {text!r}")
        return False


class FakeGerrit:
    def __init__(self, user: str = "ccci-gate", password: str = "http-secret",
                 labels: dict[str, int] | None = None):
        self.user, self.password = user, password
        self.labels = labels or {"Code-Review": 2, "Verified": 2, "Workflow": 1}
        self.client_key, self.host_key = key("client"), key("host")
        self.changes: dict[tuple[str, int], FakeChange] = {}
        self.tips: dict[tuple[str, str], str] = {}
        self.reviews: list[tuple[str, int, str, dict]] = []
        self.submits: list[tuple[str, int, str]] = []
        self.published: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.refuse_submit = ""                  # a reason: submits answer 409 with it
        self.on_submit: Callable[[FakeChange], str] = lambda change: change.sha
        self.down = False                        # SSH refuses connections
        self.rest_down = False                   # REST answers 503
        self.stream_refused = ""                 # stream-events fails with this on stderr
        self.streams: list[paramiko.Channel] = []
        self.transports: list[paramiko.Transport] = []
        self.lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.ssh_port = self._sock.getsockname()[1]
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def write_known_hosts(self, path: Path) -> Path:
        hosts = paramiko.HostKeys()
        hosts.add(f"[127.0.0.1]:{self.ssh_port}", self.host_key.get_name(), self.host_key)
        hosts.save(str(path))
        return path

    def stop(self) -> None:
        self.drop()
        self._sock.close()
        self._http.shutdown()

    # --- SSH ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.down:
                conn.close()
                continue
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            with self.lock:
                self.transports.append(transport)
            try:
                transport.start_server(server=_SSH(self))
            except (paramiko.SSHException, EOFError, OSError):
                pass

    def _answer(self, channel: paramiko.Channel, text: str, status: int = 0) -> None:
        time.sleep(0.1)   # let paramiko accept the exec request before the answer and close
        try:
            (channel.sendall_stderr if status else channel.sendall)(text.encode() + b"\n")
            channel.send_exit_status(status)
            channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass          # the client went away first

    def connected(self) -> int:
        with self.lock:
            return sum(1 for c in self.streams if not c.closed)

    def drop(self) -> None:
        """Cut every SSH connection (the network went away)."""
        with self.lock:
            transports, self.transports, self.streams = self.transports, [], []
        for transport in transports:
            transport.close()

    def publish(self, event: dict[str, Any]) -> None:
        """Send an event to every open stream (lost if none is open, as with Gerrit)."""
        event.setdefault("eventCreatedOn", int(time.time()))
        self.published.append(event)
        line = (json.dumps(event) + "\n").encode()
        with self.lock:
            for channel in [c for c in self.streams if not c.closed]:
                try:
                    channel.sendall(line)
                except (OSError, EOFError, paramiko.SSHException):
                    pass

    # --- what happens in Gerrit -------------------------------------------------------------

    def upload(self, project: str, number: int, sha: str, user: str = "alice",
               branch: str = "main", wip: bool = False) -> FakeChange:
        """A new change or a new patchset of one (votes are not sticky)."""
        now = time.time()
        change = self.changes.setdefault((project, number), FakeChange(project, number, branch, user))
        change.revisions.append((sha, now, user))
        change.votes.clear()
        change.wip, change.updated = wip, now
        change.messages.append(self._message(change, "gerrit", f"Uploaded patch set {change.patchset}.",
                                             "autogenerated:gerrit:newPatchSet"))
        self.publish(self._event("patchset-created.json", change, uploader=account(user)))
        return change

    def comment(self, project: str, number: int, user: str, text: str = "",
                votes: dict[str, int] | None = None) -> None:
        change = self.changes[(project, number)]
        approvals = []
        for label, value in (votes or {}).items():
            old = change.votes.get((label, user), 0)
            change.votes[(label, user)] = value
            approvals.append({"type": label, "description": label, "value": str(value),
                              **({"oldValue": str(old)} if old != value else {})})
        summary = " ".join(f"{label}{value:+d}" for label, value in (votes or {}).items())
        message = f"Patch Set {change.patchset}:" + (f" {summary}" if summary else "") + \
            (f"\n\n{text}" if text else "")
        change.updated = time.time()
        change.messages.append(self._message(change, user, message))
        self.publish(self._event("comment-added.json", change, author=account(user),
                                 approvals=approvals, comment=message))

    def _message(self, change: FakeChange, user: str, text: str, tag: str = "") -> dict[str, Any]:
        return {"id": f"m{len(change.messages)}", "author": account(user), "date": stamp(time.time()),
                "message": text, "_revision_number": change.patchset, **({"tag": tag} if tag else {})}

    def _event(self, fixture: str, change: FakeChange, **top: Any) -> dict[str, Any]:
        event = json.loads((FIXTURES / fixture).read_text())
        sha, created, uploader = change.revisions[-1]
        event["change"].update(project=change.project, branch=change.branch, number=change.number,
                               owner=account(change.owner), status=change.status,
                               url=f"{self.url}/c/{change.project}/+/{change.number}")
        event["change"].pop("wip", None)
        if change.wip:
            event["change"]["wip"] = True
        event["patchSet"].update(number=change.patchset, revision=sha, ref=change.ref(),
                                 uploader=account(uploader), createdOn=int(created))
        event.update(project=change.project, refName=f"refs/heads/{change.branch}", **top)
        event.pop("eventCreatedOn", None)
        return event

    def _submit(self, change: FakeChange) -> None:
        tip = self.on_submit(change)
        change.status, change.updated = "MERGED", time.time()
        self.tips[(change.project, change.branch)] = tip
        merged = self._event("patchset-created.json", change, submitter=account(self.user), newRev=tip)
        merged["type"] = "change-merged"
        del merged["uploader"]
        self.publish(merged)
        ref = json.loads((FIXTURES / "ref-updated.json").read_text())
        ref["refUpdate"].update(oldRev="1" * 40, newRev=tip, project=change.project,
                                refName=f"refs/heads/{change.branch}")
        ref["submitter"] = account(self.user)
        ref.pop("eventCreatedOn")
        self.publish(ref)

    # --- REST -------------------------------------------------------------------------------

    def change_json(self, change: FakeChange, options: list[str]) -> dict[str, Any]:
        sha, created, uploader = change.revisions[-1]
        data: dict[str, Any] = {
            "id": f"{change.project}~{change.branch}~I{change.number:040d}", "project": change.project,
            "branch": change.branch, "change_id": f"I{change.number:040d}", "_number": change.number,
            "subject": f"change {change.number}", "status": change.status,
            "updated": stamp(change.updated), "owner": account(change.owner)}
        if change.wip:
            data["work_in_progress"] = True
        if "CURRENT_REVISION" in options:
            data["current_revision"] = sha
            data["revisions"] = {sha: {"_number": change.patchset, "ref": change.ref(),
                                       "created": stamp(created), "uploader": account(uploader)}}
        if "ALL_REVISIONS" in options:
            data["current_revision"] = sha
            data["revisions"] = {rev: {"_number": n, "ref": change.ref(n), "created": stamp(at),
                                       "uploader": account(who)}
                                 for n, (rev, at, who) in enumerate(change.revisions, 1)}
        if "DETAILED_LABELS" in options:
            data["labels"] = {label: {"all": [{"value": value, **account(user)}
                                              for (lab, user), value in change.votes.items() if lab == label]}
                              for label in self.labels}
        if "MESSAGES" in options:
            data["messages"] = copy.deepcopy(change.messages)
        return data

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        options = query.get("o", [])
        bad = [o for o in options if o not in OPTIONS]
        if bad:
            return 400, f"bad option {bad}"
        if method == "GET" and path == "/a/changes/":
            since = re.search(r'since:"([^"]+)"', " ".join(query.get("q", [])))
            after = calendar.timegm(time.strptime(since.group(1), "%Y-%m-%d %H:%M:%S")) if since else 0
            return 200, [self.change_json(c, options) for c in self.changes.values()
                         if c.updated >= after]
        if match := re.fullmatch(r"/a/projects/([^/]+)/branches/([^/]+)", path):
            tip = self.tips.get((unquote(match.group(1)), unquote(match.group(2))))
            return (200, {"ref": f"refs/heads/{unquote(match.group(2))}", "revision": tip}) if tip \
                else (404, "Not found")
        match = re.fullmatch(r"/a/changes/([^/]+)~(\d+)(?:/revisions/([0-9a-f]{40})/(review|submit))?", path)
        change = self.changes.get((unquote(match.group(1)), int(match.group(2)))) if match else None
        if change is None:
            return 404, "Not found"
        if method == "GET" and not match.group(3):
            return 200, self.change_json(change, options)
        if method != "POST" or match.group(3) not in {r[0] for r in change.revisions}:
            return 404, "Not found"
        if match.group(4) == "review":
            return self._review(change, match.group(3), body)
        return self._submit_request(change, match.group(3), body)

    def _check(self, kind: str, body: Any, fields: dict[str, type]) -> str:
        if not isinstance(body, dict):
            return f"{kind} is not a JSON object"
        for name, value in body.items():
            if name not in fields or not isinstance(value, fields[name]):
                return f"{kind}: bad field {name}={value!r}"
        if body.get("notify", "ALL") not in NOTIFY:
            return f"{kind}: bad notify {body['notify']!r}"
        return ""

    def _review(self, change: FakeChange, sha: str, body: Any) -> tuple[int, Any]:
        problem = self._check("ReviewInput", body, REVIEW_INPUT)
        for label, value in (body.get("labels") or {}).items() if not problem else ():
            if label not in self.labels or not isinstance(value, int) or abs(value) > self.labels[label]:
                problem = f"label {label}={value!r} is not configured or out of range"
        if problem:
            self.violations.append(problem)
            return 400, problem
        self.reviews.append((change.project, change.number, sha, body))
        if "message" in body:
            change.messages.append(self._message(change, self.user, body["message"], body.get("tag", "")))
        return 200, {"labels": body.get("labels", {})}

    def _submit_request(self, change: FakeChange, sha: str, body: Any) -> tuple[int, Any]:
        problem = self._check("SubmitInput", body, SUBMIT_INPUT)
        if problem:
            self.violations.append(problem)
            return 400, problem
        if change.status != "NEW":
            return 409, f"change is {change.status.lower()}"
        if sha != change.sha:
            return 409, f"revision {sha} is not current revision"
        if self.refuse_submit:
            return 409, self.refuse_submit
        self.submits.append((change.project, change.number, sha))
        self._submit(change)
        return 200, self.change_json(change, [])


def _handler(fake: FakeGerrit) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{fake.user}:{fake.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            url = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if fake.rest_down:
                status, data = 503, "Service Unavailable"
            elif self.headers.get("Authorization") != expected or not url.path.startswith("/a/"):
                fake.violations.append(f"unauthenticated {self.command} {url.path}")
                status, data = 401, "Unauthorized"
            else:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = "<malformed>"
                status, data = fake.answer(self.command, url.path, parse_qs(url.query), body)
            text = (")]}'\n" + json.dumps(data)) if status < 400 else str(data)
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if status < 400 else "text/plain")
            self.send_header("Content-Length", str(len(text.encode())))
            self.end_headers()
            self.wfile.write(text.encode())

        do_GET = do_POST = _handle

    return Handler
