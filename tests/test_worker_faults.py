"""Workers under faults: a SIGKILLed worker's build processes die with it and its build
waits for a worker; a restarted worker reaps what a dead one left; logs stream while a
build is silent; a host without a swarm does not offer Swarm jobs; an infra ERROR is
retried."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ccci_gate.config.loader import load_layout
from ccci_gate.worker import process
from ccci_gate.worker.daemon import WorkerDaemon

from e2e_helpers import (admin, admin_pipeline, finished, make_repo, start_gatekeeper, wait_for,
                         worker_process, write_layout)

PIPELINES = admin_pipeline("check")
PROJECTS = """
projects:
  - name: org/app
    check: [hang]
"""


def hang_job(pidfile: Path, attempts: int = 3, run: str = "scripts/hang.sh") -> str:
    return f"""
jobs:
  - name: hang
    run: {run}
    attempts: {attempts}
    parameters:
      PIDFILE: {pidfile}
"""


HANG = {"hang.sh": """
    echo "attempt $BUILD_ATTEMPT on the way"
    echo $$ >> "$PIDFILE"
    if [ "$BUILD_ATTEMPT" = 1 ]; then
      sleep 300 &
      echo $! >> "$PIDFILE"
      setsid sh -c 'echo $$ >> "$PIDFILE"; exec sleep 300' &
      wait
    fi
    echo done
    """}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pids(pidfile: Path) -> list[int]:
    return [int(x) for x in pidfile.read_text().split()] if pidfile.exists() else []


@pytest.fixture
def world(tmp_path):
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}})
    return tmp_path, repos


def test_a_sigkilled_workers_build_dies_with_it_and_waits_for_the_next_worker(world):
    tmp, repos = world
    pidfile = tmp / "pids"
    layouts, jobs_dir = write_layout(tmp, PIPELINES, PROJECTS, hang_job(pidfile), HANG)
    gk = start_gatekeeper(tmp, layouts, jobs_dir, repos, worker={"enabled": False})
    servers = ",".join(f"{h}:{p}" for h, p in gk.servers)
    workdir = tmp / "host-workspaces"
    first = worker_process(servers, jobs_dir, workdir, "w1")
    second = None
    try:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        wait_for(lambda: len(pids(pidfile)) >= 3, 60, "the build and its children")
        time.sleep(1)   # its log streams within a second: the first attempt's log is kept
        os.killpg(first.pid, signal.SIGKILL)   # the worker only: the build has its own session
        first.wait(10)
        wait_for(lambda: not any(alive(p) for p in pids(pidfile)), 15, "no orphan left")
        time.sleep(2)   # one-worker pool, no worker now: the retry waits (grace), no verdict
        assert gk.store.history() == []
        second = worker_process(servers, jobs_dir, workdir, "w2")
        [item] = finished(gk, timeout=60)
        job = item["jobs"][0]
        assert item["result"] == "SUCCESS" and job["attempt"] == 2 and job["worker"] == "w2"
        # the item links both attempts' logs; the first one's says what it was
        assert len(job["logs"]) == 2 and job["logs"][-1] == job["log_url"]
        assert "attempt 1 on the way" in requests.get(job["logs"][0], timeout=10).text
        # the worker removes a build's workspace right after it sends the result
        wait_for(lambda: [p.name for p in workdir.iterdir() if not p.name.startswith(".")] == [],
                 10, "no workspace left")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
        gk.stop()


def test_a_restarting_worker_reaps_what_a_dead_one_left(tmp_path):
    workdir = tmp_path / "w"
    dead = workdir / process.INSTANCES / "deadbeefdeadbeef"
    dead.mkdir(parents=True)
    (dead / "lock").write_text("12345\n")       # nobody holds its lock: its worker is gone
    b1, stray, mine = "b1" * 16, "5" * 32, "ee" * 16
    (dead / b1).touch()
    (workdir / b1).mkdir()                        # its workspace
    (workdir / stray).mkdir()                     # a workspace claimed by nobody
    (workdir / "notes").mkdir()                   # not a workspace: left alone
    env = {**os.environ, process.TOKEN_ENV: "deadbeefdeadbeef"}
    orphan = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    wait_for(lambda: process.processes_with_token("deadbeefdeadbeef"), 10, "sleep running")
    live = process.Instance.of(workdir)              # a live worker's running build stays
    live.claim(mine)
    (workdir / mine).mkdir()
    try:
        killed, removed = process.reap_leftovers(workdir)
        assert orphan.wait(10) == -signal.SIGKILL
        assert killed == 1 and removed == 2
        assert sorted(p.name for p in workdir.iterdir()) == [".instances", mine, "notes"]
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_log_lines_reach_the_gatekeeper_while_the_build_is_silent(world):
    tmp, repos = world
    hold = tmp / "release"
    scripts = {"hang.sh": f"""
        echo first-line
        while [ ! -f {hold} ]; do sleep 0.05; done
        """}
    layouts, jobs_dir = write_layout(tmp, PIPELINES, PROJECTS, hang_job(tmp / "p"), scripts)
    gk = start_gatekeeper(tmp, layouts, jobs_dir, repos)
    try:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        logs = tmp / "state" / "logs"
        # the script says nothing more until released: the line must come on its own
        wait_for(lambda: any("first-line" in p.read_text() for p in logs.glob("*.log")), 10,
                 "the first line in the gatekeeper's log")
        hold.write_text("go")
        [item] = finished(gk)
        assert item["result"] == "SUCCESS"
    finally:
        gk.stop()


def test_an_infra_error_is_retried_up_to_the_jobs_attempts(world):
    tmp, repos = world
    layouts, jobs_dir = write_layout(tmp, PIPELINES, PROJECTS,
                                     hang_job(tmp / "p", attempts=2, run="scripts/missing.sh"),
                                     {"other.sh": "true\n"})
    gk = start_gatekeeper(tmp, layouts, jobs_dir, repos)
    try:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        [item] = finished(gk)
        job = item["jobs"][0]
        assert job["result"] == "RETRY_LIMIT" and job["attempt"] == 2, job
        assert "infra ERROR" in job["message"]
    finally:
        gk.stop()


def test_a_host_without_an_active_swarm_does_not_offer_swarm_jobs(tmp_path):
    jobs = load_layout([Path(__file__).parent.parent / "jobs"]).jobs
    daemon = WorkerDaemon([("127.0.0.1", 1)], "noswarm", jobs, [], tmp_path / "w",
                          tmp_path, swarm=lambda: "no docker command on this host")
    try:
        functions = daemon.functions()
        assert "build:build" in functions and "build:publish" in functions
        assert "build:install" not in functions and "build:systest" not in functions
        assert daemon.swarm_problem == "no docker command on this host"
    finally:
        daemon.shutdown()


def test_a_worker_without_docker_says_why_at_start(tmp_path):
    """The real check, with no docker command on PATH."""
    env = {**os.environ, "PATH": "/nonexistent"}
    code = ("import logging,sys; logging.basicConfig(stream=sys.stdout);"
            "from pathlib import Path; from ccci_gate.config.loader import load_layout;"
            "from ccci_gate.worker.daemon import WorkerDaemon;"
            f"d=WorkerDaemon([('127.0.0.1',1)],'x',load_layout([Path({str(Path(__file__).parent.parent / 'jobs')!r})]).jobs,"
            f"[],Path({str(tmp_path / 'w')!r}),Path('.')); print(d.functions()); d.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert ("does not register build:install, build:sweep, build:systest: no docker command"
            in out.stdout)
    assert "'build:install'" not in out.stdout.splitlines()[-1]


def test_secrets_are_redacted_even_when_written_in_pieces(world):
    tmp, repos = world
    jobs = """
jobs:
  - name: hang
    run: scripts/hang.sh
    parameters:
      API_TOKEN: s3cr3t-value-1234
"""
    scripts = {"hang.sh": """
        echo "token: $API_TOKEN"
        printf 'split: s3cr3t-val'; sleep 0.05; printf 'ue-1234 end\\n'
        """}
    layouts, jobs_dir = write_layout(tmp, PIPELINES, PROJECTS, jobs, scripts)
    gk = start_gatekeeper(tmp, layouts, jobs_dir, repos)
    try:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        [item] = finished(gk)
        log = requests.get(item["jobs"][0]["log_url"], timeout=10).text
        assert "token: ***" in log and "split: *** end" in log, log
        assert "s3cr3t" not in log
    finally:
        gk.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_hooks_background_processes_end_with_it_and_a_timeout_kills_them_all(tmp_path):
    """``process.run`` (how a recipe's hooks run): nothing the hook starts outlives it."""
    hook = tmp_path / "hook"
    hook.write_text("#!/bin/sh\nsleep 300 &\necho $! > \"$1\"\nsetsid sleep 300 &\n"
                    "echo $! >> \"$1\"\necho seeded; echo oops >&2\n[ -n \"$2\" ] && sleep 300\n"
                    "exit 3\n")
    hook.chmod(0o755)
    pids = tmp_path / "pids"
    status, output = process.run([str(hook), str(pids)], tmp_path, {"PATH": os.environ["PATH"]}, 30)
    assert (status, output) == (3, "seeded\noops\n")
    started = [int(p) for p in pids.read_text().split()]
    wait_for(lambda: not any(_alive(p) for p in started), 5, "the hook's background sleeps to end")
    started_at = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        process.run([str(hook), str(pids), "hang"], tmp_path, {"PATH": os.environ["PATH"]}, 1)
    assert time.monotonic() - started_at < 10
    started = [int(p) for p in pids.read_text().split()]
    wait_for(lambda: not any(_alive(p) for p in started), 5, "everything the hung hook started to end")
