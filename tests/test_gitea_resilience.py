"""The Gitea driver when Gitea is away or answers oddly: nothing lost to an outage,
nothing stale left behind, and (end to end) no signed payload trusted further than it
deserves, no command read out of a quote (the parsing itself: ``test_gitea_edges.py``).

End to end against the fake Gitea (which checks every request against Gitea's API
description), plus unit tests of the pieces where a whole gatekeeper adds nothing.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time

import pytest
import requests

from ccci_gate.drivers.gitea.api import GiteaAPI, GiteaUnavailable
from ccci_gate.drivers.gitea.connection import GiteaConnection
from ccci_gate.drivers.gitea.payloads import Hook
from ccci_gate.drivers.gitea.webhook import verify_signature
from ccci_gate.drivers.gitea.poller import CATCH_UP, Poller, stamp
from ccci_gate.drivers.gitea.reporter import MAX_DELAY, Outbox
from ccci_gate.drivers.gitea.store import GiteaStore

from e2e_helpers import admin, finished, wait_for
from fake_gitea import FakeGitea, conformance_payload, deliver
from test_gitea_e2e import REPO, SECRET, World

FAST = {"api-retries": 0}


def fast(world: World) -> World:
    world.conn.inbox.retry_cap = 0.3
    world.conn.outbox.max_delay = 0.3
    return world


def failed_requests(fake: FakeGitea) -> int:
    return sum(1 for r in fake.requests if r.status >= 500)


@pytest.fixture
def world(tmp_path):
    w = fast(World(tmp_path, **FAST))
    yield w
    w.close()
    assert w.fake.violations == []


# --- a !testme during an outage is not lost ---------------------------------------------

@pytest.mark.parametrize("outage", ["503", "refused"])
def test_a_testme_sent_during_an_outage_runs_once_gitea_is_back(world, outage, caplog):
    caplog.set_level(logging.INFO, logger="ccci_gate.drivers.gitea")
    if outage == "503":
        world.fake.down_status, world.fake.down = 503, True
    else:
        world.fake.go_offline()
    assert world.comment("!testme", comment_id=880001).status_code == 202
    if outage == "503":
        wait_for(lambda: failed_requests(world.fake) >= 2, 10, "lookups retried")
    else:
        wait_for(lambda: caplog.text.count("waits for Gitea") >= 2, 10, "lookups retried")
    # the same comment delivered again while Gitea is away: still one run in the end
    assert world.comment("!testme", comment_id=880001).status_code == 202
    assert world.history() == [] and world.conn.store.inbox_size() == 2
    if outage == "503":
        world.fake.down = False
    else:
        world.fake.come_back()
    [item] = finished(world.gk)
    assert (item["pipeline"], item["change"]["sha"]) == ("check", world.sha(2))
    world.settle()
    # redelivered after recovery: it ran, so now it is "already handled"
    world.comment("!testme", comment_id=880001)
    world.settle()
    assert len(world.history()) == 1
    assert "dropped" not in caplog.text and "already handled" in caplog.text


def test_a_queued_comment_survives_a_restart_during_the_outage(world):
    world.fake.down = True
    assert world.comment("!testme").status_code == 202
    wait_for(lambda: failed_requests(world.fake) >= 1, 10, "a failed lookup")
    world.restart()
    fast(world)
    assert world.conn.store.inbox_size() == 1
    world.fake.down = False
    [item] = finished(world.gk)
    assert item["change"]["number"] == 2


class FlakyAPI:
    """Gitea that answers everything but the lookup of one pull request."""

    def __init__(self):
        self.broken = True
        self.calls: list[str] = []

    def pull(self, repo, number):
        from ccci_gate.drivers.gitea.api import PullRequest
        self.calls.append(f"pull {repo}#{number}")
        if self.broken:
            raise GiteaUnavailable("GET pulls: 500 Internal Server Error")
        return PullRequest(number, "a" * 40, "main")

    def reachable(self):
        return True

    def is_member(self, org, user):
        self.calls.append(f"member {org} {user}")
        return True

    def can_write(self, repo, user):
        return True

    def changed_files(self, repo, number):
        return ()

    def redact(self, text):
        return text


def comment_hook(cid: int = 7, repo: str = "org/a") -> Hook:
    return Hook("comment", action="created", repo=repo, number=2, comment="!testme",
                comment_id=cid, user="alice")


def test_a_hook_gitea_keeps_failing_is_given_up_and_may_be_redelivered(tmp_path):
    api, events = FlakyAPI(), []
    conn = GiteaConnection("gitea", {"driver": "gitea", "url": "http://gitea.invalid",
                                     "webhook-secret": "s"}, events.append, tmp_path, api=api)
    conn.inbox.retry_cap = 0.0
    try:
        assert conn.submit(comment_hook(), "delivery-1")
        for _ in range(10):
            conn.inbox.drain()
        assert conn.store.inbox_size() == 0 and events == []     # given up, not forever
        api.broken = False
        assert conn.submit(comment_hook(), "delivery-1")          # Gitea's "redeliver"
        conn.inbox.drain()
        assert len(events) == 1 and events[0].change.sha == "a" * 40
        assert not conn.submit(comment_hook(), "delivery-1")      # now a duplicate
        assert conn.submit(comment_hook(), "delivery-2")          # the same comment anew
        conn.inbox.drain()
        assert len(events) == 1                                   # already handled
    finally:
        conn.store.close()


# --- switching polling on does not replay old comments ----------------------------------

def test_switching_polling_on_does_not_replay_old_comments(tmp_path):
    world = fast(World(tmp_path, **FAST, **{"poll-projects": [REPO], "poll-interval": 0.1}))
    try:
        polls = lambda: sum(1 for r in world.fake.requests if r.path.endswith("/issues/comments"))
        world.fake.add_comment(REPO, 2, "alice", "!testme", when="2020-03-01T10:00:00Z")
        world.fake.add_comment(REPO, 3, "alice", "!testme",
                               when=stamp(time.time() - 600))   # ten minutes before polling began
        wait_for(lambda: polls() >= 3, 10, "three polls")
        world.settle()
        assert world.history() == []
        world.fake.add_comment(REPO, 3, "alice", "!testme")     # new: runs
        [item] = finished(world.gk)
        assert item["change"]["number"] == 3
    finally:
        world.close()
    assert world.fake.violations == []


def test_a_comment_polled_during_an_outage_runs_once_gitea_is_back(tmp_path):
    world = fast(World(tmp_path, **FAST, **{"poll-projects": [REPO], "poll-interval": 0.1}))
    try:
        world.fake.down = True
        world.fake.add_comment(REPO, 2, "alice", "!testme")
        wait_for(lambda: failed_requests(world.fake) >= 3, 10, "failed polls")
        assert world.history() == []
        world.fake.down = False
        [item] = finished(world.gk)
        assert item["change"]["number"] == 2
        time.sleep(0.5)                                  # more polls: still one run
        world.settle()
        assert len(world.history()) == 1
    finally:
        world.close()
    assert world.fake.violations == []


def test_a_stale_cursor_starts_at_now_and_a_fresh_one_resumes(tmp_path):
    store = GiteaStore(tmp_path / "g.sqlite")
    now = 1_800_000_000.0
    store.set_cursor("o/stale", stamp(now - CATCH_UP - 60))
    store.set_cursor("o/fresh", stamp(now - 600))
    Poller(None, store, ["o/stale", "o/fresh", "o/new"], lambda h: True, clock=lambda: now).start()
    assert store.cursor("o/stale") == store.cursor("o/new") == stamp(now)
    assert store.cursor("o/fresh") == stamp(now - 600)
    store.close()


# --- superseded, closed and dequeued items leave no pending status ----------------------

def no_pending(world: World, sha: str) -> dict:
    return wait_for(lambda: (lambda s: s if s and "pending" not in s.values() else None)(
        world.fake.status_states(REPO, sha, full=True) and
        {c: b["state"] for c, b in world.fake.status_states(REPO, sha, full=True).items()}),
        10, f"no pending status on {sha[:8]}")


def descriptions(world: World, sha: str) -> dict[str, str]:
    return {c: b["description"] for c, b in world.fake.status_states(REPO, sha, full=True).items()}


def item_page(world: World, item_id: str) -> dict:
    """The item's page once it shows the item gone (the live view follows within 0.1 s)."""
    get = lambda: requests.get(f"{world.gk.web_url}/items/{item_id}", timeout=10).json()
    return wait_for(lambda: (lambda page: page if page["state"] == "DEQUEUED" else None)(get()),
                    10, f"item {item_id} shown dequeued")


def wait_dequeued(world: World, count: int) -> list[dict]:
    rows = wait_for(lambda: len([r for r in world.history() if r["state"] == "DEQUEUED"]) >= count
                    and world.history(), 30, f"{count} dequeued items")
    return [r for r in rows if r["state"] == "DEQUEUED"]


def test_a_superseded_item_ends_its_statuses_and_says_so(world):
    world.hold_file.touch()
    world.comment("!testme")
    old_sha = world.sha(2)
    wait_for(world.started.exists, 30, "the build to run")
    wait_for(lambda: world.fake.status_states(REPO, old_sha).get("ccci/check") == "pending", 10,
             "pending statuses")
    world.synchronize()
    new_sha = world.sha(2)
    [row] = wait_dequeued(world, 1)
    states = no_pending(world, old_sha)
    assert states == {"ccci/check": "error", "ccci/check/hold": "error"}
    assert descriptions(world, old_sha)["ccci/check"] == f"check: superseded by {new_sha}"
    page = item_page(world, row["id"])
    assert (page["state"], page["message"]) == ("DEQUEUED", f"superseded by {new_sha}")
    world.hold_file.unlink()
    assert world.fake.gate_comments(REPO, 2) == []


def test_a_closed_pull_request_and_an_operator_dequeue_end_their_statuses(world):
    world.hold_file.touch()
    world.comment("!testme", number=2)
    world.comment("!testme", number=3)
    for n in (2, 3):
        wait_for(lambda: world.fake.status_states(REPO, world.sha(n)).get("ccci/check") == "pending",
                 30, "pending statuses")
    payload = copy.deepcopy(conformance_payload("pull_request_closed.json"))
    payload["repository"]["full_name"] = REPO
    payload["number"] = payload["pull_request"]["number"] = 2
    payload["pull_request"]["head"]["sha"] = world.sha(2)
    assert world.send("pull_request", payload).status_code == 202
    reply = admin(world.gk, "/admin/dequeue", {"project": REPO, "change": 3})
    assert reply.status_code == 202, reply.text
    rows = wait_dequeued(world, 2)
    assert set(no_pending(world, world.sha(2)).values()) == {"error"}
    assert set(no_pending(world, world.sha(3)).values()) == {"error"}
    assert descriptions(world, world.sha(2))["ccci/check"] == "check: pull request closed"
    assert descriptions(world, world.sha(3))["ccci/check/hold"] == "hold: dequeued by an operator"
    pages = {item_page(world, r["id"])["change"]["number"]: item_page(world, r["id"]) for r in rows}
    assert pages[2]["state"] == pages[3]["state"] == "DEQUEUED"
    assert pages[2]["message"] == "change closed at its source"
    assert pages[3]["message"] == "dequeued by an operator"
    world.hold_file.unlink()


# --- the outbox drains within a minute of Gitea's return, in order, once ----------------

def test_the_outbox_backoff_is_capped_so_the_backlog_drains_soon_after_gitea_returns(tmp_path):
    fake = FakeGitea().start()
    fake.add_pull(REPO, 2, "a" * 40)
    store = GiteaStore(tmp_path / "g.sqlite")
    wake = threading.Event()
    outbox = Outbox(GiteaAPI(fake.url, fake.token, retries=0), store, wake)
    try:
        fake.down = True
        store.push("status", REPO, "a" * 40, {"state": "pending", "context": "ccci/check",
                                              "description": "first", "target_url": ""})
        for attempt in range(40):                 # a long outage: forty failed tries
            outbox.flush_one()
            store._run("UPDATE outbox SET next_at = 0")
        head = store.head()
        assert head is not None and head.attempts == 40
        outbox.flush_one()
        assert store.next_at() - time.time() <= MAX_DELAY <= 30    # never more than 30 s
        assert store.pending() == 1                               # and never dropped
    finally:
        store.close()
        fake.stop()


def test_after_an_outage_writes_go_out_in_order_and_none_twice(tmp_path):
    fake = FakeGitea().start()
    fake.add_pull(REPO, 2, "a" * 40)
    store = GiteaStore(tmp_path / "g.sqlite")
    wake = threading.Event()
    outbox = Outbox(GiteaAPI(fake.url, fake.token, retries=0), store, wake, max_delay=0.2)
    try:
        fake.down = True
        outbox.start()
        for n in range(10):
            store.push("status", REPO, "a" * 40, {"state": "pending", "context": f"ccci/c{n}",
                                                  "description": f"status {n}", "target_url": ""})
        store.push("comment", REPO, "2/check", {"body": "the verdict"})
        store.push("status", REPO, "a" * 40, {"state": "success", "context": "ccci/last",
                                              "description": "last", "target_url": ""})
        wake.set()
        wait_for(lambda: failed_requests(fake) >= 3, 10, "failed tries")
        fake.lose_answers(4)     # Gitea is back, but a proxy loses some answers
        fake.down = False
        wait_for(lambda: store.pending() == 0, 30, "the backlog to drain")
        posted = [b["description"] for _, _, b in fake.statuses]
        assert posted == [f"status {n}" for n in range(10)] + ["last"]   # in order, once each
        assert [c["body"] for c in fake.gate_comments(REPO, 2)] == ["the verdict"]
        assert fake.violations == []
    finally:
        outbox.stop()
        store.close()
        fake.stop()


def test_a_wrong_token_holds_writes_and_comments_until_the_operator_fixes_it(world):
    world.fake.accept_bad_tokens_as_401 = True
    world.fake.token, token = "rotated-token", world.fake.token    # the bot's token was revoked
    assert world.comment("!testme").status_code == 202
    wait_for(lambda: any(r.status == 401 for r in world.fake.requests), 10, "a 401")
    time.sleep(0.5)
    assert world.history() == [] and world.conn.store.inbox_size() == 1   # waiting, not dropped
    world.fake.token = token                                      # fixed
    [item] = finished(world.gk)
    assert item["result"] == "SUCCESS"
    wait_for(lambda: world.fake.status_states(REPO, world.sha(2)).get("ccci/check") == "success",
             10, "the statuses")


# --- a gate merge outlives a short outage and a lost answer -----------------------------

def test_a_merge_waits_out_a_short_outage(world):
    world.hold_file.touch()
    world.comment("!gate")
    wait_for(world.started.exists, 30, "the build to run")
    world.fake.down = True
    world.hold_file.unlink()
    wait_for(lambda: any(r.path.endswith("/merge") for r in world.fake.requests), 30,
             "a merge tried while Gitea is down")
    world.fake.down = False
    [item] = finished(world.gk)
    assert item["result"] == "SUCCESS"
    assert world.fake.merges == [(REPO, 2, {"Do": "merge", "head_commit_id": world.sha(2)})]


def test_a_merge_whose_answer_was_lost_is_not_reported_as_refused(world):
    world.fake.lose_answer_to.add("/pulls/2/merge")
    world.comment("!gate")
    [item] = finished(world.gk)
    assert item["result"] == "SUCCESS"
    assert len(world.fake.merges) == 1 and world.fake.pulls[(REPO, 2)]["merged"]


# --- signed payloads are trusted only as far as they deserve ----------------------------

def test_bad_shas_and_repository_names_are_refused_before_any_api_call(world):
    before = len(world.fake.requests)
    evil = copy.deepcopy(conformance_payload("issue_comment_pr.json"))
    evil["repository"]["full_name"] = "../../etc"
    evil["issue"]["number"] = 9
    evil["comment"]["body"] = "!testme"
    reply = world.send("issue_comment", evil)
    assert reply.status_code == 422 and "full_name" in reply.json()["error"]
    pr = copy.deepcopy(conformance_payload("pull_request_synchronized.json"))
    pr["repository"]["full_name"] = REPO
    for sha in ("abc", "A" * 40, "a" * 39 + "g", "../" + "a" * 37):
        pr["pull_request"]["head"]["sha"] = sha
        reply = world.send("pull_request", pr, event_type="pull_request_sync")
        assert reply.status_code == 422 and "sha" in reply.json()["error"]
    newer = copy.deepcopy(evil)
    newer["repository"]["full_name"] = REPO
    newer["pull_request"] = {"head": {"sha": "x" * 40}, "base": {"ref": "main"}}
    assert world.send("issue_comment", newer).status_code == 422
    world.settle()
    assert world.fake.requests[before:] == [] and world.history() == []


def test_odd_signed_input_is_a_4xx_not_a_500(world):
    nested = b"[" * 100_000 + b"]" * 100_000
    reply = deliver(world.hook_url, "issue_comment", nested, SECRET)
    assert reply.status_code == 400 and "nested too deep" in reply.json()["error"]
    body = json.dumps(conformance_payload("issue_comment_pr.json")).encode()
    assert not verify_signature(SECRET, body, "\u00e9" * 64)   # no TypeError from hmac
    world.settle()
    assert world.history() == []
    assert world.comment("!testme").status_code == 202      # still serving


def test_a_bad_repository_in_a_hook_never_reaches_the_api(tmp_path):
    api, events = FlakyAPI(), []
    conn = GiteaConnection("gitea", {"driver": "gitea", "url": "http://gitea.invalid",
                                     "webhook-secret": "s"}, events.append, tmp_path, api=api)
    try:
        assert conn.handle_hook(comment_hook(repo="../../etc")) is None
        assert api.calls == [] and events == []
    finally:
        conn.store.close()


# --- commands: not in code blocks or quotes; case-sensitive -----------------------------

def test_commands_in_code_blocks_or_quotes_or_another_case_do_not_trigger(world):
    for text in ("```\n!testme\n```", "> !testme", "> you said\n!testme", "!TESTME",
                 "!Testme", "~~~\n!gate\n~~~"):
        assert world.comment(text).status_code == 202
    world.settle()
    assert world.history() == []
    world.comment("Looks good to me.\n\n!testme")
    [item] = finished(world.gk)
    assert item["pipeline"] == "check"
