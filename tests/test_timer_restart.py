"""Persistent timers through real restarts of ``ccci-gate serve``: a trigger whose last
firing was three of its times ago (the gatekeeper was down since) fires once when the
gatekeeper starts, not three times, and not again at the next restart. Its time is
03:00 on 29 February, so it never comes due by itself while the test runs."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests
from croniter import croniter

from ccci_gate.drivers.timer import trigger_key

from e2e_helpers import make_repo, write_layout
from waiting import free_port, wait_for

PIPELINE = """
pipelines:
  - name: nightly
    manager: independent
    trigger:
      timer:
        - time: '0 3 29 2 *'
    success:
      log: {}
    failure:
      log: {}
"""
PROJECTS = """
projects:
  - name: org/a
    nightly: [noop]
"""
JOBS = """
jobs:
  - name: noop
    run: scripts/noop.sh
"""
CRON = "0 3 29 2 *"
KEY = trigger_key("nightly", CRON, ("main",))


class Serve:
    """``ccci-gate serve`` in its own process, on the same state and ports each start."""

    def __init__(self, tmp: Path, layouts: Path, jobs: Path, repos: Path):
        self.tmp, self.web = tmp, free_port()
        self.state = tmp / "state"
        self.config = tmp / "ccci-gate.yaml"
        self.config.write_text(json.dumps({
            "state-dir": str(self.state), "listen": f"127.0.0.1:{self.web}",
            "gearman-listen": f"127.0.0.1:{free_port()}", "layout": [str(layouts), str(jobs)],
            "jobs-dir": str(jobs), "repos": str(repos)}))
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        self.log = self.tmp / f"serve-{self.runs}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccci_gate.cli", "serve", "--config", str(self.config)],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        wait_for(self.up, 30, "the gatekeeper to serve")

    def up(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.web}/status.json",
                                timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def nightly_items(self) -> list[tuple[str, float]]:
        with sqlite3.connect(self.state / "ccci-gate.sqlite") as db:
            return db.execute("SELECT result, finished_at FROM items WHERE pipeline = 'nightly'"
                              ).fetchall()

    def since(self) -> float | None:
        path = self.state / "timer.sqlite"
        if not path.exists():
            return None
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT since FROM triggers WHERE key = ?", (KEY,)).fetchone()
        return row[0] if row else None


def test_a_firing_missed_while_down_runs_once_at_start_and_not_again(tmp_path):
    layouts, jobs = write_layout(tmp_path, PIPELINE, PROJECTS, JOBS, {"noop.sh": "echo ok\n"})
    repos = tmp_path / "repos"
    make_repo(repos, "org/a")
    serve = Serve(tmp_path, layouts, jobs, repos)
    try:
        serve.start()
        first_seen = wait_for(serve.since, 30, "the trigger to be recorded")
        serve.stop()
        assert serve.nightly_items() == []                  # first seen: nothing at once
        now = time.time()
        assert abs(first_seen - now) < 60
        # it last fired just after its fourth time back, then the gatekeeper was down
        back = croniter(CRON, now)
        fourth = [back.get_prev(float) for _ in range(4)][-1]
        with sqlite3.connect(serve.state / "timer.sqlite") as db:
            db.execute("UPDATE triggers SET since = ?, fired = ? WHERE key = ?",
                       (fourth + 60,) * 2 + (KEY,))

        serve.start()
        wait_for(serve.nightly_items, 60, "the missed night to run")
        time.sleep(3)                                       # room for a wrong second run
        assert [r for r, _ in serve.nightly_items()] == ["SUCCESS"]
        text = serve.log.read_text()
        assert f"timer nightly ({CRON}): 3 time(s) passed while the gatekeeper was down" \
               in text and "it runs once now" in text
        fired = serve.since()
        assert fired is not None and fired > now
        serve.stop()

        serve.start()                                       # nothing was missed this time
        time.sleep(4)
        assert len(serve.nightly_items()) == 1
        assert serve.since() == fired
        assert "passed while the gatekeeper was down" not in serve.log.read_text()
        serve.stop()
    finally:
        serve.kill()
