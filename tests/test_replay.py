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
    if [ "$DEPLOY_PASSWORD" = wait-forever-please ]; then
        echo "blocking pid $$"; while true; do sleep 0.1; done
    fi
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
    assert data["replay"] == f"ccci-gate replay {build} --url {gk.web_url}"
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


def blocking_replay(gk, gearman: str, build: str | None = None,
                    *extra: str) -> tuple[subprocess.Popen, str]:
    """Replay ``build`` (default: run change 1 through check and take its build) with a
    DEPLOY_PASSWORD that makes the job block until it is stopped; stdout and stderr piped."""
    if build is None:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        [item] = finished(gk)
        build = item["jobs"][0]["id"]
    environ = {k: v for k, v in os.environ.items() if k != "DEPLOY_PASSWORD"}
    return subprocess.Popen(
        [sys.executable, "-m", "ccci_gate.cli", "replay", build, "--url", gk.web_url,
         "--gearman", gearman, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**environ, "DEPLOY_PASSWORD": "wait-forever-please"}), build


def test_an_interrupted_replay_stops_its_build_on_the_worker(world):
    import re
    import signal
    import time
    gk, gearman, _jobs_dir, _tmp = world
    replay, build = blocking_replay(gk, gearman)
    line = replay.stdout.readline().decode()
    while "blocking pid" not in line:
        assert line, replay.stderr.read().decode()
        line = replay.stdout.readline().decode()
    pid = int(re.search(r"blocking pid (\d+)", line).group(1))
    assert os.path.exists(f"/proc/{pid}")
    replay.send_signal(signal.SIGINT)
    assert replay.wait(30) == 130
    assert "asked replayer to stop build" in replay.stderr.read().decode()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), "the build still runs on the worker"
    # past --timeout: the same
    timed, _ = blocking_replay(gk, gearman, build, "--timeout", "3")
    timed.stdout, timed.stderr = (text.decode() for text in timed.communicate(timeout=60))
    assert timed.returncode == 2 and "no result within 3 s" in timed.stderr
    assert "asked replayer to stop build" in timed.stderr
    pid = int(re.search(r"blocking pid (\d+)", timed.stdout).group(1))
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), "the timed-out build still runs on the worker"


def test_replay_on_a_tls_pool_submits_with_the_gatekeepers_certificate(tmp_path):
    """A pool on TLS (the embedded server's ACL): a replay submits with the gatekeeper's
    certificate (``--tls-dir STATE_DIR/tls``); a worker's certificate may not submit."""
    from ccci_gate import pki
    from waiting import free_port
    tls_dir = tmp_path / "state" / "tls"
    pki.init(tls_dir)
    (tmp_path / "w1").mkdir()
    csr = pki.request("w1", tmp_path / "w1")
    (tmp_path / "w1" / "worker.crt").write_bytes(pki.sign(csr.read_bytes(), tls_dir))
    (tmp_path / "w1" / "ca.crt").write_bytes((tls_dir / "ca.crt").read_bytes())
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), PROJECTS, JOBS, SCRIPTS)
    port = free_port()
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, worker={"enabled": False},
                          **{"gearman-listen": f"127.0.0.1:{port}",
                             "gearman-tls-dir": str(tls_dir)})
    worker = subprocess.Popen(
        [sys.executable, "-m", "ccci_gate.cli", "worker", "--gearman", f"127.0.0.1:{port}",
         "--jobs", str(jobs_dir), "--workdir", str(tmp_path / "wd"), "--name", "w1",
         "--tls-dir", str(tmp_path / "w1")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        [item] = finished(gk)
        assert item["result"] == "SUCCESS", item
        build = item["jobs"][0]["id"]
        env = {"DEPLOY_PASSWORD": SECRET}
        run = ccci("replay", build, "--url", gk.web_url, "--gearman", f"127.0.0.1:{port}",
                   "--tls-dir", str(tls_dir), env=env)
        assert run.returncode == 0 and "password-ok" in run.stdout, run.stderr
        plain = ccci("replay", build, "--url", gk.web_url, "--gearman", f"127.0.0.1:{port}",
                     "--timeout", "20", env=env)
        assert plain.returncode == 2 and "password-ok" not in plain.stdout
        assert "(a pool on TLS? pass --tls-dir)" in plain.stderr
        as_worker = ccci("replay", build, "--url", gk.web_url, "--gearman", f"127.0.0.1:{port}",
                         "--tls-dir", str(tmp_path / "w1"), "--tls-name", "worker",
                         "--timeout", "20", env=env)
        assert as_worker.returncode == 2 and "password-ok" not in as_worker.stdout
        assert "only the gatekeeper's certificate submit" in as_worker.stderr
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(10)
        gk.stop()
