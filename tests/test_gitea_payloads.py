"""Every real Gitea payload in tests/fixtures/conformance/gitea through the driver's parser and
signature check, with the headers a real Gitea sends."""
from __future__ import annotations

import json

import pytest

from ccci_gate.drivers.gitea.webhook import verify_signature
from ccci_gate.drivers.gitea.payloads import PayloadError, parse, parse_api_comment, pr_number_of

from fake_gitea import CONFORMANCE, ApiSpec, headers_for

SECRET = "IsWishesWereHorsesWedAllBeEatingSteak!"
VECTORS = {
    "issue_comment_pr.json": "8b38bf221adbaef2ce01cfa810c6d9cb977414fec306895973aea61e10e8d5a8",
    "issue_comment_issue.json": "690180a8c853460cba88f9b09911a531d449e9f63ed6b1ff0a0def3b972ca744",
    "pull_request_opened.json": "65c18a212efc7bde0f336acaec87f596fe20e80b2a0e7e51a790dd38393ff771",
    "push_new_branch_hmac.json": "60fe446c74fa0cb9474f98cc557db79e10c7aaf22cf324ad65239600b9e4d915",
}

# file → what the driver must extract (the conformance README's last column)
EXPECTED = {
    "issue_comment_pr.json": dict(event="comment", action="created", repo="example/example",
                                  number=2, comment="example", user="example", head_sha="",
                                  comment_id=6),
    "issue_comment_issue.json": dict(event="ignored", repo="example/example", number=1),
    "pull_request_opened.json": dict(event="pull_request", action="opened", repo="example/example",
                                     number=2, head_sha="48e773f892a831faa47c0a160d1b7f0cd369ae2a",
                                     branch="master", user="example2"),
    "pull_request_synchronized.json": dict(
        event="pull_request", action="synchronized", repo="Test-CI/multi-line-secrets", number=2,
        head_sha="788ed8d02d3b7fcfcf6386dbcbca696aa1d4dc25", branch="main"),
    "pull_request_closed_merged.json": dict(
        event="pull_request", action="merged", repo="anbraten/test-repo", number=1, branch="main",
        merge_commit="f2440f050054df0f8ecabcace648f1683509064c"),
    "pull_request_closed.json": dict(event="pull_request", action="closed",
                                     repo="anbraten/test-repo", number=1, merge_commit=""),
    "pull_request_reopened.json": dict(
        event="pull_request", action="reopened", repo="test_it/test_ci_thing", number=1,
        head_sha="36b5813240a9d2daa29b05046d56a53e18f39a3e"),
    "push.json": dict(event="push", action="updated", ref="refs/heads/main", branch="main",
                      user="test-user"),
    "push_new_branch.json": dict(event="push", action="created", ref="refs/heads/fdsafdsa",
                                 branch="fdsafdsa", before="0" * 40),
    "push_new_branch_hmac.json": dict(event="push", action="created", ref="refs/heads/master",
                                      branch="master"),
}


def test_every_conformance_file_is_covered():
    assert sorted(p.name for p in (CONFORMANCE / "gitea").glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_payload_extraction(name):
    payload = json.loads((CONFORMANCE / "gitea" / name).read_text())
    event, _ = headers_for(name)
    hook = parse(event, payload)
    for key, value in EXPECTED[name].items():
        assert getattr(hook, key) == value, (name, key)
    if name.startswith("push") and name != "push_new_branch.json":
        assert hook.after == payload["after"] and hook.before == payload["before"]


def test_comment_payload_of_gitea_1_23_carries_the_head():
    payload = json.loads((CONFORMANCE / "gitea" / "issue_comment_pr.json").read_text())
    payload["pull_request"] = {"head": {"sha": "a" * 40}, "base": {"ref": "main"}}
    hook = parse("issue_comment", payload)
    assert (hook.head_sha, hook.branch) == ("a" * 40, "main")


@pytest.mark.parametrize("name,signature", sorted(VECTORS.items()))
def test_hmac_vectors(name, signature):
    body = (CONFORMANCE / "gitea" / name).read_bytes()
    assert verify_signature(SECRET, body, signature)
    assert verify_signature(SECRET, body, signature.upper())
    tampered = bytearray(body)
    tampered[len(tampered) // 2] ^= 0x01
    assert not verify_signature(SECRET, bytes(tampered), signature)
    assert not verify_signature(SECRET + "x", body, signature)


@pytest.mark.parametrize("event,payload,why", [
    ("issue_comment", {"action": "created"}, "repository.full_name"),
    ("pull_request", {"repository": {"full_name": "o/r"}, "action": "opened",
                      "pull_request": {"number": 1, "base": {"ref": "main"}}}, "head.sha"),
    ("push", {"repository": {"full_name": "o/r"}, "ref": "refs/heads/main"}, "after"),
    ("issue_comment", [], "not a JSON object"),
    ("", {}, "X-Gitea-Event"),
    ("pull_request", {"repository": {"full_name": "o/r"}, "action": "opened",
                      "pull_request": {"number": "1"}}, "wrong type"),
])
def test_unusable_payloads_say_why(event, payload, why):
    with pytest.raises(PayloadError, match=why.replace(".", r"\.")):
        parse(event, payload)


def test_unknown_events_and_deleted_branches_are_ignored():
    assert parse("release", {}).event == "ignored"
    push = json.loads((CONFORMANCE / "gitea" / "push.json").read_text())
    push["after"] = "0" * 40
    assert parse("push", push).event == "ignored"


def test_polled_comments():
    comment = {"id": 7, "body": "!testme", "user": {"login": "alice"},
               "pull_request_url": "https://g/o/r/pulls/3", "issue_url": "https://g/o/r/issues/3"}
    assert pr_number_of(comment) == 3
    assert pr_number_of({**comment, "pull_request_url": ""}) is None
    hook = parse_api_comment("o/r", 3, comment)
    assert (hook.comment_id, hook.user, hook.comment, hook.number) == (7, "alice", "!testme", 3)


def test_the_fake_checks_requests_against_gitea_api():
    spec = ApiSpec()
    ok = spec.check("POST", "/api/v1/repos/o/r/statuses/abc", {},
                    {"state": "success", "context": "ccci/check", "target_url": "", "description": ""})
    assert ok == []
    assert spec.check("POST", "/api/v1/repos/o/r/statuses/abc", {}, {"state": "green"})
    assert spec.check("POST", "/api/v1/repos/o/r/pulls/1/merge", {}, {"head_commit_id": "x"})
    assert spec.check("POST", "/api/v1/repos/o/r/pulls/1/merge", {}, {"Do": "yolo"})
    assert spec.check("GET", "/api/v1/repos/o/r/nonsense", {}, None)
    assert spec.check("GET", "/api/v1/repos/o/r/pulls", {"bogus": ["1"]}, None)
    assert spec.check("POST", "/api/v1/repos/o/r/issues/2/comments", {}, {"text": "x"})


def test_commit_status_states_follow_the_one_infra_definition():
    from ccci_gate.core.model import Result
    from ccci_gate.drivers.gitea.reporter import status_state
    assert status_state(None) == "pending" and status_state("SUCCESS") == "success"
    for result in Result:
        if result.is_infra:
            assert status_state(result.value) == "error", result
        elif result.blames_change:
            assert status_state(result.value) == "failure", result
    assert status_state("MERGE_FAILED") == "error"
