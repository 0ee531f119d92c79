"""``ccci-gate logs [-f]`` against a real gatekeeper (embedded gear.Server, its local worker,
real git, shell jobs): a running build followed to its end, the exit status its result;
the finished log compressed at rest and read back the same."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import requests

from e2e_helpers import admin, admin_pipeline, finished, make_repo, start_gatekeeper, wait_for, \
    write_layout

PROJECTS = """
projects:
  - name: org/app
    check: [slow]
"""
SCRIPTS = {"slow.sh": """
    i=0
    while [ $i -lt 300 ]; do echo "before hold $i: $ZUUL_PROJECT"; i=$((i+1)); done
    while [ ! -f "$HOLD_FILE" ]; do sleep 0.05; done
    echo "after hold"
    if [ -f fail-me ]; then echo "failing on purpose"; exit 1; fi
    echo "done"
    """}


def jobs(hold) -> str:
    return f"""
jobs:
  - name: slow
    run: scripts/slow.sh
    parameters:
      HOLD_FILE: {hold}
"""


@pytest.fixture
def gatekeeper(tmp_path):
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}, 2: {"fail-me": "x\n"}})
    hold = tmp_path / "release"
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), PROJECTS, jobs(hold),
                                     SCRIPTS)
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos)
    gk.hold = hold
    yield gk
    gk.stop()


def logs_cli(gk, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ccci_gate.cli", "logs", *args,
                             "--url", gk.web_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def follow(gk, build: str) -> tuple[subprocess.Popen, bytearray, threading.Thread]:
    """``ccci-gate logs -f build``, its output gathered as it comes by a reader thread."""
    follower = logs_cli(gk, "-f", build)
    seen = bytearray()

    def read() -> None:
        while chunk := follower.stdout.read1(65536):
            seen.extend(chunk)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return follower, seen, reader


def running_build(gk) -> str:
    def find():
        for p in gk.scheduler.status()["pipelines"]:
            for q in p["queues"]:
                for item in q["items"]:
                    for job in item["jobs"]:
                        if job.get("id") and job["state"] == "RUNNING":
                            return job["id"]
    return wait_for(find, 60, "a running build")


@pytest.mark.parametrize("change,result,code", [(1, "SUCCESS", 0), (2, "FAILURE", 1)])
def test_follow_a_running_build_to_its_end(gatekeeper, change, result, code):
    gk = gatekeeper
    assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app",
                                        "change": change}).status_code == 202
    build = running_build(gk)
    url = f"{gk.web_url}/logs/{build}"
    wait_for(lambda: b"before hold 299" in requests.get(url, timeout=10).content, 60,
             "the first part of the log")
    follower, seen, reader = follow(gk, build)
    wait_for(lambda: b"before hold 299" in seen, 30, "the follower to print the first part")
    assert follower.poll() is None, "it must wait while the build runs"
    assert b"after hold" not in seen
    gk.hold.write_text("go")
    assert follower.wait(60) == code
    reader.join(10)
    stderr = follower.stderr.read().decode()
    assert f"build {build}: {result}" in stderr
    [item] = finished(gk)
    assert item["jobs"][0]["result"] == result
    wait_for(lambda: gk.logs.state(build) == "finished", 30, "the log to be compressed")
    assert not gk.logs.plain(build).exists()
    whole = requests.get(url, timeout=10).content   # requests un-gzips the stored bytes
    assert bytes(seen) == whole, "the follower printed the whole log, each byte once"
    assert whole.startswith(b"build ") and b"after hold" in whole
    assert whole.rstrip().endswith(f"result: {result}".encode())
    # following a build that finished long ago: one read, and the result
    again = logs_cli(gk, "-f", build)
    out, err = again.communicate(timeout=60)
    assert again.returncode == code and out == whole and f": {result}" in err.decode()
    plain = logs_cli(gk, build)
    out, _ = plain.communicate(timeout=60)
    assert plain.returncode == 0 and out == whole


def test_logs_of_an_unknown_build_exit_2_with_the_reason(gatekeeper):
    proc = logs_cli(gatekeeper, "-f", "0" * 32)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == b"" and "no such build" in err.decode()


def test_a_follower_waits_out_a_gatekeeper_restart(tmp_path):
    """The gatekeeper restarts under a followed build (a ``ccci-gate worker`` process on
    the embedded server's port): the follower waits, then follows the build on to its
    end, and prints the whole log once."""
    from e2e_helpers import free_port, worker_process
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}})
    hold = tmp_path / "release"
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), PROJECTS, jobs(hold),
                                     SCRIPTS)
    web, gearman = free_port(), free_port()
    settings = {"listen": f"127.0.0.1:{web}", "gearman-listen": f"127.0.0.1:{gearman}",
                "worker": {"enabled": False}}
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, **settings)
    worker = worker_process(f"127.0.0.1:{gearman}", jobs_dir, tmp_path / "wd", "w1")
    follower = None
    try:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        build = running_build(gk)
        follower, seen, reader = follow(gk, build)
        wait_for(lambda: b"before hold 299" in seen, 60, "the follower to print the first part")
        gk.stop()
        time.sleep(2)   # the follower finds nobody listening for a few polls
        gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, **settings)
        # the worker lost its server and aborted the build; the restarted gatekeeper runs
        # it again under its own id, into the same log
        wait_for(lambda: seen.count(b"before hold 299") == 2, 90, "the build to run again")
        hold.write_text("go")
        assert follower.wait(60) == 0
        reader.join(10)
        stderr = follower.stderr.read().decode()
        assert stderr.count("the gatekeeper does not answer") == 1, stderr
        assert f"build {build}: SUCCESS" in stderr
        wait_for(lambda: gk.logs.state(build) == "finished", 30, "the log to be compressed")
        assert bytes(seen) == requests.get(f"{gk.web_url}/logs/{build}", timeout=10).content
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
        os.killpg(worker.pid, 15)
        worker.wait(10)
        gk.stop()
