"""The Gitea driver end to end: signed webhooks (real payload shapes, real headers) into a
running gatekeeper with the shipped layout, real git and a real Gearman worker; statuses
and comments out to a fake Gitea that checks every request against Gitea's API description.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from ccci_gate.app import Gatekeeper

from e2e_helpers import finished, git, make_repo, start_gatekeeper, wait_for, write_layout
from fake_gitea import FakeGitea, conformance_payload, deliver, sign

ROOT = Path(__file__).resolve().parents[1]
SECRET = "webhook-test-secret"
REPO = "example/example"

EXTRA = """
projects:
  - name: example/example
    check: [hold]
    quick: [quick-job]
    gate: [hold]
"""
JOBS = """
jobs:
  - name: hold
    run: scripts/hold.sh
  - name: quick-job
    run: scripts/hold.sh
"""


class World:
    """A gatekeeper wired to a fake Gitea, and ways to poke it like Gitea would."""

    def __init__(self, tmp: Path, **conn_options):
        self.tmp = tmp
        self.hold_file = tmp / "hold"
        self.started = tmp / "started"
        self.repos = tmp / "repos"
        self.repo = make_repo(self.repos, REPO, {2: {"a.txt": "a\n"}, 3: {"b.txt": "b\n"}})
        self.fake = FakeGitea().start()
        self.fake.members.add(("example", "alice"))
        self.fake.permissions[(REPO, "wendy")] = "write"
        self.fake.permissions[(REPO, "rita")] = "read"
        for n in (2, 3):
            self.fake.add_pull(REPO, n, self.sha(n))
        extra, jobs_dir = write_layout(tmp / "extra", "", EXTRA, JOBS, {
            "hold.sh": f'touch "{self.started}"\n'
                       f'while [ -e "{self.hold_file}" ]; do sleep 0.05; done\necho done\n'})
        self.options = {"driver": "gitea", "url": self.fake.url, "token": self.fake.token,
                        "webhook-secret": SECRET, "bot-user": self.fake.bot, **conn_options}
        self.layout_dirs = (extra, jobs_dir)
        self._deliveries = 0
        self.start()

    def start(self) -> None:
        extra, jobs_dir = self.layout_dirs
        self.gk: Gatekeeper = start_gatekeeper(
            self.tmp, extra, jobs_dir, self.repos,
            layout=[str(ROOT / "layouts"), str(ROOT / "jobs"), str(extra), str(jobs_dir)],
            connections={"gitea": self.options})
        self.conn = self.gk.connections.items["gitea"]
        self.conn.outbox.max_delay = 0.2
        self.hook_url = f"{self.gk.web_url}/webhooks/gitea"

    def restart(self) -> None:
        self.gk.stop()
        self.start()

    def sha(self, number: int) -> str:
        return git(self.repo, "rev-parse", f"refs/pull/{number}/head")

    def close(self) -> None:
        self.hold_file.unlink(missing_ok=True)
        self.gk.stop()
        self.fake.stop()

    # --- webhooks ---------------------------------------------------------------------

    def send(self, event: str, payload: dict, delivery: str | None = None, **kw):
        self._deliveries += 1
        body = json.dumps(payload).encode()
        return deliver(self.hook_url, event, body, kw.pop("secret", SECRET),
                       delivery=delivery or f"delivery-{self._deliveries}", **kw)

    def comment(self, text: str, user: str = "alice", number: int = 2, comment_id: int | None = None,
                action: str = "created", **kw):
        payload = copy.deepcopy(conformance_payload("issue_comment_pr.json"))
        payload["action"] = action
        payload["repository"]["full_name"] = REPO
        payload["issue"]["number"] = number
        payload["comment"]["body"] = text
        payload["comment"]["id"] = comment_id or 1000 + self._deliveries
        payload["comment"]["user"]["login"] = payload["sender"]["login"] = user
        return self.send("issue_comment", payload, event_type="pull_request_comment", **kw)

    def synchronize(self, number: int = 2):
        """A new commit pushed to the PR: new head in git, in the fake, and a webhook."""
        git(self.repo, "checkout", "-q", f"pr{number}")
        (self.repo / "a.txt").write_text("a2\n")
        git(self.repo, "commit", "-qam", "fixup")
        git(self.repo, "update-ref", f"refs/pull/{number}/head", "HEAD")
        git(self.repo, "checkout", "-q", "main")
        self.fake.pulls[(REPO, number)]["sha"] = self.sha(number)
        payload = copy.deepcopy(conformance_payload("pull_request_synchronized.json"))
        payload["repository"]["full_name"] = REPO
        payload["number"] = payload["pull_request"]["number"] = number
        payload["pull_request"]["head"]["sha"] = self.sha(number)
        return self.send("pull_request", payload, event_type="pull_request_sync")

    # --- looking ---------------------------------------------------------------------

    def history(self) -> list[dict]:
        return self.gk.store.history()

    def gate_comment(self, number: int = 2, timeout: float = 30) -> str:
        comments = wait_for(lambda: self.fake.gate_comments(REPO, number), timeout, "a PR comment")
        return comments[-1]["body"]

    def settle(self) -> None:
        wait_for(lambda: self.conn.idle.is_set(), 10, "the driver's event thread")


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()
    assert w.fake.violations == []


def test_testme_runs_check_and_reports_statuses_and_one_comment(world):
    assert world.comment("!testme").status_code == 202
    [item] = finished(world.gk)
    assert (item["pipeline"], item["result"]) == ("check", "SUCCESS")
    body = world.gate_comment()
    assert "**check**: passed" in body and "| hold | SUCCESS |" in body and "/logs/" in body
    assert "quick lane" not in body
    sha = world.sha(2)
    wait_for(lambda: world.fake.status_states(REPO, sha).get("ccci/check") == "success", 10,
             "the item status")
    assert world.fake.status_states(REPO, sha) == {"ccci/check": "success", "ccci/check/hold": "success"}
    first = [b for r, s, b in world.fake.statuses if b["context"] == "ccci/check"][0]
    assert first["state"] == "pending"
    job_status = [b for r, s, b in world.fake.statuses if b["context"] == "ccci/check/hold"][-1]
    assert "/logs/" in job_status["target_url"]
    # a second run edits the same comment instead of adding one
    world.comment("!testme")
    finished(world.gk, 2)
    wait_for(lambda: sum(1 for r in world.fake.requests if r.method == "PATCH"), 10, "an edit")
    assert len(world.fake.gate_comments(REPO, 2)) == 1


def test_quick_lane_says_it_does_not_gate(world):
    world.comment("!testme --quick")
    [item] = finished(world.gk)
    assert item["pipeline"] == "quick" and item["quick"]
    assert "quick lane — does not gate merge" in world.gate_comment()


def test_what_must_not_trigger(world, caplog):
    caplog.set_level(logging.WARNING, logger="ccci_gate.drivers.gitea")
    world.comment("!testmexyz")
    world.comment("!testme", user="rita")                       # read access only
    world.comment("!testme", user="mallory")                    # a stranger
    world.comment("!testme", action="edited")                   # an edited comment
    world.comment("!testme", user=world.fake.bot)               # the gate's own account
    world.comment("!testme\n\n<!-- ccci-gate -->")             # a gate comment, by its marker
    issue = conformance_payload("issue_comment_issue.json")     # a plain issue
    issue["comment"]["body"] = "!testme"
    assert world.send("issue_comment", issue, event_type="issue_comment").status_code == 200
    world.settle()
    assert "mallory may not trigger" in caplog.text and "rita may not trigger" in caplog.text
    world.comment("!testme", user="wendy")                      # a collaborator with write
    [item] = finished(world.gk)
    assert item["change"]["author"] == "wendy"
    assert len(world.history()) == 1


def test_refused_requests_enqueue_nothing_and_the_server_keeps_serving(world):
    payload = conformance_payload("issue_comment_pr.json")
    payload["repository"]["full_name"] = REPO
    payload["issue"]["number"] = 2
    payload["comment"]["body"] = "!testme"
    body = json.dumps(payload).encode()
    assert deliver(world.hook_url, "issue_comment", body, None).status_code == 401
    assert deliver(world.hook_url, "issue_comment", body, None, signature="ab" * 32).status_code == 403
    assert deliver(world.hook_url, "issue_comment", body + b" ", SECRET,
                   signature=sign(SECRET, body)).status_code == 403
    big = b'{"pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    assert deliver(world.hook_url, "issue_comment", big, SECRET).status_code == 413
    assert deliver(world.hook_url, "issue_comment", b"{not json", SECRET).status_code == 400
    reply = deliver(world.hook_url, "issue_comment", b'{"action": "created"}', SECRET)
    assert reply.status_code == 422 and "repository.full_name" in reply.json()["error"]
    assert deliver(world.hook_url, "release", b"{}", SECRET).status_code == 200
    world.settle()
    assert world.history() == []
    world.comment("!testme")
    assert len(finished(world.gk)) == 1


def test_duplicate_delivery_and_webhook_plus_poll_trigger_once(tmp_path):
    world = World(tmp_path, **{"poll-projects": [REPO]})
    try:
        world.conn.poller.start()   # polling switched on: it reads what comes from now on
        assert world.comment("!testme", comment_id=555, delivery="same").status_code == 202
        assert world.comment("!testme", comment_id=555, delivery="same").json()["reason"] == \
            "duplicate delivery"
        finished(world.gk, 1)   # the webhook's run is over before polling sees the comment
        cid = world.fake.add_comment(REPO, 2, "alice", "!testme")   # what the webhook said
        world.fake.comments[555] = {**world.fake.comments.pop(cid), "id": 555}
        cid = world.fake.add_comment(REPO, 3, "alice", "!testme")   # seen by polling only
        world.conn.poll_once()
        world.settle()
        items = finished(world.gk, 2)
        assert sorted(i["change"]["number"] for i in items) == [2, 3]
        assert world.conn.poll_once() >= 0
        world.settle()
        # a restart remembers what it saw
        world.restart()
        world.conn.poll_once()
        world.settle()
        assert len(world.gk.store.history()) == 2, cid
    finally:
        world.close()
    assert world.fake.violations == []


def test_a_push_to_the_pr_mid_run_cancels_and_reruns(world):
    world.hold_file.touch()
    world.comment("!testme")
    old_sha = world.sha(2)
    wait_for(world.started.exists, 30, "the build to run")
    assert world.synchronize().status_code == 202
    world.settle()
    world.comment("!testme")
    world.hold_file.unlink()
    items = finished(world.gk, 2)
    new = [i for i in items if i["result"] == "SUCCESS"]
    assert len(new) == 1 and new[0]["change"]["sha"] == world.sha(2) != old_sha
    old = [i for i in items if i is not new[0]][0]
    assert old["change"]["sha"] == old_sha and old["result"] != "FAILURE"
    wait_for(lambda: world.fake.status_states(REPO, world.sha(2)).get("ccci/check") == "success",
             10, "new head reported")
    # the superseded run reported no failure on the old head
    assert "failure" not in world.fake.status_states(REPO, old_sha).values()


def test_gitea_outage_delays_reports_but_loses_none(world):
    world.hold_file.touch()
    world.comment("!testme")
    wait_for(world.started.exists, 30, "the build to run")
    world.fake.down = True          # Gitea goes down while the job runs
    world.hold_file.unlink()
    finished(world.gk)
    wait_for(lambda: sum(1 for r in world.fake.requests if r.status == 500) >= 2, 10, "failures")
    assert world.fake.gate_comments(REPO, 2) == []
    assert world.conn.store.pending() > 0
    world.restart()                 # even a restart loses nothing
    world.fake.down = False
    assert "**check**: passed" in world.gate_comment()
    wait_for(lambda: world.conn.store.pending() == 0, 10, "the outbox to drain")
    assert world.fake.status_states(REPO, world.sha(2))["ccci/check"] == "success"


def test_gate_merges_through_gitea_at_the_tested_head(world):
    world.comment("!gate")
    [item] = finished(world.gk)
    assert (item["pipeline"], item["result"]) == ("gate", "SUCCESS")
    assert world.fake.merges == [(REPO, 2, {"Do": "merge", "head_commit_id": world.sha(2)})]


def test_gitea_refusing_a_merge_is_reported_truthfully(world):
    world.fake.merge_answer = (409, "head out of date")
    world.comment("!gate")
    [item] = finished(world.gk)
    assert item["result"] == "MERGE_FAILED" and "409" in item["failing_reason"]
    assert "refused the merge" in world.gate_comment()


def test_a_refused_testme_can_be_answered(tmp_path):
    world = World(tmp_path, **{"reply-to-refused": True})
    try:
        world.comment("!testme", user="mallory")
        reply = world.gate_comment()
        assert reply.startswith("@mallory only members") and "<!-- ccci-gate -->" in reply
        world.settle()
        assert world.history() == []
    finally:
        world.close()
    assert world.fake.violations == []


def test_a_pr_closed_mid_run_is_dequeued_without_a_report(world):
    world.hold_file.touch()
    world.comment("!testme")
    wait_for(world.started.exists, 30, "the build to run")
    payload = copy.deepcopy(conformance_payload("pull_request_closed.json"))
    payload["repository"]["full_name"] = REPO
    payload["number"] = payload["pull_request"]["number"] = 2
    payload["pull_request"]["head"]["sha"] = world.sha(2)
    assert world.send("pull_request", payload).status_code == 202
    world.settle()
    wait_for(lambda: not world.gk.scheduler.call(
        lambda engine: [i for m in engine.managers.values() for i in m.items]), 30, "the dequeue")
    world.hold_file.unlink()
    assert world.fake.gate_comments(REPO, 2) == []
    assert "failure" not in world.fake.status_states(REPO, world.sha(2)).values()
