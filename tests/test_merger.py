"""The merger on real git repositories; its refs fetched over HTTP by another process."""
from __future__ import annotations

import subprocess

import pytest

from ccci_gate.core.actions import PrepareRef
from ccci_gate.core.model import Change
from ccci_gate.merger import GitMerger, MergeConflict, git_http_handler
from ccci_gate.git import GitError
from ccci_gate.web.routes import Router
from ccci_gate.web.server import WebServer

from git_helpers import git, make_repo


def pr(n: int, sha: str | None = None) -> Change:
    return Change("org/r", "main", f"refs/pull/{n}/head", number=n, patchset=sha, sha=sha)


@pytest.fixture
def upstream(tmp_path):
    return make_repo(tmp_path / "up", "org/r", {
        1: {"a.txt": "a\n"}, 2: {"b.txt": "b\n"}, 3: {"c.txt": "c\n"},
        4: {"compose.yml": "conflicting\n"}})


@pytest.fixture
def events():
    return []


@pytest.fixture
def merger(tmp_path, upstream, events):
    return GitMerger(tmp_path / "merger", lambda p: str(tmp_path / "up" / p), events.append,
                     "http://x/git")


def subjects(repo, ref):
    return git(repo, "log", "--format=%s", ref).splitlines()


@pytest.mark.parametrize("count", [1, 2, 3])
def test_speculative_ref_holds_exactly_the_changes_in_order(merger, tmp_path, count):
    changes = tuple(pr(n) for n in range(1, count + 1))
    ref, commit, *_ = merger.build(PrepareRef("bs1", "org/r", "main", changes))
    repo = tmp_path / "merger" / "org/r"
    assert ref == "refs/zuul/main/Zbs1"
    assert git(repo, "rev-parse", ref) == commit
    names = git(repo, "ls-tree", "--name-only", commit).split()
    assert names == sorted(["compose.yml", *["abc"[i] + ".txt" for i in range(count)]])
    expected_merges = [f"Merge org/r#{n}" for n in range(count, 1, -1)]
    assert [s for s in subjects(repo, commit) if s.startswith("Merge")] == expected_merges


def test_conflict_names_the_change_and_file(merger, upstream):
    (upstream / "compose.yml").write_text("moved on\n")
    git(upstream, "commit", "-qam", "tip moves")
    with pytest.raises(MergeConflict, match=r"org/r#4 does not merge: conflict in compose.yml"):
        merger.build(PrepareRef("bs2", "org/r", "main", (pr(4),)))


def test_unknown_ref_is_an_error_not_a_conflict(merger, events):
    with pytest.raises(GitError):
        merger.build(PrepareRef("bs3", "org/r", "main", (pr(99),)))
    merger._run(PrepareRef("bs3", "org/r", "main", (pr(99),)))
    [event] = events
    assert event.conflict is False and "refs/pull/99/head" in event.message


def test_ref_item_is_the_ref_itself(merger, upstream):
    tip = git(upstream, "rev-parse", "main")
    ref, commit, *_ = merger.build(PrepareRef("bs4", "org/r", "main",
                                          (Change("org/r", "main", "refs/heads/main", sha=tip),)))
    assert commit == tip


@pytest.mark.parametrize("name", ["../etc", "/abs", "-rf", "a/../../b"])
def test_bad_project_names_are_refused(merger, name):
    with pytest.raises(GitError, match="invalid project name"):
        merger.build(PrepareRef("bs5", name, "main", ()))


def test_branch_names_are_checked(merger):
    with pytest.raises(GitError, match="invalid ref name"):
        merger.build(PrepareRef("bs6", "org/r", "--upload-pack=evil", ()))


def test_worker_fetches_the_ref_over_http_and_cannot_push(merger, tmp_path):
    ref, commit, *_ = merger.build(PrepareRef("bs7", "org/r", "main", (pr(1), pr(2))))
    router = Router()
    handler = git_http_handler(tmp_path / "merger")
    router.add("GET", "/git/", handler)
    router.add("POST", "/git/", handler)
    web = WebServer(router, "127.0.0.1", 0)
    web.start()
    try:
        work = tmp_path / "ws"
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        subprocess.run(["git", "-C", str(work), "fetch", "-q", f"{web.url}/git/org/r", ref],
                       check=True, timeout=60)
        assert git(work, "rev-parse", "FETCH_HEAD") == commit
        push = subprocess.run(["git", "-C", str(work), "push", f"{web.url}/git/org/r",
                               "FETCH_HEAD:refs/heads/evil"], capture_output=True, timeout=60)
        assert push.returncode != 0
        assert "evil" not in git(tmp_path / "merger" / "org/r", "branch", "-a")
    finally:
        web.shutdown()
