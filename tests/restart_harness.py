"""A gatekeeper restarted mid-run, as a test and a benchmark see it (``Trial``).

A real ``ccci-gate serve`` process (the Gitea driver against ``fake_gitea``, SQLite, the
git merger; the embedded Gearman server or gearmand, which outlives the gatekeeper) and a
``ccci-gate worker`` process run 30 pull requests: 20 ``!testme`` (check), 10 ``!gate``
(gate, merged through Gitea), two shell jobs each that sleep a little. ``Trial.run(sig)``
stops the gatekeeper mid-run with ``sig``, starts it again on the same state and
address, waits for the end and tallies what Gitea and the store saw.
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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from e2e_helpers import wait_for
from waiting import free_port
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
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONFAULTHANDLER": "1"})
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
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:   # dump its threads (PYTHONFAULTHANDLER) and say so
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(10)
            raise AssertionError(f"the gatekeeper did not exit within {timeout:.0f}s of {sig!r}; "
                                 f"its threads: {self.tmp}/gatekeeper-{self.runs}.log") from None
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


@dataclass
class Tally:
    """What one trial saw. ``lost``, ``reported_twice``, ``wrong`` and ``orphans`` must be 0."""

    finished: int = 0           # items with a final status on their head
    lost: int = 0               # items never finished
    reported_twice: int = 0     # contexts set pending or final more than once, comments written twice
    wrong: int = 0              # final verdicts other than success (every job passes)
    orphans: int = 0            # job processes still running once the trial is over
    merged_twice: int = 0       # gated changes merged more than once
    open_rows: int = 0          # item rows left open in SQLite
    stop_seconds: float = 0.0   # how long the gatekeeper took to exit
    problems: list[str] = field(default_factory=list)


class Trial:
    """One gatekeeper, one worker, 30 pull requests; call :meth:`run`, then :meth:`close`."""

    def __init__(self, tmp: Path, server: str = "embedded", gearmand_bin: str = "gearmand"):
        self.tmp = tmp
        self.gearmand = None
        port = None
        if server == "gearmand":      # a Gearman server that outlives the gatekeeper
            port = free_port()
            self.gearmand = subprocess.Popen([gearmand_bin, "-L", "127.0.0.1", "-p", str(port),
                                              "--log-file", "none"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "gearmand")
        self.fake = fake = FakeGitea().start()
        fake.members.add(("example", "alice"))
        self.repo = make_repo(tmp / "repos", REPO,
                              {n: {f"f{n}.txt": f"{n}\n"} for n in range(1, 31)})
        self.shas = {n: git(self.repo, "rev-parse", f"refs/pull/{n}/head") for n in range(1, 31)}
        for n in range(1, 31):
            fake.add_pull(REPO, n, self.shas[n])
        (tmp / "layouts").mkdir()
        (tmp / "layouts" / "main.yaml").write_text(LAYOUT)
        (tmp / "jobs" / "scripts").mkdir(parents=True)
        (tmp / "jobs" / "jobs.yaml").write_text(JOBS)
        self.nap = tmp / "jobs" / "scripts" / "nap.sh"
        self.nap.write_text("#!/bin/sh\nsleep 0.4\necho ok\n")
        self.nap.chmod(0o755)
        self.gk = Gatekeeper(tmp, fake, gearmand=port)
        self.gk.start()
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "ccci_gate.cli", "worker", "--gearman",
             f"127.0.0.1:{self.gk.gearman_port}", "--jobs", str(tmp / "jobs"), "--workdir",
             str(tmp / "work"), "--name", "w1", "--max-builds", "4"],
            stdout=open(tmp / "worker.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.gk.wait_for_worker()

    def close(self) -> None:
        for proc in (self.worker, self.gk.proc, self.gearmand):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.fake.stop()

    def run(self, sig: int, timeout: float = 180.0) -> Tally:
        gk, fake, tally = self.gk, self.fake, Tally()
        for n in CHECK:
            comment(gk, n, "!testme")
        for n in GATE:
            comment(gk, n, "!gate")
        wait_for(lambda: 5 <= gk.finished(), 120, "a few items to finish")
        if gk.finished() >= 30:
            tally.problems.append("everything finished before the restart")
        tally.stop_seconds = gk.stop(sig)
        gk.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (gk.finished() >= 30 and self._settled()):
            time.sleep(0.1)
        pipeline = {**{n: "check" for n in CHECK}, **{n: "gate" for n in GATE}}
        pending, final, comments = final_writes(fake)
        for n in range(1, 31):
            states = fake.status_states(REPO, self.shas[n])
            contexts = [f"ccci/{pipeline[n]}", f"ccci/{pipeline[n]}/build",
                        f"ccci/{pipeline[n]}/test"]
            item = states.get(f"ccci/{pipeline[n]}")
            if item in (None, "pending"):
                tally.lost += 1
                continue
            tally.finished += 1
            if states != {c: "success" for c in contexts}:
                tally.wrong += 1
                tally.problems.append(f"#{n}: {states}")
            for context in contexts:
                if pending[(self.shas[n], context)] > 1 or final[(self.shas[n], context)] > 1:
                    tally.reported_twice += 1
                    tally.problems.append(f"#{n} {context}: {pending[(self.shas[n], context)]} "
                                          f"pending, {final[(self.shas[n], context)]} final")
        tally.reported_twice += sum(c - 1 for c in comments.values() if c > 1)
        tally.reported_twice += max(0, len(fake.comments) - 30)
        merges = Counter(n for _r, n, _b in fake.merges)
        tally.merged_twice = sum(1 for c in merges.values() if c > 1)
        with gk.db() as db:
            tally.open_rows = db.execute(
                "SELECT COUNT(*) FROM items WHERE finished_at IS NULL").fetchone()[0]
        if fake.violations:
            tally.problems += fake.violations
        self.worker.terminate()
        self.worker.wait(10)
        end = time.monotonic() + 5.0     # a job naps 0.4 s: one still there after 5 s is left over
        while (tally_orphans := orphans(str(self.nap))) and time.monotonic() < end:
            time.sleep(0.2)
        tally.orphans = tally_orphans
        return tally

    def _settled(self) -> bool:
        states = [self.fake.status_states(REPO, self.shas[n]) for n in range(1, 31)]
        return all(s and "pending" not in s.values() for s in states)


def final_writes(fake: FakeGitea) -> tuple[Counter, Counter, Counter]:
    """(pending statuses, final statuses) per (sha, context), comment writes per path."""
    pending, final = Counter(), Counter()
    for _repo, sha, body in list(fake.statuses):
        (pending if body["state"] == "pending" else final)[(sha, body["context"])] += 1
    comments = Counter()
    for r in list(fake.requests):
        if r.status < 300 and "/comments" in r.path and r.method in ("POST", "PATCH"):
            comments[r.path] += 1
    return pending, final, comments


def orphans(marker: str) -> int:
    """Processes whose command line names ``marker`` (a job script of this trial)."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    count += 1
            except OSError:
                pass
    return count
