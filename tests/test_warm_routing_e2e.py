"""A whole gatekeeper routes a quick build of an enrolled recipe to the worker that holds
its canonical, and ``/status.json`` shows that worker's canonicals: the engine's
preference (``warm_preference``), the handoff, the dispatcher, two real ``WorkerDaemon``s
on the gatekeeper's gear.Server, the HTTP API. As in ``test_warm_routing.py`` the
canonical is written on disk and ``recipe-systest`` only says what the quick lane would
find on the worker that runs it."""
from __future__ import annotations

import threading

import pytest
import requests

from ccci_gate.core.layout import JobConfig
from ccci_gate.worker import kinds
from ccci_gate.worker.daemon import WorkerDaemon

from e2e_helpers import admin, finished, make_repo, start_gatekeeper, wait_for, write_layout
from test_warm_routing import Where, fake_canonical

PIPELINES = """
pipelines:
  - name: quick
    quick: true
    trigger:
      admin: []
    success:
      log: {}
    failure:
      log: {}
"""
PROJECTS = """
projects:
  - name: org/hello
    warm: true
    quick: [systest]
  - name: org/plain
    quick: [systest]
"""
JOBS = """
jobs:
  - name: systest
    kind: recipe-systest
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "recipe-systest", Where())
    repos = tmp_path / "repos"
    for project in ("org/hello", "org/plain"):
        make_repo(repos, project, {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(tmp_path, PIPELINES, PROJECTS, JOBS, {})
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, worker={"enabled": False})
    fake_canonical(tmp_path / "warm-a", "hello")
    jobs = {"systest": JobConfig("systest", kind="recipe-systest")}
    daemons = [WorkerDaemon(gk.servers, name, jobs, [], tmp_path / f"w-{name}", jobs_dir,
                            swarm=lambda: None, warm_root=tmp_path / root)
               for name, root in (("warm", "warm-a"), ("cold", "warm-b"))]
    for daemon in daemons:
        threading.Thread(target=daemon.run_forever, daemon=True).start()
    wait_for(lambda: gk.dispatcher.pool(max_age=0)["functions"].get("build:systest", {})
             .get("workers", 0) >= 2, 30, "two workers")
    yield gk
    for daemon in daemons:
        daemon.shutdown()
    gk.stop()


def systest_of(item) -> dict:
    return [j for j in item["jobs"] if j["name"] == "systest"][0]


def test_quick_build_of_an_enrolled_recipe_runs_where_its_canonical_is(world):
    gk = world
    status = requests.get(gk.web_url + "/status.json", timeout=10).json()
    assert status["pool"]["warm"] == [{"worker": "warm", "recipe": "hello", "reported": None,
                                       "registered": True}]
    for n in range(3):
        admin(gk, "/admin/enqueue", {"pipeline": "quick", "project": "org/hello", "change": 1})
        items = finished(gk, n + 1)
        job = systest_of(items[-1])
        log = requests.get(job["log_url"], timeout=10).text
        assert job["result"] == "SUCCESS" and job["worker"] == "warm", log
        assert log.startswith("dispatch: as build:systest:warm:hello: a worker labelled "
                              "warm:hello holds the canonical\n"), log
        assert "canonical here: usable" in log

    admin(gk, "/admin/enqueue", {"pipeline": "quick", "project": "org/plain", "change": 1})
    plain = systest_of(finished(gk, 4)[-1])
    log = requests.get(plain["log_url"], timeout=10).text
    assert "dispatch:" not in log           # not enrolled: no preference, any worker
    assert "the project is not enrolled" in log

    def reported():   # the status's pool is at most POOL_MAX_AGE (2 s) old
        rows = requests.get(gk.web_url + "/status.json", timeout=10).json()["pool"]["warm"]
        return rows if rows and rows[0].get("reported") else None
    [row] = wait_for(reported, 10, "the warm worker's report in /status.json")
    assert (row["worker"], row["recipe"], row["version"], row["status"], row["registered"]) == \
        ("warm", "hello", "1.1.0+1", "ready", True)
    assert row["bytes"] > 10240 and row["last_good"]["commit"] == "abc12345"
