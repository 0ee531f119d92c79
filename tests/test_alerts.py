"""The open alerts (``ccci_gate/alerts.py``): each kind appears in ``/status.json`` and in
``ccci_alerts_open{kind}`` while its condition holds, and goes away when it ends, against
a real gatekeeper (embedded gear.Server, its local worker running shell jobs, a second
worker process, SQLite, git, a fake Gitea that is down, then back)."""
from __future__ import annotations

import json

import pytest
import requests

from ccci_gate import alerts
from ccci_gate.alerts import KINDS, Alert, open_alerts

from e2e_helpers import (admin, git, make_repo, start_gatekeeper, wait_for, worker_process,
                         write_layout)
from fake_gitea import FakeGitea
from test_gatekeeper_e2e import JOBS, PIPELINES, SCRIPTS
from test_metrics import scrape, value

GITEA_PIPELINES = PIPELINES.replace("log: {}", "log: {}\n      gitea: {}")
PROJECTS = """
projects:
  - name: org/recipe
    check: [build]
  - name: org/gpu
    check: [gpu]
"""
GPU_JOBS = JOBS + """
  - name: gpu
    run: scripts/ok.sh
    label: gpu
"""


def test_open_alerts_from_plain_data():
    status = {"pipelines": [{"name": "gate", "paused": True}, {"name": "check", "paused": False}]}
    pool = {"functions": {"build:a": {"queued": 2, "workers": 0},
                          "build:b": {"queued": 1, "workers": 1},
                          "stop:w1": {"queued": 1, "workers": 0}},
            "held_functions": {"build:a": 1, "build:c:gpu": 3}}
    # the default: a write waiting over 10 minutes (as doc/operating.md says)
    outboxes = {"gitea": (4, 100.0), "gerrit": (1, 1000.0 - 599), "idle": (0, None)}
    broken = [{"recipe": "hello", "status": "broken", "why": "restore failed", "time": 7.0}]
    got = open_alerts(status, pool, outboxes, broken, now=1000.0)
    assert got == [
        Alert("pipeline_paused", "warning", "pipeline gate is paused: its items wait"),
        Alert("no_worker", "critical", "build:a: 3 build(s) wait, no worker registered"),
        Alert("no_worker", "critical", "build:c:gpu: 3 build(s) wait, no worker registered"),
        Alert("warm_broken", "warning", "warm canonical of hello is broken (restore failed): "
                                        "quick runs fall back to cold", 7.0),
        Alert("outbox_stuck", "warning",
              "connection gitea: 4 write(s) wait in the outbox, the oldest for 15 min", 100.0)]
    assert {a.kind for a in got} <= set(KINDS)
    assert open_alerts({}, {}, {}, (), now=0.0) == []


@pytest.fixture
def world(tmp_path, monkeypatch):
    repos = tmp_path / "repos"
    make_repo(repos, "org/recipe", {1: {"README.md": "one\n"}})
    make_repo(repos, "org/gpu", {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(tmp_path, GITEA_PIPELINES, PROJECTS, GPU_JOBS, SCRIPTS)
    warm = tmp_path / "warm"
    (warm / "hello").mkdir(parents=True)
    (warm / "hello" / "record.json").write_text(json.dumps(
        {"recipe": "hello", "status": "broken", "why": "restore failed", "time": 1234.0}))
    monkeypatch.setenv("CCCI_WARM_ROOT", str(warm))
    monkeypatch.setattr(alerts, "WARM_MAX_AGE", 0.2)   # walk the warm root at once
    fake = FakeGitea().start()
    fake.down = True          # Gitea answers 500 (not a closed port: the gatekeeper's own
                              # listeners may take a port let go): forge writes wait
    gitea = {"driver": "gitea", "url": fake.url, "token": fake.token, "webhook-secret": "s",
             "bot-user": fake.bot}
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, connections={"gitea": gitea})
    gk.api.alerts.outbox_age = 1.0
    gk.connections.items["gitea"].outbox.max_delay = 0.2
    gk.tmp, gk.jobs_dir, gk.warm, gk.fake, gk.repos = tmp_path, jobs_dir, warm, fake, repos
    yield gk
    gk.stop()
    fake.stop()


def open_now(gk) -> dict[str, list[dict]]:
    """The open alerts by kind, from /status.json; /metrics counts the same (one scrape
    after; the levels it reads may be taken a moment later)."""
    data = requests.get(gk.web_url + "/status.json", timeout=10).json()
    by_kind: dict[str, list[dict]] = {}
    for alert in data["alerts"]:
        assert set(alert) == {"kind", "severity", "message", "since"}
        by_kind.setdefault(alert["kind"], []).append(alert)
    return by_kind


def metric_says(gk, kind: str, count: int) -> bool:
    return value(scrape(gk.web_url), "ccci_alerts_open", kind=kind) == count


def test_each_kind_appears_and_goes_away(world):
    gk = world
    # warm_broken: the canonical marked broken on this host's warm root
    broken = wait_for(lambda: open_now(gk).get("warm_broken"), 10, "warm_broken open")
    assert broken == [{"kind": "warm_broken", "severity": "warning", "since": 1234.0,
                       "message": "warm canonical of hello is broken (restore failed): "
                                  "quick runs fall back to cold"}]
    assert metric_says(gk, "warm_broken", 1)
    assert all(metric_says(gk, kind, 0) for kind in KINDS if kind != "warm_broken")

    # pipeline_paused: while the pipeline is paused
    assert admin(gk, "/admin/pause", {"pipeline": "check"}).status_code == 202
    gk.scheduler.sync()
    assert open_now(gk)["pipeline_paused"] == [{
        "kind": "pipeline_paused", "severity": "warning", "since": None,
        "message": "pipeline check is paused: its items wait"}]
    assert metric_says(gk, "pipeline_paused", 1)
    assert admin(gk, "/admin/resume", {"pipeline": "check"}).status_code == 202
    gk.scheduler.sync()
    assert "pipeline_paused" not in open_now(gk) and metric_says(gk, "pipeline_paused", 0)

    # outbox_stuck: Gitea is away, the change's statuses wait longer than outbox_age
    sha = git(gk.repos / "org/recipe", "rev-parse", "refs/pull/1/head")
    assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe",
                                        "change": 1, "patchset": sha}).status_code == 202
    [stuck] = wait_for(lambda: open_now(gk).get("outbox_stuck"), 30, "outbox_stuck open")
    assert stuck["severity"] == "warning" and stuck["since"] > 0
    assert stuck["message"].startswith("connection gitea: ")
    assert " write(s) wait in the outbox, the oldest for 0 min" in stuck["message"]
    assert metric_says(gk, "outbox_stuck", 1)
    gk.fake.down = False                 # Gitea is back: the outbox drains
    wait_for(lambda: "outbox_stuck" not in open_now(gk), 30, "outbox_stuck gone")
    assert gk.connections.items["gitea"].store.pending() == 0
    assert metric_says(gk, "outbox_stuck", 0)

    # no_worker: org/gpu's job needs a worker labelled gpu; none has registered
    sha = git(gk.repos / "org/gpu", "rev-parse", "refs/pull/1/head")
    assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/gpu",
                                        "change": 1, "patchset": sha}).status_code == 202
    [held] = wait_for(lambda: open_now(gk).get("no_worker"), 20, "no_worker open")
    assert held == {"kind": "no_worker", "severity": "critical", "since": None,
                    "message": "build:gpu:gpu: 1 build(s) wait, no worker registered"}
    assert metric_says(gk, "no_worker", 1)
    servers = ",".join(f"{h}:{p}" for h, p in gk.servers)
    worker = worker_process(servers, gk.jobs_dir, gk.tmp / "gpu-wd", "gpu-host", "gpu")
    try:
        wait_for(lambda: "no_worker" not in open_now(gk), 30, "no_worker gone")
        assert metric_says(gk, "no_worker", 0)
    finally:
        worker.terminate()
        worker.wait(10)

    # warm_broken goes once the canonical is no longer marked broken
    (gk.warm / "hello" / "record.json").write_text(json.dumps(
        {"recipe": "hello", "status": "idle", "time": 1300.0}))
    wait_for(lambda: "warm_broken" not in open_now(gk), 10, "warm_broken gone")
    wait_for(lambda: metric_says(gk, "warm_broken", 0), 10, "the metric at 0")
    assert open_now(gk) == {}
