"""The nightly sweep without Docker: the shipped pipeline and job, the version order it
decides by, what it decides, the enrolled projects reaching its build, and a kind's
message reaching the item (through a real gatekeeper, Gearman and the HTTP hand-over)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from ccci_gate.config.loader import load_layout
from ccci_gate.core import actions as act
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.model import Change
from ccci_gate.swarm import warm
from ccci_gate.worker import kinds
from ccci_gate.worker.kinds.sweep import decide, newer, version_key

from e2e_helpers import admin, admin_pipeline, finished, make_repo, start_gatekeeper, write_layout
from git_helpers import git

ROOT = Path(__file__).resolve().parents[1]
TAGS = ["1.0.0+1", "1.9.0+1", "1.10.0+1", "1.10.0+1.2", "1.10.0+1.10", "1.10.0+1.9.1",
        "2.0.0+0.9", "0.1.0", "1.10.0-rc1+1", "1.10.0+1a", "10.0.0+1", "1.2.3+2024.01.05"]


def test_the_shipped_periodic_pipeline_is_the_sweep():
    layout = load_layout([ROOT / "layouts", ROOT / "jobs"])
    periodic = layout.pipelines["periodic"]
    assert periodic.manager == "serial" and "timer" in periodic.triggers
    assert "admin" in periodic.triggers            # `ccci-gate enqueue` runs it by hand
    assert layout.projects["coop-cloud/hello"].pipelines["periodic"] == ("sweep",)
    assert layout.jobs["sweep"].kind == "recipe-sweep" and "recipe-sweep" in kinds.KINDS


def test_versions_are_ordered_as_git_orders_the_tags(tmp_path):
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f").write_text("x")
    git(repo, "add", "f")
    git(repo, "commit", "-qm", "x")
    for tag in TAGS:
        git(repo, "tag", tag)
    gits = git(repo, "tag", "--sort=v:refname").split()
    assert sorted(TAGS, key=version_key) == gits
    assert newer("1.10.0+1", "1.9.0+1") and not newer("1.9.0+1", "1.10.0+1")
    assert not newer("1.1.0+1", "1.1.0+1")


def known_good(root: Path, recipe: str, version: str, status: str = "ready",
               commit: str = "c0ffee") -> warm.Canonical:
    """A canonical with a complete known-good at ``version`` (no Docker: files only)."""
    canonical = warm.Canonical(root, recipe)
    good = canonical.dir / "goods" / "g1"
    good.mkdir(parents=True)
    (good / "bundle.tar.gz").write_bytes(b"x")
    snap = canonical.snapshots / "s1"
    snap.mkdir(parents=True)
    (snap / "meta.json").write_text(json.dumps({"good": "g1", "version": version,
                                                "commit": commit}))
    (canonical.snapshots / "current").symlink_to("s1")
    canonical.set_record(status=status, why="tar failed" if status == "broken" else "")
    return canonical


@pytest.mark.parametrize("version,status,runs,why", [
    (None, "", True, "no canonical of hello on this host yet"),
    ("1.0.0+1", "ready", True, "the latest release 1.1.0+1 is newer than the known-good 1.0.0+1"),
    ("1.1.0+1", "ready", False, "up to date: the latest release 1.1.0+1 is not newer than the "
                                "canonical's known-good 1.1.0+1"),
    ("1.2.0+1", "ready", False, "up to date: the latest release 1.1.0+1 is not newer than the "
                                "canonical's known-good 1.2.0+1"),
    ("1.1.0+1", "broken", True, "the canonical of hello is broken (tar failed); re-seeding it"),
], ids=["no-canonical", "newer", "same", "older", "broken"])
def test_the_sweep_runs_a_release_only_when_it_is_newer(tmp_path, version, status, runs, why):
    canonical = (warm.Canonical(tmp_path, "hello") if version is None
                 else known_good(tmp_path, "hello", version, status))
    assert decide(canonical, "1.1.0+1", "beef") == (runs, why)


def test_a_known_good_at_the_releases_commit_is_up_to_date_whatever_its_version(tmp_path):
    canonical = known_good(tmp_path, "hello", "1.0.0", commit="beef")   # label != tag
    assert decide(canonical, "1.1.0+1", "beef") == (False, (
        "up to date: the latest release 1.1.0+1 is not newer than the canonical's "
        "known-good 1.0.0"))


def test_a_project_that_is_not_enrolled_is_never_swept():
    assert decide(None, "1.1.0+1", "beef") == (False, "the project is not enrolled for a "
                                                      "warm canonical: nothing to sweep")


def test_the_sweep_build_gets_the_layouts_enrolled_projects():
    layout = load_layout([ROOT / "layouts", ROOT / "jobs"])
    engine = Engine(layout, zuul_url="http://gk/git")
    out = engine.handle(ev.TimerFired("timer", Change("coop-cloud/hello", "main",
                                                      "refs/heads/main"), pipeline="periodic"))
    [prep] = [a for a in out if isinstance(a, act.PrepareRef)]
    out = engine.handle(ev.RefPrepared(prep.buildset_id, "refs/zuul/main/Z1", "beef"))
    [start] = [a for a in out if isinstance(a, act.StartBuild)]
    assert start.parameters["JOB_NAME"] == "sweep"
    assert start.parameters["CCCI_ENROLLED"] == "coop-cloud/hello"
    assert start.parameters["CCCI_WARM"] == "1" and start.parameters["RECIPE"] == "hello"
    assert warm.recipes_of(start.parameters["CCCI_ENROLLED"].split()) == {"hello"}


class SaysWhy:
    """A job kind that passes with a message, as the sweep does when it is up to date."""

    name = "says-why"

    def run(self, ctx):
        ctx.message = "up to date: the latest release 1.1.0+1 is not newer than 1.1.0+1"
        ctx.log("nothing to do\n")
        return "SUCCESS"


def test_a_kinds_message_reaches_the_items_summary(tmp_path, monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "says-why", SaysWhy())
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("periodic"), """
        projects:
          - name: org/a
            periodic: [sweep]
        """, """
        jobs:
          - name: sweep
            kind: says-why
        """, {})
    repos = tmp_path / "repos"
    make_repo(repos, "org/a", {1: {"a.txt": "a\n"}})
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos)
    try:
        reply = admin(gk, "/admin/enqueue", {"pipeline": "periodic", "project": "org/a",
                                             "ref": "refs/heads/main"})
        assert reply.status_code == 202, reply.text
        [item] = finished(gk, 1, timeout=60)
        [job] = item["jobs"]
        assert (job["result"], job["message"]) == (
            "SUCCESS", "up to date: the latest release 1.1.0+1 is not newer than 1.1.0+1")
        build = "c" * 32                       # a message handed over must be a string
        reply = requests.post(f"{gk.web_url}/builds/{build}/result", timeout=5,
                              json={"result": "SUCCESS", "message": {"no": "text"}},
                              headers={"Authorization": f"Bearer {gk.handoff.token(build)}"})
        assert reply.status_code == 400
    finally:
        gk.stop()
