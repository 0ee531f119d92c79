"""Signed webhooks fuzzed from the real payloads: every one is answered (202, 200 or a
4xx with a reason), none raises, and what is queued is well-formed.

Seeded, so a failure reproduces. The receiver is called directly (no HTTP server): what
is tested is the driver's handling of what a signed sender may put in a body.
"""
from __future__ import annotations

import collections
import copy
import json
import random

from ccci_gate.drivers.gitea.payloads import Hook, is_commit_id, is_repo_name
from ccci_gate.drivers.gitea.webhook import WebhookReceiver
from ccci_gate.web.routes import Request

from fake_gitea import CONFORMANCE, headers_for, sign

SECRET = "fuzz-secret"
CASES = 3000
VALUES = [None, 0, 1, -1, 2 ** 63, True, False, "", "x", "a" * 40, "A" * 40, [], {}, [1],
          {"a": 1}, 1.5, "../../etc", "o/r", "é" * 3, "\x00", "refs/heads/main", "0" * 40]
EVENTS = ["issue_comment", "pull_request", "push", "release", ""]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def mutate(payload: dict, rnd: random.Random) -> dict:
    payload = copy.deepcopy(payload)
    for _ in range(rnd.randint(1, 4)):
        paths = [p for p in _paths(payload) if p]
        if not paths:
            break
        path = rnd.choice(paths)
        node = payload
        for key in path[:-1]:
            node = node[key]
        if rnd.random() < 0.2 and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = copy.deepcopy(rnd.choice(VALUES))
    return payload


def test_fuzzed_signed_webhooks_get_an_answer_never_an_exception():
    files = sorted((CONFORMANCE / "gitea").glob("*.json"))
    bases = [(f.name, json.loads(f.read_text())) for f in files]
    queued: list[Hook] = []
    receiver = WebhookReceiver(SECRET, 1024 * 1024, lambda hook, delivery: queued.append(hook) or True)
    rnd = random.Random(20261126)
    answers: collections.Counter[int] = collections.Counter()
    for n in range(CASES):
        name, base = rnd.choice(bases)
        event = headers_for(name)[0] if rnd.random() < 0.8 else rnd.choice(EVENTS)
        body = json.dumps(mutate(base, rnd)).encode()
        if rnd.random() < 0.05:
            body = body[:rnd.randint(0, len(body))]                    # cut short
        signature = sign(SECRET, body) if rnd.random() < 0.95 else rnd.choice(
            ["", "zz", "é" * 64, sign(SECRET, body).upper(), " " + sign(SECRET, body)])
        headers = {"x-gitea-event": event, "x-gitea-signature": signature,
                   "x-gitea-delivery": f"fuzz-{n}"}
        answer = receiver.handle(Request("POST", "/webhooks/gitea", {}, headers, body))
        answers[answer.status] += 1
        assert answer.status in (200, 202, 400, 401, 403, 413, 422), (n, answer.status)
    assert answers[202] > 100 and answers[422] > 100, answers     # both paths exercised
    for hook in queued:
        assert is_repo_name(hook.repo)
        for sha in (hook.head_sha, hook.after, hook.merge_commit):
            assert sha == "" or is_commit_id(sha)
