"""Operator commands answer truthfully: the engine's answer for each command (pure), a
paused pipeline that still reports what finished, and the admin API / CLI returning
4xx with the reason instead of 202 and a log line."""
from __future__ import annotations

import subprocess
import sys

from ccci_gate.core import events as ev

from e2e_helpers import admin, admin_pipeline, finished, make_repo, start_gatekeeper, wait_for, write_layout
from test_core_engine import CHANGE, Harness


def test_each_command_answers_with_what_happened():
    h = Harness()
    h.send(ev.EnqueueRequest("nope", CHANGE))
    assert h.engine.take_answer() == (404, "no pipeline 'nope'")
    h.ready()
    assert h.engine.take_answer()[0] == 202
    h.send(ev.EnqueueRequest("check", CHANGE))
    status, text = h.engine.take_answer()
    assert status == 409 and "already in check" in text
    h.send(ev.RetriggerRequest("check", CHANGE.key, "nojob"))
    assert h.engine.take_answer() == (404, "org/recipe#7 runs no job 'nojob' in check")
    h.send(ev.RetriggerRequest("check", CHANGE.key, "build"))     # build is running
    status, text = h.engine.take_answer()
    assert status == 409 and "still running" in text
    h.send(ev.PromoteRequest("check", ("org/recipe", 99)))
    assert h.engine.take_answer() == (404, "org/recipe#99 is not in check")
    h.send(ev.DequeueRequest(("org/recipe", 99)))
    assert h.engine.take_answer() == (404, "org/recipe#99 is not queued anywhere")
    h.send(ev.DequeueRequest(CHANGE.key, "check"))
    assert h.engine.take_answer() == (202, "dequeued org/recipe#7 from check")


def test_a_paused_pipeline_reports_what_finished_and_starts_nothing_new():
    h = Harness()
    h.ready()
    h.send(ev.PauseRequest("check", True))
    assert h.engine.take_answer()[0] == 202
    for job in ("build", "lint"):
        h.finish(job, "SUCCESS")
    assert "publish" not in h.started(), "a paused pipeline started a new build"
    h.send(ev.PauseRequest("check", False))
    assert "publish" in h.started()
    for job in ("publish", "install", "systest"):
        h.finish(job, "SUCCESS")
    other = CHANGE.__class__("org/recipe", "main", "refs/pull/8/head", number=8)
    h.send(ev.PauseRequest("check", True))
    h.send(ev.EnqueueRequest("check", other))
    assert h.reports()[-1].summary["change"]["number"] == 7    # 7 was reported while paused
    assert h.reports()[-1].phase == "success"


def test_the_admin_api_and_cli_say_why_not(tmp_path):
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"a.txt": "a\n"}})
    layouts, jobs = write_layout(tmp_path, admin_pipeline("check"), """
        projects:
          - name: org/app
            check: [slow]
        """, "jobs:\n  - {name: slow, run: scripts/slow.sh}\n", {"slow.sh": "sleep 2\n"})
    gk = start_gatekeeper(tmp_path, layouts, jobs, repos)
    try:
        body = {"pipeline": "check", "project": "org/app", "change": 1}
        first = admin(gk, "/admin/enqueue", body)
        assert first.status_code == 202 and "enqueued org/app#1" in first.json()["message"]
        again = admin(gk, "/admin/enqueue", body)
        assert again.status_code == 409 and "already in check" in again.json()["error"]
        wait_for(lambda: any(j.get("state") == "RUNNING" for p in gk.scheduler.status()["pipelines"]
                             for q in p["queues"] for i in q["items"] for j in i["jobs"]),
                 20, "the build to run")
        running = admin(gk, "/admin/retrigger", {**body, "job": "slow"})
        assert running.status_code == 409, running.text
        assert admin(gk, "/admin/retrigger", {**body, "job": "nope"}).status_code == 404
        assert admin(gk, "/admin/promote", {**body, "change": 5}).status_code == 404
        cli = subprocess.run([sys.executable, "-m", "ccci_gate.cli", "dequeue", "--url", gk.web_url,
                              "--token", gk.admin_token, "--project", "org/app", "--change", "5"],
                             capture_output=True, text=True)
        assert cli.returncode == 1 and "org/app#5 is not queued anywhere" in cli.stderr
        finished(gk, 1)
    finally:
        gk.stop()
