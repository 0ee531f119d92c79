"""Remote workers get job definitions from the gatekeeper (issue 11): by digest, cached on
the worker, followed across a reconfigure without restarting the worker; a worker's own
jobs/ loses to the gatekeeper's definition; nothing fetched runs unless it matches its
digest, and no script path leaves its folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from ccci_gate.jobdefs import canonical, digest_of
from ccci_gate.web.routes import Response, Router
from ccci_gate.web.server import WebServer
from ccci_gate.worker.daemon import WorkerDaemon
from ccci_gate.worker.jobdefs import DefinitionError, Definitions

from e2e_helpers import admin, admin_pipeline, finished, make_repo, start_gatekeeper, \
    write_layout

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = """
projects:
  - name: org/app
    check: [hello]
"""
HELLO = """
jobs:
  - name: hello
    run: scripts/hello.sh
    parameters:
      GREETING: first
      API_TOKEN: hunter2-in-the-layout
"""


def worker(tmp: Path, gk, name: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    """``ccci-gate worker`` started in a directory of its own (no jobs/ unless given)."""
    home = tmp / name
    home.mkdir()
    err = tmp / f"{name}.log"
    host, port = gk.servers[0]
    argv = [sys.executable, "-m", "ccci_gate.cli", "worker", "--gearman", f"{host}:{port}",
            "--workdir", str(home / "work"), "--name", name, *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(argv, cwd=home, stdout=subprocess.DEVNULL, stderr=err.open("w"),
                            env=env, start_new_session=True)
    return proc, err


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def enqueue_and_wait(gk, count: int) -> dict:
    reply = admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
    assert reply.status_code in (200, 202), reply.text
    item = finished(gk, count, timeout=90)[-1]
    item["logs"] = {j["name"]: "".join((gk.logs.read(b) or b"").decode() for b in dict.fromkeys(
                        (j["id"], *[u.rsplit("/", 1)[-1] for u in j.get("logs", [])])))
                    for j in item["jobs"]}
    return item


@pytest.fixture
def world(tmp_path):
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(tmp_path / "gatekeeper", admin_pipeline("check"), PROJECTS,
                                     HELLO, {"hello.sh": 'echo "hello v1, $GREETING"\n'
                                             'test "$API_TOKEN" = hunter2-in-the-layout\n'
                                             'echo "the job token arrived: $API_TOKEN"\n'})
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, worker={"enabled": False})
    yield tmp_path, gk, layouts, jobs_dir
    gk.stop()


def test_a_reconfigure_reaches_a_worker_without_jobs_and_without_a_restart(world):
    tmp, gk, layouts, jobs_dir = world
    proc, err = worker(tmp, gk, "remote", "--gatekeeper", gk.web_url, "--jobs-poll", "0.3")
    try:
        assert not (tmp / "remote" / "jobs").exists()
        first = enqueue_and_wait(gk, 1)
        assert first["logs"]["hello"].count("hello v1, first") == 1, first["logs"]
        assert "the job token arrived: ***" in first["logs"]["hello"]   # rendered, masked
        assert "hunter2" not in first["logs"]["hello"]
        assert "on remote (the gatekeeper's definition" in first["logs"]["hello"]

        # the operator edits the job, its script, and adds a job; then reconfigures
        (jobs_dir / "scripts" / "hello.sh").write_text('#!/bin/sh\necho "hello v2, $GREETING"\n')
        (jobs_dir / "scripts" / "added.sh").write_text("#!/bin/sh\necho a job added live\n")
        (jobs_dir / "scripts" / "added.sh").chmod(0o755)
        (jobs_dir / "jobs.yaml").write_text(textwrap.dedent(HELLO).replace("first", "second")
                                            + "  - name: added\n    run: scripts/added.sh\n")
        (layouts / "main.yaml").write_text(
            (layouts / "main.yaml").read_text().replace("[hello]", "[hello, added]"))
        reply = admin(gk, "/admin/reconfigure", {})
        assert reply.status_code in (200, 202), reply.text
        second = enqueue_and_wait(gk, 2)
        assert {j["name"]: j["result"] for j in second["jobs"]} == \
            {"hello": "SUCCESS", "added": "SUCCESS"}, second
        assert "hello v2, second" in second["logs"]["hello"], second["logs"]
        assert "hello v1" not in second["logs"]["hello"]
        assert "a job added live" in second["logs"]["added"]
        assert proc.poll() is None, "the worker was not restarted"
        said = err.read_text()
        assert said.count("registers the jobs of") == 1, said
        assert "the gatekeeper's jobs changed" in said
        cache = tmp / "remote" / "work" / ".jobdefs"
        assert len(list(cache.glob("*.json"))) >= 3   # hello (twice) and added, by digest
    finally:
        stop(proc)


def test_the_gatekeepers_definition_wins_over_a_workers_own_jobs(world):
    tmp, gk, _, _ = world
    own_layouts, own_jobs = write_layout(tmp / "own", "", "", HELLO,
                                         {"hello.sh": 'echo "stale local copy"\n'})
    proc, err = worker(tmp, gk, "old", "--jobs", str(own_jobs))
    try:
        item = enqueue_and_wait(gk, 1)
        assert "hello v1, first" in item["logs"]["hello"], item["logs"]
        assert "stale local copy" not in item["logs"]["hello"]
        said = err.read_text()
        assert said.count("wins over the 1 jobs of") == 1, said
    finally:
        stop(proc)


def test_the_catalog_serves_by_digest_and_refuses_what_is_not(world):
    tmp, gk, _, jobs_dir = world
    index = requests.get(gk.web_url + "/jobs.json", timeout=10).json()
    digest = index["jobs"]["hello"]
    body = requests.get(f"{gk.web_url}/jobs/{digest}", timeout=10).content
    assert digest_of(body) == digest
    record = json.loads(body)
    assert record["job"]["parameters"] == {"GREETING": "first", "API_TOKEN": "***"}
    assert b"hunter2" not in body       # served to anyone: secret values masked
    [(path, script)] = record["scripts"].items()
    assert path == "scripts/hello.sh" and script["executable"]
    got = requests.get(f"{gk.web_url}/jobs/scripts/{script['sha256']}", timeout=10)
    assert got.content == (jobs_dir / "scripts" / "hello.sh").read_bytes()
    for bad in ("/jobs/../admin.token", "/jobs/scripts/..%2Fadmin.token", "/jobs/" + "0" * 64,
                "/jobs/scripts/" + "0" * 64, "/jobs/xyz"):
        assert requests.get(gk.web_url + bad, timeout=10).status_code == 404, bad

    defs = Definitions(tmp / "cache")
    job, tree = defs.for_build(f"{gk.web_url}/jobs/{digest}")
    assert job.name == "hello" and job.parameters["GREETING"] == "first"
    assert (tree / "scripts" / "hello.sh").read_bytes() == \
        (jobs_dir / "scripts" / "hello.sh").read_bytes()
    assert os.access(tree / "scripts" / "hello.sh", os.X_OK)

    # a definition that names a script outside its folder is refused, even with a true digest
    for escaping in ("../../../etc/passwd", "/etc/passwd", "scripts/../../x"):
        evil = canonical({"job": {**record["job"], "run": "scripts/hello.sh"},
                          "scripts": {escaping: script}})
        (tmp / "state" / "jobdefs" / f"{digest_of(evil)}.json").write_bytes(evil)
        with pytest.raises(DefinitionError, match="refused script path"):
            defs.for_build(f"{gk.web_url}/jobs/{digest_of(evil)}")
    evil = canonical({"job": {**record["job"], "run": "../outside.sh"}, "scripts": {}})
    (tmp / "state" / "jobdefs" / f"{digest_of(evil)}.json").write_bytes(evil)
    with pytest.raises(DefinitionError, match="refused run path"):
        defs.for_build(f"{gk.web_url}/jobs/{digest_of(evil)}")

    # what the gatekeeper serves must match the digest it is asked by
    tampered = tmp / "state" / "jobdefs" / f"{'1' * 64}.json"
    tampered.write_bytes(body)
    with pytest.raises(DefinitionError, match="does not match its digest"):
        Definitions(tmp / "fresh").for_build(f"{gk.web_url}/jobs/{'1' * 64}")
    with pytest.raises(DefinitionError, match="not a job definition URL"):
        defs.for_build("file:///etc/passwd")


def test_a_script_outside_the_jobs_dir_is_refused_and_never_served(world):
    tmp, gk, layouts, jobs_dir = world
    (tmp / "gatekeeper" / "outside.sh").write_text("#!/bin/sh\necho escaped\n")
    before = requests.get(gk.web_url + "/jobs.json", timeout=10).json()
    # a run path that climbs out is a layout error: the reconfigure is refused
    (jobs_dir / "jobs.yaml").write_text(HELLO.replace("scripts/hello.sh", "../outside.sh"))
    reply = admin(gk, "/admin/reconfigure", {})
    assert reply.status_code >= 400 and "run must be a relative path" in reply.text, reply.text
    assert requests.get(gk.web_url + "/jobs.json", timeout=10).json() == before
    # a symlink that leads out is not published: the job has no script to run
    (jobs_dir / "scripts" / "link.sh").symlink_to(tmp / "gatekeeper" / "outside.sh")
    (jobs_dir / "jobs.yaml").write_text(HELLO.replace("scripts/hello.sh", "scripts/link.sh"))
    assert admin(gk, "/admin/reconfigure", {}).status_code in (200, 202)
    digest = requests.get(gk.web_url + "/jobs.json", timeout=10).json()["jobs"]["hello"]
    record = requests.get(f"{gk.web_url}/jobs/{digest}", timeout=10).json()
    assert record["job"]["run"] == "scripts/link.sh" and record["scripts"] == {}
    escaped = digest_of(b"#!/bin/sh\necho escaped\n")
    assert requests.get(f"{gk.web_url}/jobs/scripts/{escaped}", timeout=10).status_code == 404


def test_a_definition_the_worker_cannot_get_is_an_infra_failure_retried(world):
    tmp, gk, _, _ = world
    for script in (tmp / "state" / "jobdefs" / "scripts").iterdir():
        script.unlink()   # the gatekeeper lost the script (the definition is still there)
    proc, _ = worker(tmp, gk, "w", "--gatekeeper", gk.web_url)
    try:
        item = enqueue_and_wait(gk, 1)
    finally:
        stop(proc)
    [job] = item["jobs"]
    assert job["result"] == "RETRY_LIMIT", job
    assert len(job["logs"]) == 3                    # every attempt handed back, none run
    assert item["logs"]["hello"].count("cannot get the job's definition from the gatekeeper") == 3
    assert "hello v1" not in item["logs"]["hello"]


def test_a_build_waits_for_a_gatekeeper_that_does_not_answer_yet(world):
    """A gatekeeper restarting answers 5xx or nothing for a moment: the build asks again
    (said once in its log) instead of failing."""
    tmp, gk, _, _ = world
    digest = requests.get(gk.web_url + "/jobs.json", timeout=10).json()["jobs"]["hello"]
    calls: list[str] = []

    def restarting(request):
        calls.append(request.path)
        return Response.error(503, "restarting") if len(calls) <= 2 else gk.jobdefs.get(request)

    router = Router()
    router.add("GET", "/jobs/", restarting)
    web = WebServer(router, "127.0.0.1", 0)
    web.start()
    try:
        said: list[str] = []
        daemon = SimpleNamespace(definitions=Definitions(tmp / "cache"))
        job, tree = WorkerDaemon._definition(daemon, f"{web.url}/jobs/{digest}",
                                             threading.Event(), said.append)
    finally:
        web.shutdown()
    assert job.name == "hello" and (tree / "scripts" / "hello.sh").is_file()
    assert len(calls) == 4 and len(said) == 1 and "asking again" in said[0]
