"""A gatekeeper restart is a non-event for the changes under test.

A real ``ccci-gate serve`` process (embedded Gearman server, SQLite, git merger, the
Gitea driver talking to the fake Gitea that checks every request against Gitea's API
description; or gearmand, which outlives the gatekeeper) and a separate
``ccci-gate worker`` process run 30 pull requests: 20
``!testme`` (check) and 10 ``!gate`` (gate, merged through Gitea), two shell jobs each
that sleep a little. Mid-run the gatekeeper is stopped — SIGTERM, or SIGKILL — and
started again on the same state directory. Then: all 30 finish, none is reported twice
(one ``pending``, one final status per context; one comment write per pull request), no
status is left ``pending``, every gated change is merged, and no item row stays open.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from e2e_helpers import wait_for, worker_process
from fake_gitea import FakeGitea, conformance_payload, deliver
from git_helpers import git, make_repo

SECRET = "webhook-test-secret"
REPO = "example/example"
CHECK = range(1, 21)
GATE = range(21, 31)

LAYOUT = """
pipelines:
  - name: check
    manager: independent
    trigger:
      gitea:
        - event: comment
          comment: '^!testme\\s*$'
    start:
      gitea: {}
    success:
      gitea: {}
    failure:
      gitea: {}
  - name: gate
    manager: dependent
    trigger:
      gitea:
        - event: comment
          comment: '^!gate\\s*$'
    start:
      gitea: {}
    success:
      gitea: {}
    failure:
      gitea: {}
    merge-failure:
      gitea: {}
projects:
  - name: example/example
    check: [build, test]
    gate: [build, test]
"""
JOBS = """
jobs:
  - name: build
    run: scripts/nap.sh
  - name: test
    run: scripts/nap.sh
    requires: [build]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gatekeeper:
    """``ccci-gate serve`` in its own process, on fixed ports across restarts."""

    def __init__(self, tmp: Path, fake: FakeGitea, gearmand: int | None = None):
        self.tmp = tmp
        self.web_port, self.gearman_port = free_port(), gearmand or free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.config = tmp / "ccci-gate.yaml"
        where = ({"gearman": [f"127.0.0.1:{gearmand}"]} if gearmand else
                 {"gearman-listen": f"127.0.0.1:{self.gearman_port}"})
        self.config.write_text(json.dumps({
            "state-dir": str(tmp / "state"), "listen": f"127.0.0.1:{self.web_port}", **where,
            "layout": [str(tmp / "layouts"), str(tmp / "jobs")], "jobs-dir": str(tmp / "jobs"),
            "repos": str(tmp / "repos"), "worker": {"enabled": False},
            "connections": {"gitea": {"driver": "gitea", "url": fake.url, "token": fake.token,
                                      "webhook-secret": SECRET, "bot-user": fake.bot}}}))
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.tmp / f"gatekeeper-{self.runs}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccci_gate.cli", "serve", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        wait_for(self.up, 30, "the gatekeeper to serve")

    def up(self) -> bool:
        try:
            return requests.get(self.url + "/status.json", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_for_worker(self) -> None:
        def registered() -> bool:
            pool = requests.get(self.url + "/status.json", timeout=5).json()["pool"]
            return all(pool.get("functions", {}).get(f, {}).get("workers", 0) >= 1
                       for f in ("build:build", "build:test"))
        wait_for(registered, 30, "the worker to register")

    def stop(self, sig: int, timeout: float = 30.0) -> float:
        """Send ``sig``; return how long the process took to exit."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout)
        return time.monotonic() - t0

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.tmp / "state" / "ccci-gate.sqlite")

    def finished(self) -> int:
        with self.db() as db:
            return db.execute("SELECT COUNT(*) FROM items WHERE finished_at IS NOT NULL").fetchone()[0]


def comment(gk: Gatekeeper, number: int, text: str) -> None:
    payload = copy.deepcopy(conformance_payload("issue_comment_pr.json"))
    payload["action"] = "created"
    payload["repository"]["full_name"] = REPO
    payload["issue"]["number"] = number
    payload["comment"]["body"] = text
    payload["comment"]["id"] = 5000 + number
    payload["comment"]["user"]["login"] = payload["sender"]["login"] = "alice"
    response = deliver(gk.url + "/webhooks/gitea", "issue_comment", json.dumps(payload).encode(),
                       SECRET, delivery=f"d-{number}", event_type="pull_request_comment")
    assert response.status_code == 202, response.text


@pytest.fixture
def world(tmp_path, request):
    gearmand = None
    if request.param == "gearmand":      # a Gearman server that outlives the gatekeeper
        port = free_port()
        gearmand = subprocess.Popen([request.getfixturevalue("gearmand_bin"), "-L", "127.0.0.1",
                                     "-p", str(port), "--log-file", "none"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "gearmand")
    fake = FakeGitea().start()
    fake.members.add(("example", "alice"))
    repo = make_repo(tmp_path / "repos", REPO, {n: {f"f{n}.txt": f"{n}\n"} for n in range(1, 31)})
    for n in range(1, 31):
        fake.add_pull(REPO, n, git(repo, "rev-parse", f"refs/pull/{n}/head"))
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "main.yaml").write_text(LAYOUT)
    (tmp_path / "jobs" / "scripts").mkdir(parents=True)
    (tmp_path / "jobs" / "jobs.yaml").write_text(JOBS)
    nap = tmp_path / "jobs" / "scripts" / "nap.sh"
    nap.write_text("#!/bin/sh\nsleep 0.4\necho ok\n")
    nap.chmod(0o755)
    gk = Gatekeeper(tmp_path, fake, gearmand=port if gearmand else None)
    gk.start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "ccci_gate.cli", "worker", "--gearman",
         f"127.0.0.1:{gk.gearman_port}", "--jobs", str(tmp_path / "jobs"), "--workdir",
         str(tmp_path / "work"), "--name", "w1", "--max-builds", "4"],
        stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    gk.wait_for_worker()
    yield gk, fake, repo
    for proc in (worker, gk.proc, gearmand):
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
    fake.stop()


def final_writes(fake: FakeGitea) -> tuple[Counter, Counter, Counter]:
    """(pending statuses, final statuses) per (sha, context), comment writes per PR."""
    pending, final = Counter(), Counter()
    for _repo, sha, body in list(fake.statuses):
        (pending if body["state"] == "pending" else final)[(sha, body["context"])] += 1
    comments = Counter()
    for r in list(fake.requests):
        if r.status < 300 and "/comments" in r.path and r.method in ("POST", "PATCH"):
            comments[r.path] += 1
    return pending, final, comments


@pytest.mark.parametrize("world,sig", [("embedded", signal.SIGTERM), ("embedded", signal.SIGKILL),
                                       ("gearmand", signal.SIGKILL)],
                         ids=["SIGTERM", "SIGKILL", "SIGKILL-gearmand"], indirect=["world"])
def test_a_restart_mid_run_loses_nothing_and_reports_each_item_once(world, sig):
    gk, fake, repo = world
    for n in CHECK:
        comment(gk, n, "!testme")
    for n in GATE:
        comment(gk, n, "!gate")
    wait_for(lambda: 5 <= gk.finished(), 120, "a few items to finish")
    stopped_after = gk.finished()
    took = gk.stop(sig)
    if sig == signal.SIGTERM:
        assert took < 15, f"SIGTERM took {took:.1f}s"
    assert stopped_after < 30, "everything finished before the restart: nothing was tested"
    gk.start()
    wait_for(lambda: gk.finished() >= 30, 180, "all 30 items to finish")
    shas = {n: git(repo, "rev-parse", f"refs/pull/{n}/head") for n in range(1, 31)}
    pipeline = {**{n: "check" for n in CHECK}, **{n: "gate" for n in GATE}}

    def settled() -> bool:
        states = [fake.status_states(REPO, shas[n]) for n in range(1, 31)]
        return all(s and "pending" not in s.values() for s in states)
    wait_for(settled, 60, "every status to be final")
    pending, final, comments = final_writes(fake)
    for n in range(1, 31):
        contexts = [f"ccci/{pipeline[n]}", f"ccci/{pipeline[n]}/build", f"ccci/{pipeline[n]}/test"]
        assert fake.status_states(REPO, shas[n]) == {c: "success" for c in contexts}, n
        for context in contexts:
            assert pending[(shas[n], context)] == 1, f"#{n} {context}: started twice"
            assert final[(shas[n], context)] == 1, f"#{n} {context}: reported twice"
    assert len(fake.comments) == 30, "a pull request got a second comment"
    assert sum(comments.values()) == 30, f"a comment was written twice: {comments}"
    assert sorted(n for _r, n, _b in fake.merges) == list(GATE)
    with gk.db() as db:
        rows = db.execute("SELECT result, COUNT(*) FROM items GROUP BY result").fetchall()
        assert dict(rows) == {"SUCCESS": 30}
        assert db.execute("SELECT COUNT(*) FROM items WHERE finished_at IS NULL").fetchone()[0] == 0
    assert fake.violations == []
