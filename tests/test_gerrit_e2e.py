"""The Gerrit driver end to end: a running gatekeeper with a Zuul-style Gerrit layout,
real git and a real Gearman worker, against a fake Gerrit speaking real SSH (the event
stream) and a REST API that checks every review and submit."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from ccci_gate.app import Gatekeeper

from e2e_helpers import (admin, finished, git, make_repo, start_gatekeeper, wait_for,
                         write_layout)
from fake_gerrit import FakeChange, FakeGerrit, key

PROJECT = "demo/app"

PIPELINES = """
pipelines:
  - name: check
    manager: independent
    retest-on-merge: true
    trigger:
      gerrit:
        - event: patchset-created
        - event: comment-added
          comment: '^recheck\\s*$'
    start:
      gerrit: {}
    success:
      gerrit: {Verified: 1}
    failure:
      gerrit: {Verified: -1}
  - name: gate
    manager: dependent
    trigger:
      gerrit:
        - event: comment-added
          approval: [{Workflow: 1}]
          require-approval: [{Code-Review: 2}, {Workflow: 1}]
          reject-approval: [{Verified: -1}]
    success:
      gerrit: {Verified: 2}
    failure:
      gerrit: {Verified: -2}
    merge-failure:
      gerrit: {}
"""
PROJECTS = """
projects:
  - name: demo/app
    connection: review
    check: [build]
    gate: [build]
"""
JOBS = """
jobs:
  - name: build
    run: scripts/build.sh
"""


class World:
    def __init__(self, tmp: Path):
        self.tmp, self.hold = tmp, tmp / "hold"
        self.repo = make_repo(tmp / "repos", PROJECT, {2: {"a.txt": "a\n"}, 3: {"b.txt": "b\n"}})
        self.fake = FakeGerrit()
        self.fake.on_submit = self._merge
        key("client").write_private_key_file(str(tmp / "id_rsa"))
        layouts, jobs = write_layout(tmp / "layout", PIPELINES, PROJECTS, JOBS, {"build.sh": (
            f'touch "{tmp}/started-$ZUUL_PIPELINE"\n'
            f'while [ -e "{self.hold}" ]; do sleep 0.05; done\n'
            f'if [ -e "{tmp}/fail-$ZUUL_CHANGE" ]; then echo broken; exit 1; fi\necho built\n')})
        self.gk: Gatekeeper = start_gatekeeper(tmp, layouts, jobs, tmp / "repos", connections={
            "review": {"driver": "gerrit", "host": "127.0.0.1", "port": self.fake.ssh_port,
                       "user": self.fake.user, "key-file": str(tmp / "id_rsa"),
                       "known-hosts": str(self.fake.write_known_hosts(tmp / "known_hosts")),
                       "url": self.fake.url, "http-password": self.fake.password,
                       "reconnect-min": 0.05, "reconnect-max": 0.2}})
        self.conn = self.gk.connections.items["review"]
        wait_for(lambda: self.fake.connected() and self.conn.idle.is_set(), 15, "the stream")

    def upload(self, number: int, user: str = "alice") -> str:
        """A new patchset of change ``number``: a commit in git, its refs/changes ref, the event."""
        change = self.fake.changes.get((PROJECT, number))
        if change is None:
            sha = git(self.repo, "rev-parse", f"refs/pull/{number}/head")
        else:
            git(self.repo, "checkout", "-q", f"pr{number}")
            (self.repo / f"ps{change.patchset + 1}.txt").write_text("x\n")
            git(self.repo, "add", ".")
            git(self.repo, "commit", "-qm", "amended")
            sha = git(self.repo, "rev-parse", "HEAD")
            git(self.repo, "checkout", "-q", "main")
        ps = change.patchset + 1 if change else 1
        git(self.repo, "update-ref", f"refs/changes/{number:02d}/{number}/{ps}", sha)
        self.fake.upload(PROJECT, number, sha, user=user)
        return sha

    def _merge(self, change: FakeChange) -> str:
        git(self.repo, "merge", "--no-ff", "-q", "-m", f"Merge change {change.number}", change.sha)
        return git(self.repo, "rev-parse", "HEAD")

    def reviews(self, number: int) -> list[dict]:
        return [body for _, n, _, body in self.fake.reviews if n == number]

    def settle(self) -> None:
        time.sleep(0.2)
        wait_for(self.conn.idle.is_set, 10, "the driver's event thread")

    def close(self) -> None:
        self.hold.unlink(missing_ok=True)
        self.gk.stop()
        self.fake.stop()


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()
    assert w.fake.violations == []


def test_a_patchset_is_checked_and_verified_with_each_job_named(world):
    sha = world.upload(2)
    [item] = finished(world.gk)
    assert (item["pipeline"], item["result"], item["change"]["sha"]) == ("check", "SUCCESS", sha)
    wait_for(lambda: len(world.reviews(2)) == 2, 10, "two reviews")
    start, end = world.reviews(2)
    assert start["message"].startswith("Starting check jobs: build.") and "labels" not in start
    assert end["labels"] == {"Verified": 1} and "Build succeeded (check pipeline)." in end["message"]
    assert "- build http" in end["message"] and "/logs/" in end["message"] and ": SUCCESS" in end["message"]
    assert {s for _, _, s, _ in world.fake.reviews} == {sha}


def test_a_second_patchset_supersedes_and_recheck_reruns(world):
    world.hold.touch()
    old = world.upload(2)
    wait_for(lambda: world.reviews(2), 10, "the start")
    new = world.upload(2)
    world.settle()
    world.hold.unlink()
    items = finished(world.gk, 2)
    done = [i for i in items if i["result"] == "SUCCESS"]
    assert [i["change"]["sha"] for i in done] == [new] != [old]
    wait_for(lambda: any("labels" in r for r in world.reviews(2)), 10, "the vote")
    assert [s for _, _, s, b in world.fake.reviews if "labels" in b] == [new]
    world.fake.comment(PROJECT, 2, "bob", "recheck")
    items = finished(world.gk, 3)
    assert [i["result"] for i in items if i["change"]["sha"] == new] == ["SUCCESS", "SUCCESS"]


def test_approved_changes_are_gated_and_submitted_at_the_tested_revision(world):
    sha = world.upload(2)
    finished(world.gk)
    world.fake.comment(PROJECT, 2, "bob", votes={"Code-Review": 2})     # not yet: no Workflow
    world.settle()
    assert len(world.gk.store.history()) == 1
    world.fake.comment(PROJECT, 2, "carol", votes={"Workflow": 1})
    items = finished(world.gk, 2)
    gate = [i for i in items if i["pipeline"] == "gate"][0]
    assert gate["result"] == "SUCCESS"
    assert world.fake.submits == [(PROJECT, 2, sha)]
    wait_for(lambda: any(r.get("labels") == {"Verified": 2} for r in world.reviews(2)), 10, "the gate vote")


def test_a_refused_submit_is_reported_as_gerrit_refusing(world):
    world.upload(2)
    finished(world.gk)
    world.fake.refuse_submit = "Change 2: needs rebase"
    world.fake.comment(PROJECT, 2, "bob", votes={"Code-Review": 2, "Workflow": 1})
    items = finished(world.gk, 2)
    gate = [i for i in items if i["pipeline"] == "gate"][0]
    assert gate["result"] == "MERGE_FAILED" and "needs rebase" in gate["failing_reason"]
    assert world.fake.submits == []
    wait_for(lambda: any("refused the submit" in r["message"] for r in world.reviews(2)), 10, "the report")
    refused = [r for r in world.reviews(2) if "refused the submit" in r["message"]][-1]
    assert "labels" not in refused and "409" in refused["message"]


def test_a_change_whose_revision_moved_is_requeued_not_submitted(world):
    world.upload(2)
    finished(world.gk)
    world.hold.touch()
    world.fake.comment(PROJECT, 2, "bob", votes={"Code-Review": 2, "Workflow": 1})
    wait_for(lambda: (world.tmp / "started-gate").exists(), 15, "the gate build")
    world.fake.down = True
    world.fake.drop()                 # the new patchset reaches the gate only through REST
    change = world.fake.changes[(PROJECT, 2)]
    git(world.repo, "update-ref", "refs/changes/02/2/2", git(world.repo, "rev-parse", "refs/pull/3/head"))
    new = git(world.repo, "rev-parse", "refs/pull/3/head")
    change.revisions.append((new, time.time(), "alice"))
    change.votes.clear()
    world.hold.unlink()
    items = finished(world.gk, 3, timeout=60)
    assert world.fake.submits == []
    assert any(i["pipeline"] == "check" and i["change"]["sha"] == new for i in items)
    [gate] = [i for i in items if i["pipeline"] == "gate"]
    assert gate["state"] == "DEQUEUED", gate   # superseded: no failure, no vote
    assert gate["message"] == f"superseded by {new}"
    assert not any(r.get("labels") == {"Verified": -2} for r in world.reviews(2))
    world.fake.down = False


def test_a_merged_change_retests_an_outstanding_one(world):
    world.upload(2)
    world.upload(3)
    finished(world.gk, 2)
    change = world.fake.changes[(PROJECT, 2)]
    world.fake._submit(change)        # submitted by hand in Gerrit: change-merged, ref-updated
    items = finished(world.gk, 3)
    assert [i["change"]["number"] for i in items].count(3) == 2


def test_its_own_account_never_triggers(world):
    world.upload(2, user="alice")
    finished(world.gk)
    world.fake.comment(PROJECT, 2, world.fake.user, "recheck")
    world.fake.comment(PROJECT, 2, world.fake.user, votes={"Code-Review": 2, "Workflow": 1})
    world.settle()
    time.sleep(0.5)
    assert len(world.gk.store.history()) == 1


def test_a_veto_while_gating_stops_the_submit(world):
    world.upload(2)
    finished(world.gk)
    world.hold.touch()
    world.fake.comment(PROJECT, 2, "bob", votes={"Code-Review": 2, "Workflow": 1})
    wait_for(lambda: (world.tmp / "started-gate").exists(), 15, "the gate build")
    world.fake.comment(PROJECT, 2, "dave", "this breaks prod", votes={"Verified": -1})
    world.settle()
    world.hold.unlink()
    items = finished(world.gk, 2)
    gate = [i for i in items if i["pipeline"] == "gate"][0]
    assert gate["result"] == "MERGE_FAILED" and "Verified-1" in gate["failing_reason"]
    assert world.fake.submits == []


def test_enqueue_by_change_number_runs_the_current_patchset_or_a_named_one(world):
    """``ccci-gate enqueue --change N`` asks Gerrit which patchset is current; with
    ``--patchset P`` it runs that one; an unknown change is a 400, Gerrit down a 503."""
    first = world.upload(2)
    finished(world.gk)
    second = world.upload(2)
    finished(world.gk, 2)
    answer = admin(world.gk, "/admin/enqueue", {"pipeline": "check", "project": PROJECT, "change": 2})
    assert answer.status_code == 202, answer.text
    assert finished(world.gk, 3)[-1]["change"]["sha"] == second
    answer = admin(world.gk, "/admin/enqueue",
                   {"pipeline": "check", "project": PROJECT, "change": 2, "patchset": "1"})
    assert answer.status_code == 202, answer.text
    [*_, item] = finished(world.gk, 4)
    assert (item["result"], item["change"]["ref"]) == ("SUCCESS", "refs/changes/02/2/1")
    assert item["change"]["sha"] == first      # the merger fetched patchset 1's ref
    answer = admin(world.gk, "/admin/enqueue",
                   {"pipeline": "check", "project": PROJECT, "change": 2, "patchset": "9"})
    assert answer.status_code == 400 and "patchsets 1 to 2" in answer.json()["error"]
    answer = admin(world.gk, "/admin/enqueue", {"pipeline": "check", "project": PROJECT, "change": 77})
    assert answer.status_code == 400 and "no change 77" in answer.json()["error"]
    world.fake.rest_down = True
    answer = admin(world.gk, "/admin/enqueue", {"pipeline": "check", "project": PROJECT, "change": 2})
    assert answer.status_code == 503 and "cannot look the change up" in answer.json()["error"]
