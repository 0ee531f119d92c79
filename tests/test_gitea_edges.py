"""Gitea edges: signed payloads trusted only as far as they deserve, every path segment
escaped, and an outbox that drains soon after an outage of any length."""
from __future__ import annotations

import copy
import json
import re
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from ccci_gate.drivers.gitea.api import BadPath, GiteaAPI, GiteaError, GiteaUnavailable, path
from ccci_gate.drivers.gitea.payloads import PayloadError, own_words, parse, parse_api_comment
from ccci_gate.drivers.gitea.reporter import MAX_ATTEMPTS, MAX_DELAY, Outbox, backoff
from ccci_gate.drivers.gitea.store import GiteaStore

from e2e_helpers import finished
from fake_gitea import CONFORMANCE, FakeGitea
from test_gitea_e2e import World

ROOT = Path(__file__).resolve().parents[1]


def payload(name: str) -> dict:
    return json.loads((CONFORMANCE / "gitea" / name).read_text())


# --- payloads ------------------------------------------------------------------------------

@pytest.mark.parametrize("sha", ["", "abc", "g" * 40, "A" * 40, "a" * 39, "a" * 41,
                                 "a" * 40 + "\n", "../../etc", 40 * "0" + "; rm -rf /"])
def test_a_pull_request_head_that_is_not_a_commit_id_is_refused(sha):
    data = copy.deepcopy(payload("pull_request_opened.json"))
    data["pull_request"]["head"]["sha"] = sha
    with pytest.raises(PayloadError, match="head.sha"):
        parse("pull_request", data)


def test_sha1_and_sha256_commit_ids_are_accepted():
    data = copy.deepcopy(payload("pull_request_opened.json"))
    for sha in ("a" * 40, "b" * 64):
        data["pull_request"]["head"]["sha"] = sha
        assert parse("pull_request", data).head_sha == sha


def test_a_push_and_a_new_style_comment_check_their_commit_ids():
    push = copy.deepcopy(payload("push.json"))
    push["after"] = "HEAD"
    with pytest.raises(PayloadError, match="after"):
        parse("push", push)
    push = copy.deepcopy(payload("push.json"))
    push["before"] = "x"
    with pytest.raises(PayloadError, match="before"):
        parse("push", push)
    comment = copy.deepcopy(payload("issue_comment_pr.json"))
    comment["pull_request"] = {"head": {"sha": "not-a-sha"}, "base": {"ref": "main"}}
    with pytest.raises(PayloadError, match="head.sha"):
        parse("issue_comment", comment)


@pytest.mark.parametrize("name", ["../../etc", "a/..", "./b", "a/b/c", "noslash", "a b/c",
                                  "a/b?x", "a/b#c", "/a", "a/", "é/b"])
@pytest.mark.parametrize("event,file", [("pull_request", "pull_request_opened.json"),
                                        ("issue_comment", "issue_comment_pr.json"),
                                        ("push", "push.json")])
def test_a_repository_that_is_not_owner_slash_name_is_refused(name, event, file):
    data = copy.deepcopy(payload(file))
    data["repository"]["full_name"] = name
    with pytest.raises(PayloadError, match="full_name"):
        parse(event, data)


def test_well_formed_repository_names_pass():
    data = copy.deepcopy(payload("push.json"))
    for name in ("coop-cloud/hello", "Org_1/recipe.name", "a/b"):
        data["repository"]["full_name"] = name
        assert parse("push", data).repo == name


# --- commands: in the author's own words only ----------------------------------------------

def _shipped_comment_patterns() -> dict[str, list[str]]:
    """Pipeline → the comment regexes of its gitea trigger in layouts/default.yaml."""
    layout = yaml.safe_load((ROOT / "layouts" / "default.yaml").read_text())
    out: dict[str, list[str]] = {}
    for pipeline in layout["pipelines"]:
        for flt in (pipeline.get("trigger") or {}).get("gitea") or []:
            if "comment" in flt:
                out.setdefault(pipeline["name"], []).append(flt["comment"])
    return out


def _triggers(body: str) -> list[str]:
    """The shipped pipelines a PR comment with ``body`` starts (as the core matches it)."""
    data = copy.deepcopy(payload("issue_comment_pr.json"))
    data["comment"]["body"] = body
    text = parse("issue_comment", data).comment
    return sorted(name for name, patterns in _shipped_comment_patterns().items()
                  if any(re.search(p, text, re.MULTILINE) for p in patterns))


@pytest.mark.parametrize("body", [
    "```\n!testme\n```", "~~~~\n!testme\n~~~~", "```sh\n!gate\n```",
    "> !testme", "> they said\n!testme", "`!testme`", "``!testme``",
    "!testme `now`", "```\nunclosed\n!testme", "!TESTME", "!Testme", "!testme please",
])
def test_a_command_in_code_in_a_quote_or_in_other_case_does_not_trigger(body):
    assert _triggers(body) == []


@pytest.mark.parametrize("body,pipelines", [
    ("!testme", ["check"]), ("please\r\n!testme\r\n", ["check"]),
    ("```\n!gate\n```\n!testme", ["check"]), ("> quoted\n\n!testme", ["check"]),
    ("!testme --quick", ["quick"]), ("see `x`\n!gate", ["gate"]),
    ("    ```\n!testme", ["check"]),   # four spaces: indented code, not a fence
])
def test_a_command_on_its_own_line_triggers(body, pipelines):
    assert _triggers(body) == pipelines


def test_polled_comments_are_read_the_same_way():
    hook = parse_api_comment("o/r", 2, {"body": "```\n!testme\n```", "id": 5,
                                        "user": {"login": "alice"}})
    assert "!testme" not in hook.comment


def test_the_gate_still_knows_its_own_comment():
    assert "<!-- ccci-gate -->" in own_words("| a | `b` |\n\n> quick lane\n\n<!-- ccci-gate -->\n")


def test_end_to_end_a_quoted_command_runs_nothing_and_a_plain_one_runs(tmp_path):
    world = World(tmp_path)
    try:
        assert world.comment("> !testme\n\nlooks good").status_code == 202
        assert world.comment("```\n!testme\n```").status_code == 202
        world.settle()
        time.sleep(0.3)     # what the driver emitted has reached the scheduler
        status = requests.get(world.gk.web_url + "/status.json", timeout=10).json()
        assert [q for p in status["pipelines"] for q in p["queues"]] == [] and world.history() == []
        world.comment("!testme")
        [item] = finished(world.gk)
        assert item["pipeline"] == "check"
        assert len(world.history()) == 1
    finally:
        world.close()
    assert world.fake.violations == []


# --- paths sent to Gitea -------------------------------------------------------------------

def test_every_path_segment_is_escaped():
    assert path("/repos/{}/pulls/{}", "o/r", 2) == "/repos/o/r/pulls/2"
    assert path("/repos/{}/branches/{}", "o/r", "feature/x y") == "/repos/o/r/branches/feature/x%20y"
    assert path("/repos/{}/collaborators/{}/permission", "o/r", "a?b#c%") == \
        "/repos/o/r/collaborators/a%3Fb%23c%25/permission"


@pytest.mark.parametrize("part", ["../../etc", "..", ".", "", "o/", "/r", "o/../r"])
def test_a_path_part_that_would_climb_out_is_refused_unsent(part):
    with pytest.raises(BadPath):
        path("/repos/{}/pulls/{}", part, 9)


def test_the_api_client_sends_nothing_for_a_climbing_repo():
    fake = FakeGitea().start()
    try:
        api = GiteaAPI(fake.url, fake.token, retries=0)
        with pytest.raises(GiteaError):
            api.pull("../../etc", 9)
        assert fake.requests == []
    finally:
        fake.stop()


def test_a_pull_request_head_from_the_api_must_be_a_commit_id():
    fake = FakeGitea().start()
    try:
        fake.add_pull("o/r", 3, "not-a-sha")
        with pytest.raises(GiteaError, match="not a commit id"):
            GiteaAPI(fake.url, fake.token, retries=0).pull("o/r", 3)
    finally:
        fake.stop()


# --- the outbox after an outage ------------------------------------------------------------

def test_backoff_is_capped_so_a_backlog_drains_within_a_minute_of_recovery():
    delays = [backoff(n) for n in range(MAX_ATTEMPTS)]
    assert max(delays) == MAX_DELAY <= 30          # the next try is at most 30 s away
    assert sum(delays) > 4 * 3600                  # and a write waits out a 4-hour outage


class _FlakyAPI:
    """Down until ``up`` is set; records what was sent."""

    def __init__(self):
        self.up = threading.Event()
        self.sent: list[tuple[str, str, dict]] = []
        self.next_id = 1

    def call(self, method, where, json=None, params=None, retries=None):
        if not self.up.is_set():
            raise GiteaUnavailable(f"{method} {where}: ConnectionError")
        self.sent.append((method, where, json))

        class R:
            def json(inner):
                self.next_id += 1
                return {"id": self.next_id}
        return R()


def test_after_an_outage_the_backlog_goes_out_in_order_once(tmp_path):
    store = GiteaStore(tmp_path / "gitea.sqlite")
    api = _FlakyAPI()
    wake = threading.Event()
    outbox = Outbox(api, store, wake, max_delay=0.2)
    for i in range(20):
        store.push("status", "o/r", "a" * 40, {"state": "pending", "context": f"c{i}"})
    outbox.start()
    try:
        deadline = threading.Event()
        deadline.wait(1.0)                         # an outage: many failed attempts
        assert api.sent == [] and store.pending() == 20
        api.up.set()
        for _ in range(100):
            if store.pending() == 0:
                break
            deadline.wait(0.05)
        assert [body["context"] for _, _, body in api.sent] == [f"c{i}" for i in range(20)]
    finally:
        outbox.stop()
        store.close()
