"""``ccci-gate status``: the exact table for a canned status.json, fitting a width, and
against a live gatekeeper (a held build, a paused pipeline, the pool)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ccci_gate.commands.status import format_status

from e2e_helpers import admin, make_repo, start_gatekeeper, wait_for, write_layout
from test_gatekeeper_e2e import JOBS, PIPELINES, PROJECTS, SCRIPTS

FIXTURE = Path(__file__).parent / "fixtures" / "status" / "small.json"

EXPECTED = """\
ALERT warning: pipeline gate is paused: its items wait
ALERT warning: connection gitea: 12 write(s) wait in the outbox, the oldest for 15 min (for 15m00s)
check [independent]
  CHANGE       PROJECT     AGE    STATE    JOBS  RESULT
  #7,01234567  org/recipe  2m05s  TESTING  1/4
    build    SUCCESS  12s                               w1  http://gk:8001/logs/b1
    install  RUNNING  1m00s of ~4m00s [##--------] 25%  w1  http://gk:8001/logs/b2
    lint     RUNNING  5.5s                              w2  http://gk:8001/logs/b3
    systest  WAITING
gate [dependent] (paused)
  queue shared  window 20
  CHANGE  PROJECT     AGE     STATE     JOBS  RESULT
  #8      org/recipe  10m00s  COMPLETE  1/1   FAILURE systest failed
    systest  FAILURE  53m20s  w2  http://gk:8001/logs/g1b
  #3      org/app     10s     WAITING   0/1                           (on org/recipe#8)
    systest  WAITING
post [supercedent]
  no items
recently finished
  org/recipe#6             check  FAILURE  5m00s ago  http://gk:8001/items/c1
  org/app@refs/heads/main  post   SUCCESS  10s ago    http://gk:8001/items/c2
pool: 1 server, 2 workers (w1, w2); 1 queued, 1 running, 1 held for want of a worker
  FUNCTION       WORKERS  QUEUED  RUNNING
  build:build    2        0       0
  build:install  1        1       1"""


def canned() -> dict:
    return json.loads(FIXTURE.read_text())


def test_a_canned_status_reads_as_this_table():
    # install ran 60 s of its 240 s estimate; lint has no estimate (elapsed only); ages
    # and elapsed times count from the status' own clock ("now"), not the reader's; the
    # gate's shared queue shows its window, and #3 says it is tested on top of #8
    assert format_status(canned()) == EXPECTED


def test_lines_fit_the_width_losing_their_links_first():
    text = format_status(canned(), 60)
    assert all(len(line) <= 60 for line in text.splitlines()), text
    assert "http://gk:8001/logs/b1" not in text and "http://gk:8001/items/c1" not in text
    assert "    systest  FAILURE  53m20s  w2  http://gk:8001/logs/g1b" in text   # it fits
    assert "    install  RUNNING  1m00s of ~4m00s [##--------] 25%  w1" in text.splitlines()
    assert text.splitlines()[-4].endswith("…")   # the pool line, cut
    assert format_status(canned(), 0) == EXPECTED


def test_without_estimates_or_pool_it_still_reads():
    data = canned()
    del data["now"]          # a gatekeeper without estimates: the snapshot's time
    for job in data["pipelines"][0]["queues"][0]["items"][0]["jobs"]:
        job.pop("estimate"), job.pop("remaining")
    data["pool"] = {"error": "the Gearman servers have not answered yet"}
    text = format_status(data)
    assert "    install  RUNNING  59s" in text
    assert "  #7,01234567  org/recipe  2m04s  TESTING  1/4" in text
    assert text.endswith("pool: the Gearman servers have not answered yet")
    assert format_status({"pipelines": []}) == "no pipelines"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccci_gate.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_status_of_a_live_gatekeeper(tmp_path):
    repos = tmp_path / "repos"
    make_repo(repos, "org/recipe", {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(tmp_path, PIPELINES, PROJECTS, JOBS, SCRIPTS)
    hold = tmp_path / "release"
    jobs_yaml = jobs_dir / "jobs.yaml"
    jobs_yaml.write_text(jobs_yaml.read_text().replace(
        "run: scripts/install.sh\n",
        f"run: scripts/install.sh\n    parameters:\n      HOLD_FILE: {hold}\n"))
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos)
    try:
        client = ("--url", gk.web_url)
        assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe",
                                            "change": 1}).status_code == 202
        # (the pool's part is a snapshot at most 2 s old: wait for one with the worker)
        wait_for(lambda: "install  RUNNING" in (s := cli("status", *client).stdout)
                 and "1 running" in s, 30, "install running in the status and the pool")
        assert admin(gk, "/admin/pause", {"pipeline": "check"}).status_code == 202
        gk.scheduler.sync()
        out = cli("status", *client)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        lines = out.stdout.splitlines()
        # the open alert first (alerts.py), the server's own words
        assert lines[0] == "ALERT warning: pipeline check is paused: its items wait"
        assert lines[1] == "check [independent] (paused)"
        assert re.match(r"  #1\s+org/recipe\s+\d+(\.\d)?s\s+TESTING\s+2/4$", lines[3]), lines
        assert re.match(r"    build\s+SUCCESS\s+\d+\.\ds\s+local\s+http://127\.0\.0\.1:\d+/logs/"
                        r"[0-9a-f]{32}$", lines[4]), lines
        install = next(line for line in lines if line.startswith("    install"))
        assert re.match(r"    install\s+RUNNING\s+\d+(\.\d)?s", install), install
        assert "    systest  WAITING" in lines
        assert re.search(r"^pool: 1 server, 1 worker \(local\); 0 queued, 1 running, 0 held",
                         out.stdout, re.M), out.stdout
        narrow = cli("status", "--width", "40", *client).stdout
        assert max(map(len, narrow.splitlines())) <= 40, narrow
        raw = json.loads(cli("status", "--json", *client).stdout)
        assert raw["pipelines"][0]["paused"] is True
        hold.write_text("go")
        assert admin(gk, "/admin/resume", {"pipeline": "check"}).status_code == 202
        wait_for(lambda: "recently finished" in (s := cli("status", *client).stdout) and s, 60,
                 "the item finished")
        final = cli("status", *client).stdout
        assert final.startswith("check [independent]\n")   # resumed: no alert left
        assert "check [independent]\n  no items\nrecently finished\n  org/recipe#1" in final
    finally:
        gk.stop()


def test_control_characters_from_the_status_never_reach_the_terminal():
    """Review: ``ccci-gate status`` printed what the status says verbatim, and some of it
    comes from outside (a merge message naming a file of the change, a build's message,
    a worker's name, a ref): an ESC or BEL there re-titled or re-drew the operator's
    terminal. Every control character is shown as ``?``."""
    data = json.loads(FIXTURE.read_text())
    item = data["pipelines"][0]["queues"][0]["items"][0]
    item["failing_reason"] = "merge failed in \x1b]0;pwned\x07\x1b[2J evil\x9b31m"
    item["jobs"][0]["worker"] = "w\x1b[31mred"
    text = format_status(data)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), repr(text)
    assert "merge failed in ?]0;pwned??[2J evil?31m" in text
