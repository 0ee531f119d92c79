"""The whole gatekeeper on real components: embedded gear.Server or Debian's gearmand, real
git repositories, the merger's refs fetched over HTTP, shell jobs, SQLite, the HTTP API."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest
import requests

from e2e_helpers import (admin, admin_pipeline, finished, job_results, make_repo,
                         start_gatekeeper, wait_for, worker_process, write_layout)

PIPELINES = admin_pipeline("check")
PROJECTS = """
projects:
  - name: org/recipe
    check: [build, publish, install, systest]
"""
JOBS = """
jobs:
  - name: build
    run: scripts/build.sh
  - name: publish
    run: scripts/ok.sh
    requires: build
  - name: install
    run: scripts/install.sh
    requires: publish
  - name: systest
    run: scripts/ok.sh
    requires: install
"""
SCRIPTS = {
    "build.sh": """
        echo "project=$ZUUL_PROJECT change=${ZUUL_CHANGE:-} ref=$ZUUL_REF"
        git log --format='commit %H %s'
        test -f compose.yml
        """,
    "ok.sh": "echo ok\n",
    "install.sh": """
        if [ -f fail-install ]; then echo "install failed" >&2; exit 1; fi
        if [ -n "${HOLD_FILE:-}" ]; then while [ ! -f "$HOLD_FILE" ]; do sleep 0.05; done; fi
        echo installed
        """,
}


@pytest.fixture
def world(tmp_path):
    repos = tmp_path / "repos"
    make_repo(repos, "org/recipe", {1: {"README.md": "one\n"}, 2: {"fail-install": "x\n"}})
    layouts, jobs_dir = write_layout(tmp_path, PIPELINES, PROJECTS, JOBS, SCRIPTS)
    return tmp_path, layouts, jobs_dir, repos


@pytest.fixture
def gatekeeper(world):
    gk = start_gatekeeper(*world)
    yield gk
    gk.stop()


def test_change_runs_the_graph_on_its_speculative_ref_and_logs_are_served(gatekeeper):
    resp = admin(gatekeeper, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe",
                                                "change": 1})
    assert resp.status_code == 202, resp.text
    [item] = finished(gatekeeper)
    assert item["result"] == "SUCCESS"
    assert job_results(item) == {"build": "SUCCESS", "publish": "SUCCESS",
                                 "install": "SUCCESS", "systest": "SUCCESS"}
    build = item["jobs"][0]
    log = requests.get(build["log_url"], timeout=10).text
    assert "project=org/recipe change=1 ref=refs/zuul/main/Z" in log
    assert "change 1" in log and "base" in log  # the PR commit merged onto main
    status = requests.get(gatekeeper.web_url + "/status.json", timeout=10).json()
    assert [p["name"] for p in status["pipelines"]] == ["check"]
    assert "build:build" in status["pool"]["functions"]


def test_failed_parent_skips_descendants_which_never_reach_a_worker(gatekeeper):
    admin(gatekeeper, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe", "change": 2})
    [item] = finished(gatekeeper)
    assert item["result"] == "FAILURE"
    assert job_results(item) == {"build": "SUCCESS", "publish": "SUCCESS",
                                 "install": "FAILURE", "systest": "SKIPPED"}
    skipped = [j for j in item["jobs"] if j["name"] == "systest"][0]
    assert skipped["started_at"] is None and skipped["worker"] in ("", None)
    log = requests.get([j for j in item["jobs"] if j["name"] == "install"][0]["log_url"],
                       timeout=10).text
    assert "install failed" in log


def test_bad_admin_requests_get_clear_errors(gatekeeper):
    assert admin(gatekeeper, "/admin/enqueue", {"pipeline": "nope", "project": "org/recipe",
                                                "change": 1}).status_code == 400
    assert admin(gatekeeper, "/admin/enqueue", {"pipeline": "check", "project": "org/other",
                                                "change": 1}).status_code == 400
    unauth = requests.post(gatekeeper.web_url + "/admin/enqueue", json={}, timeout=10)
    assert unauth.status_code == 401
    assert requests.get(gatekeeper.web_url + "/logs/../../etc/passwd", timeout=10).status_code == 404


def test_invalid_reload_is_rejected_and_live_reload_keeps_builds_in_flight(world, tmp_path):
    tmp, layouts, jobs_dir, repos = world
    hold = tmp / "release"
    jobs_yaml = jobs_dir / "jobs.yaml"
    jobs_yaml.write_text(jobs_yaml.read_text().replace(
        "run: scripts/install.sh\n", f"run: scripts/install.sh\n    parameters:\n      HOLD_FILE: {hold}\n"))
    gk = start_gatekeeper(tmp, layouts, jobs_dir, repos)
    try:
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe", "change": 1})
        wait_for(lambda: any(j["name"] == "install" and j["state"] == "RUNNING"
                             for p in gk.scheduler.status()["pipelines"] for q in p["queues"]
                             for i in q["items"] for j in i["jobs"]), what="install running")
        good = (layouts / "main.yaml").read_text()
        (layouts / "main.yaml").write_text(good.replace("manager: independent", "manager: bogus"))
        resp = admin(gk, "/admin/reconfigure", {})
        assert resp.status_code == 400
        assert any("main.yaml" in e for e in resp.json()["errors"])
        (layouts / "main.yaml").write_text(good.replace("name: check", "name: check\n    description: reloaded"))
        assert admin(gk, "/admin/reconfigure", {}).status_code == 200
        wait_for(lambda: gk.scheduler.status()["pipelines"][0]["description"] == "reloaded",
                 what="new layout in force")
        hold.write_text("go")
        [item] = finished(gk)
        assert item["result"] == "SUCCESS"
    finally:
        gk.stop()


def _servers(gk) -> str:
    host, port = gk.servers[0]
    return f"{host}:{port}"


@pytest.fixture
def server_kind(gearman_server):
    """The gatekeeper on an external server: a gear.Server, then Debian's gearmand."""
    host, port = gearman_server
    return {"gearman": [f"{host}:{port}"]}


def test_remote_worker_fetches_the_ref_over_http_and_survives_a_sigkilled_peer(world, server_kind):
    """Two worker processes; the one running install is SIGKILLed mid-build; the build is
    retried on the other and the change passes — on gear.Server and on gearmand."""
    tmp, layouts, jobs_dir, repos = world
    hold = tmp / "release"
    jobs_yaml = jobs_dir / "jobs.yaml"
    jobs_yaml.write_text(jobs_yaml.read_text().replace(
        "run: scripts/install.sh\n", f"run: scripts/install.sh\n    parameters:\n      HOLD_FILE: {hold}\n"))
    gk = start_gatekeeper(tmp, layouts, jobs_dir, repos, worker={"enabled": False}, **server_kind)
    workers = [worker_process(_servers(gk), jobs_dir, tmp / f"w{i}", f"w{i}") for i in (1, 2)]
    try:
        wait_for(lambda: gk.dispatcher.pool().get("functions", {}).get("build:install", {})
                 .get("workers", 0) >= 2, 30, "two workers registered")
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe", "change": 1})

        def running_install():
            for p in gk.scheduler.status()["pipelines"]:
                for q in p["queues"]:
                    for i in q["items"]:
                        for j in i["jobs"]:
                            if j["name"] == "install" and j["state"] == "RUNNING" and j["worker"]:
                                return j["worker"]
            return None
        victim = wait_for(running_install, 60, "install running on a worker")
        proc = workers[0] if victim.startswith("w1") else workers[1]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        hold.write_text("go")
        [item] = finished(gk, timeout=90)
        assert item["result"] == "SUCCESS", item
        install = [j for j in item["jobs"] if j["name"] == "install"][0]
        assert not install["worker"].startswith(victim[:2])
        log = requests.get(item["jobs"][0]["log_url"], timeout=10).text
        assert "change 1" in log
    finally:
        for proc in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        gk.stop()
