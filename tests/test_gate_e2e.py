"""The gate on real components: real git repositories, the real merger and git source,
workers running shell jobs; approved changes land upstream in order, a failing one not."""
from __future__ import annotations

import pytest

from e2e_helpers import (admin, admin_pipeline, finished, git, make_repo, start_gatekeeper,
                         write_layout)
from test_gatekeeper_e2e import JOBS, SCRIPTS

GATE = admin_pipeline("gate", "dependent")
PROJECTS = """
projects:
  - name: org/recipe
    gate: [build, publish, install, systest]
"""


@pytest.fixture
def gated(tmp_path):
    repos = tmp_path / "repos"
    upstream = make_repo(repos, "org/recipe", {1: {"one.txt": "1\n"}, 2: {"fail-install": "x\n"},
                                               3: {"three.txt": "3\n"}})
    git(upstream, "config", "receive.denyCurrentBranch", "updateInstead")
    layouts, jobs_dir = write_layout(tmp_path, GATE, PROJECTS, JOBS, SCRIPTS)
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, worker={"max-builds": 3})
    yield gk, upstream
    gk.stop()


def test_approved_changes_merge_in_order_and_a_failing_one_does_not(gated):
    gk, upstream = gated
    for n in (1, 2, 3):
        assert admin(gk, "/admin/enqueue", {"pipeline": "gate", "project": "org/recipe",
                                            "change": n}).status_code == 202
    items = finished(gk, 3, timeout=120)
    verdicts = {i["change"]["number"]: i["result"] for i in items}
    assert verdicts == {1: "SUCCESS", 2: "FAILURE", 3: "SUCCESS"}
    files = git(upstream, "ls-tree", "--name-only", "main").split()
    assert "one.txt" in files and "three.txt" in files and "fail-install" not in files
    history = git(upstream, "log", "--first-parent", "--format=%s", "main").splitlines()
    assert history == ["Merge org/recipe#3", "change 1", "base"]   # 1 landed, then 3 on it
    three = [i for i in items if i["change"]["number"] == 3][0]
    assert "org/recipe#2" not in three["buildset"]["changes"]
