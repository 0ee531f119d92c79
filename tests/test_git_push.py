"""Pushes to plain git projects are noticed: the branch watcher stepped by hand, then a
real gatekeeper retesting an outstanding change when its branch moves (a post-receive
hook's ``notify-push``, and polling)."""
from __future__ import annotations

import time
from pathlib import Path

from ccci_gate.core.events import BranchCreated, BranchMoved
from ccci_gate.drivers.gitpush import BranchWatcher

from e2e_helpers import admin, admin_pipeline, finished, git, make_repo, start_gatekeeper, wait_for, write_layout


def watcher(reads: list[dict[str, str]], quiet: float = 0.0) -> tuple[BranchWatcher, list]:
    events: list = []
    feed = iter(reads)
    return BranchWatcher(lambda: ["p"], lambda p: p, events.append, quiet=quiet,
                         read=lambda url: next(feed)), events


def test_the_first_read_starts_at_now_and_moves_are_emitted():
    w, events = watcher([{"main": "a" * 40}, {"main": "b" * 40, "dev": "c" * 40}])
    assert w.check("p") == [] and events == []
    moves = w.check("p")
    assert [(type(m), m.change.branch, m.change.sha, m.change.oldrev) for m in moves] == [
        (BranchCreated, "dev", "c" * 40, None), (BranchMoved, "main", "b" * 40, "a" * 40)]
    assert events == moves and moves[1].change.ref == "refs/heads/main"


def test_two_merges_in_a_burst_are_one_move_to_the_newer_tip():
    w, events = watcher([{"main": "a" * 40}, {"main": "b" * 40}, {"main": "c" * 40},
                         {"main": "c" * 40}], quiet=0.01)
    w.check("p")
    [move] = w.check("p")
    assert (move.change.oldrev, move.change.sha) == ("a" * 40, "c" * 40)


PIPELINE = admin_pipeline("check", retest_on_merge=True)


def setup(tmp_path: Path):
    repos = tmp_path / "repos"
    repo = make_repo(repos, "org/app", {1: {"feature.txt": "x\n"}})
    layouts, jobs = write_layout(tmp_path, PIPELINE, """
        projects:
          - name: org/app
            check: [ok]
        """, "jobs:\n  - {name: ok, run: scripts/ok.sh}\n", {"ok.sh": "exit 0\n"})
    return repos, repo, layouts, jobs


def push_to_main(repo: Path, name: str) -> None:
    git(repo, "checkout", "-q", "main")
    (repo / name).write_text(name)
    git(repo, "add", name)
    git(repo, "commit", "-qm", f"add {name}")


def test_a_post_receive_notify_push_retests_the_outstanding_change(tmp_path):
    repos, repo, layouts, jobs = setup(tmp_path)
    gk = start_gatekeeper(tmp_path, layouts, jobs, repos, **{"git-poll-interval": 3600})
    try:
        wait_for(lambda: gk.watcher._tips.get("org/app"), 10, "the first read of org/app")
        assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app",
                                            "change": 1}).status_code == 202
        finished(gk, 1)
        push_to_main(repo, "one.txt")
        push_to_main(repo, "two.txt")           # a burst: one retest, on the newer tip
        reply = admin(gk, "/admin/notify-push", {"project": "org/app"})
        assert reply.status_code == 202, reply.text
        runs = finished(gk, 2)
        assert runs[-1]["result"] == "SUCCESS"
        assert admin(gk, "/admin/notify-push", {"project": "nope/x"}).status_code == 404
        time.sleep(1.5)
        assert len(gk.store.history()) == 2, "the burst of two pushes retested more than once"
    finally:
        gk.stop()


def test_polling_notices_a_push_without_any_hook(tmp_path):
    repos, repo, layouts, jobs = setup(tmp_path)
    gk = start_gatekeeper(tmp_path, layouts, jobs, repos, **{"git-poll-interval": 1})
    try:
        wait_for(lambda: gk.watcher._tips.get("org/app"), 10, "the first read of org/app")
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        finished(gk, 1)
        push_to_main(repo, "polled.txt")
        finished(gk, 2, timeout=20)
    finally:
        gk.stop()
