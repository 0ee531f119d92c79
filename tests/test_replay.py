"""``ccci-gate replay``: a past build run again on a real worker (a ``ccci-gate worker``
process) through a real Gearman server (gear.Server, then Debian's gearmand), and
``--print``: commands that run it by hand, run here with ``sh``. Secret parameters are
never stored or printed; a replay takes fresh ones from its environment or refuses."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from e2e_helpers import (admin, admin_pipeline, finished, make_repo, start_gatekeeper,
                         worker_process, write_layout)

SECRET = "pw-1234-very-secret"
PROJECTS = """
projects:
  - name: org/app
    check: [hello]
"""
JOBS = f"""
jobs:
  - name: hello
    run: scripts/hello.sh
    parameters:
      GREETING: "it's $(echo not run) `date` ; 'quoted'"
      DEPLOY_PASSWORD: {SECRET}
"""
SCRIPTS = {"hello.sh": """
    echo "greeting=$GREETING"
    test "$DEPLOY_PASSWORD" = "%s" && echo password-ok
    echo "head: $(git log -1 --format=%%s)"
    if [ -f fail-me ]; then echo "failing on purpose"; exit 1; fi
    """ % SECRET}


@pytest.fixture
def world(tmp_path, gearman_server):
    host, port = gearman_server
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}, 2: {"fail-me": "x\n"}})
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), PROJECTS, JOBS, SCRIPTS)
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, gearman=[f"{host}:{port}"],
                          worker={"enabled": False})
    worker = worker_process(f"{host}:{port}", jobs_dir, tmp_path / "workdir", "replayer")
    yield gk, f"{host}:{port}", jobs_dir, tmp_path
    os.killpg(worker.pid, 15)
    worker.wait(10)
    gk.stop()


def ccci(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DEPLOY_PASSWORD"}
    return subprocess.run([sys.executable, "-m", "ccci_gate.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**environ, **(env or {})}, cwd=cwd)


def test_replay_on_a_worker_and_by_hand(world):
    gk, gearman, jobs_dir, tmp = world
    admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
    [item] = finished(gk)
    assert item["result"] == "SUCCESS", item
    build = item["jobs"][0]["id"]
    record = requests.get(f"{gk.web_url}/builds/{build}.json", timeout=10)
    assert SECRET not in record.text and "CCCI_RESULT_TOKEN\": \"" not in record.text
    data = record.json()
    assert data["function"] == "build:hello" and data["job_config"]["kind"] == "shell"
    assert {"DEPLOY_PASSWORD", "CCCI_RESULT_TOKEN"} <= set(data["secrets"])
    assert data["parameters"]["ZUUL_PROJECT"] == "org/app"
    assert "DEPLOY_PASSWORD" not in data["parameters"]
    assert requests.get(f"{gk.web_url}/builds/{'0' * 32}.json", timeout=10).status_code == 404

    # on a worker: refused without the secret, run with a fresh one
    refused = ccci("replay", build, "--url", gk.web_url, "--gearman", gearman)
    assert refused.returncode == 2 and "DEPLOY_PASSWORD" in refused.stderr
    assert "set them in the environment" in refused.stderr and refused.stdout == ""
    run = ccci("replay", build, "--url", gk.web_url, "--gearman", gearman,
               env={"DEPLOY_PASSWORD": SECRET})
    assert run.returncode == 0, run.stderr
    assert "greeting=it's $(echo not run) `date` ; 'quoted'" in run.stdout
    assert "password-ok" in run.stdout and "head: change 1" in run.stdout
    assert "running on replayer" in run.stderr and f"of build {build}: SUCCESS" in run.stderr
    assert SECRET not in run.stdout + run.stderr
    assert len(gk.store.history()) == 1, "the gatekeeper never hears of a replay"

    # by hand: the printed commands, run by sh, do the same; no secret value in them
    printed = ccci("replay", build, "--print", "--url", gk.web_url, "--jobs", str(jobs_dir),
                   env={"DEPLOY_PASSWORD": SECRET})
    assert printed.returncode == 0, printed.stderr
    script = printed.stdout
    assert SECRET not in script and "CCCI_RESULT_TOKEN" not in script
    assert "export GREETING=" in script
    by_hand = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120,
                             cwd=tmp, env={"PATH": os.environ["PATH"], "DEPLOY_PASSWORD": SECRET,
                                           "HOME": str(tmp)})
    assert by_hand.returncode == 0, by_hand.stderr
    assert "greeting=it's $(echo not run) `date` ; 'quoted'" in by_hand.stdout
    assert "password-ok" in by_hand.stdout and "head: change 1" in by_hand.stdout
    without = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120,
                             cwd=tmp, env={"PATH": os.environ["PATH"], "HOME": str(tmp)})
    assert without.returncode != 0 and "DEPLOY_PASSWORD is a secret" in without.stderr


def test_replay_of_a_failing_build_exits_1_and_an_unknown_one_2(world):
    gk, gearman, _jobs_dir, _tmp = world
    admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 2})
    [item] = finished(gk)
    build = item["jobs"][0]["id"]
    run = ccci("replay", build, "--url", gk.web_url, "--gearman", gearman,
               env={"DEPLOY_PASSWORD": SECRET})
    assert run.returncode == 1 and "failing on purpose" in run.stdout
    assert f"of build {build}: FAILURE" in run.stderr
    unknown = ccci("replay", "0" * 32, "--url", gk.web_url, "--gearman", gearman)
    assert unknown.returncode == 2 and "no such build" in unknown.stderr
