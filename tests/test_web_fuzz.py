"""Fuzzing the HTTP listener of a running gatekeeper (``tests/web_fuzz.py``): thousands of
random and mutated requests — signed and unsigned webhooks built from the real payloads in
``tests/fixtures/conformance/gitea``, JSON nested thousands deep, non-ASCII and malformed
signatures, chunked and lying bodies, broken request lines, random admin calls and paths —
and not one answer is a 5xx; afterwards a real webhook is still accepted and the status
still served.

``CCCI_FUZZ_N`` sets the number of requests (default 3000), ``CCCI_FUZZ_SEED`` the seed
(default: random; the seed is printed with every failure). ``bench/web.py`` runs the same
requests against the stdlib listener ccci-gate had before, for comparison.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import requests

from e2e_helpers import make_repo, start_gatekeeper, write_layout
from fake_gitea import CONFORMANCE, FakeGitea, sign
from web_fuzz import fuzz

ROOT = Path(__file__).resolve().parents[1]
SECRET = "fuzz-secret"

PROJECTS = """
projects:
  - name: example/example
    check: [fuzz-noop]
"""
JOBS = """
jobs:
  - name: fuzz-noop
    run: scripts/noop.sh
"""


@pytest.fixture(scope="module")
def gatekeeper(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    fake = FakeGitea().start()
    make_repo(tmp / "repos", "example/example", {2: {"a.txt": "a\n"}})
    extra, jobs_dir = write_layout(tmp / "extra", "", PROJECTS, JOBS, {"noop.sh": "true\n"})
    gk = start_gatekeeper(
        tmp, extra, jobs_dir, tmp / "repos",
        layout=[str(ROOT / "layouts"), str(ROOT / "jobs"), str(extra), str(jobs_dir)],
        worker={"enabled": False},
        connections={"gitea": {"driver": "gitea", "url": fake.url, "token": fake.token,
                               "webhook-secret": SECRET, "bot-user": fake.bot}})
    yield gk
    gk.stop()
    fake.stop()


def test_no_request_gets_a_5xx_and_the_server_keeps_serving(gatekeeper):
    n = int(os.environ.get("CCCI_FUZZ_N", "3000"))
    seed = int(os.environ.get("CCCI_FUZZ_SEED", random.randrange(2**32)))
    url = gatekeeper.web_url
    result = fuzz(url, gatekeeper.web.port, n, seed, SECRET, gatekeeper.admin_token)
    assert result.signed_webhooks > n // 3
    assert not result.server_errors, (f"seed {seed}: {len(result.server_errors)} 5xx, e.g. "
                                      + "\n".join(result.server_errors[:10]))
    # and it still works: a real webhook is accepted, the status is served
    body = (CONFORMANCE / "gitea" / "push.json").read_bytes()
    ok = requests.post(f"{url}/webhooks/gitea", data=body, timeout=10,
                       headers={"X-Gitea-Event": "push", "X-Gitea-Signature": sign(SECRET, body)})
    assert ok.status_code in (200, 202), (seed, ok.status_code, ok.text)
    assert requests.get(f"{url}/status.json", timeout=10).status_code == 200
    print(f"fuzz seed {seed}: {n} requests, statuses {dict(sorted(result.statuses.items()))}")
