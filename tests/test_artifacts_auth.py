"""Artifact writes are authorised (issue 11): a PUT needs the buildset's write token,
reads stay public, and the token reaches no log, status or item page."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import requests

from ccci_gate.credentials import Signer, redacted
from ccci_gate.web.artifacts import ArtifactStore
from ccci_gate.web.routes import Router
from ccci_gate.web.server import WebServer
from ccci_gate.worker.kinds.bundle import StoreError, publish

from e2e_helpers import admin, admin_pipeline, finished, make_repo, start_gatekeeper, wait_for, \
    write_layout

A, B = "a" * 32, "b" * 32


@pytest.fixture
def store(tmp_path):
    signer = Signer("the gatekeeper's key")
    artifacts = ArtifactStore(tmp_path / "artifacts", signer)
    router = Router()
    artifacts.register(router)
    web = WebServer(router, "127.0.0.1", 0)
    web.start()
    yield artifacts, web.url
    web.shutdown()


def put(url: str, body: bytes, authorization: str | None = None) -> requests.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.put(url, data=body, headers=headers, timeout=10)


def test_a_put_needs_the_buildsets_token_and_reads_stay_public(store):
    artifacts, base = store
    url = f"{base}/artifacts/{A}/notes.txt"
    right, other = artifacts.token(A), artifacts.token(B)
    answers = []
    for authorization, status in [
            (None, 401), ("", 401), ("Bearer", 401), (f"token {right}", 401),
            ("Bearer 0123", 403), (f"Bearer {other}", 403),          # another buildset's
            (f"Bearer {artifacts.signer.sign('result', A)}", 403),  # a result token
            ("Bearer r\u00e9sultat", 400)]:                   # not ASCII: refused, no 500
        reply = put(url, b"x", authorization)
        assert reply.status_code == status, (authorization, reply.status_code, reply.text)
        answers.append(reply.text)
    assert put(url, b"x", None).headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert not (artifacts.root / A / "notes.txt").exists()
    assert requests.get(url, timeout=10).status_code == 404

    reply = put(url, b"the notes\n", f"Bearer {right}")
    assert reply.status_code == 201, reply.text
    answers.append(reply.text)
    got = requests.get(url, timeout=10)                 # no credentials: reads are public
    assert got.status_code == 200 and got.content == b"the notes\n"
    reply = put(url, b"changed\n", f"Bearer {right}")    # write-once, even with the token
    assert reply.status_code == 409
    answers.append(reply.text)
    assert requests.get(url, timeout=10).content == b"the notes\n"
    assert put(f"{base}/artifacts/{B}/notes.txt", b"x", f"Bearer {right}").status_code == 403
    assert not any(right in text or other in text for text in answers)


def test_publish_sends_the_token_and_says_what_refused_it(store):
    artifacts, base = store
    with pytest.raises(StoreError, match="answered 403"):
        publish(f"{base}/artifacts/{A}", b"bundle", artifacts.token(B))
    assert publish(f"{base}/artifacts/{A}", b"bundle", artifacts.token(A)) \
        == f"{base}/artifacts/{A}/recipe-bundle.tar.gz"
    assert (artifacts.root / A / "recipe-bundle.tar.gz").read_bytes() == b"bundle"


def test_a_credential_is_worth_nothing_for_another_purpose_or_subject():
    signer = Signer("k")
    token = signer.sign("artifacts", A)
    assert signer.check("artifacts", A, token)
    assert Signer("k").check("artifacts", A, token)          # no table: a restart keeps it
    assert not Signer("other key").check("artifacts", A, token)
    for purpose, subject, given in [("artifacts", B, token), ("result", A, token),
                                    ("artifacts", A, None), ("artifacts", A, ""),
                                    ("artifacts", A, "r\u00e9sultat"), ("artifacts", A, token[:-1])]:
        assert not signer.check(purpose, subject, given)


def test_secret_parameters_are_masked_by_the_one_rule():
    params = {"CCCI_ARTIFACTS_TOKEN": "s3cr3t-artifacts", "CCCI_RESULT_TOKEN": "s3cr3t-result",
              "DB_PASSWORD": "pw-value", "ZUUL_PROJECT": "org/app"}
    assert redacted(params) == {"CCCI_ARTIFACTS_TOKEN": "***", "CCCI_RESULT_TOKEN": "***",
                                "DB_PASSWORD": "***", "ZUUL_PROJECT": "org/app"}


SHOW_AND_PUBLISH = {"publish.sh": """
    env | sort
    echo "my token is $CCCI_ARTIFACTS_TOKEN"
    printf 'built at %s\\n' "$ZUUL_COMMIT" > out.txt
    curl -sS -f -H "Authorization: Bearer $CCCI_ARTIFACTS_TOKEN" -T out.txt \\
        "$CCCI_ARTIFACTS/out.txt"
    echo
    curl -sS -o /dev/null -w 'without the token: %{http_code}\\n' -X PUT \\
        --data-binary @out.txt "$CCCI_ARTIFACTS/again.txt"
    while [ ! -e "$RELEASE" ]; do sleep 0.05; done
    """}


def test_a_real_builds_log_status_and_item_page_never_show_the_token(tmp_path, caplog):
    """A shell job prints its whole environment and publishes with the token: the build's
    log, the gatekeeper's own log, /status.json (while it runs), /items/<id>,
    /history.json and /logs/<id> hold no trace of it."""
    caplog.set_level(logging.DEBUG)
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}})
    release = tmp_path / "release"
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), """
        projects:
          - name: org/app
            check: [publish]
        """, f"""
        jobs:
          - name: publish
            run: scripts/publish.sh
            parameters:
              RELEASE: {release}
        """, SHOW_AND_PUBLISH)
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos)
    try:
        reply = admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app",
                                             "change": 1})
        assert reply.status_code in (200, 202), reply.text

        def running():
            status = requests.get(gk.web_url + "/status.json", timeout=10)
            text = status.text
            return ("without the token" in _live_log(gk)) and text

        status_while_running = wait_for(running, 60, "the build to publish")
        item_id = wait_for(lambda: _item_ids(status_while_running), 5, "an item")[0]
        item_while_running = requests.get(f"{gk.web_url}/items/{item_id}", timeout=10).text
        release.touch()
        [item] = finished(gk)
        [job] = item["jobs"]
        assert job["result"] == "SUCCESS", job
        token = _the_token(gk)
        log = gk.logs.read(job["id"]).decode()   # finished: compressed at rest
        assert "CCCI_ARTIFACTS_TOKEN=***" in log and "my token is ***" in log
        assert "without the token: 401" in log
        published = requests.get(_artifacts_url(gk) + "/out.txt", timeout=10)
        assert published.status_code == 200 and published.text.startswith("built at ")
        shown = {
            "build log file": log,
            "/logs/<id>": requests.get(f"{gk.web_url}/logs/{job['id']}", timeout=10).text,
            "/status.json while running": status_while_running,
            "/status.json after": requests.get(gk.web_url + "/status.json", timeout=10).text,
            "/items/<id> while running": item_while_running,
            "/items/<id> after": requests.get(f"{gk.web_url}/items/{item_id}",
                                             timeout=10).text,
            "/history.json": requests.get(gk.web_url + "/history.json", timeout=10).text,
            "the gatekeeper's log (DEBUG, every logger)": caplog.text,
        }
        for where, text in shown.items():
            assert token not in text, f"the artifact token is in {where}"
    finally:
        release.touch()
        gk.stop()


def _live_log(gk) -> str:
    return "".join(p.read_text(errors="replace") for p in gk.log_dir.glob("*.log"))


def _item_ids(status: str) -> list[str]:
    return re.findall(r'"id": "([0-9a-f]{32})"', status)


def _the_artifacts_dir(gk) -> Path:
    [folder] = [p for p in gk.artifacts.root.iterdir() if p.is_dir()]
    return folder


def _the_token(gk) -> str:
    return gk.artifacts.token(_the_artifacts_dir(gk).name)


def _artifacts_url(gk) -> str:
    return f"{gk.web_url}/artifacts/{_the_artifacts_dir(gk).name}"


def test_two_puts_of_one_name_at_once_publish_it_once(tmp_path):
    """Review: ``PUT`` checked ``exists()`` then renamed a shared ``.<name>.part`` into
    place, so two PUTs of one name at once both answered 201 and the second replaced
    (or mixed into) the first: an artifact changed after it was published. Now exactly
    one wins; the other gets 409 and the file is the winner's bytes."""
    import threading
    import uuid

    from ccci_gate.web.routes import Request

    signer = Signer("k" * 32)
    artifacts = ArtifactStore(tmp_path / "artifacts", signer)
    for _ in range(5):
        buildset = uuid.uuid4().hex
        token = artifacts.token(buildset)
        bodies = [bytes([65 + i]) * (8 << 20) for i in range(2)]
        barrier = threading.Barrier(2)
        answers: dict[int, int] = {}

        def publish_one(i: int) -> None:
            request = Request("PUT", f"/artifacts/{buildset}/bundle.tar", {},
                              {"authorization": f"Bearer {token}"}, bodies[i])
            barrier.wait()
            answers[i] = artifacts.put(request).status
        threads = [threading.Thread(target=publish_one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers.values()) == [201, 409], answers
        winner = next(i for i, status in answers.items() if status == 201)
        stored = (tmp_path / "artifacts" / buildset / "bundle.tar").read_bytes()
        assert stored == bodies[winner]
        assert not list((tmp_path / "artifacts" / buildset).glob(".*")), "no part file left"
