"""The pages beside the API, without a browser: the live log stream (server-sent events
over the real listener, from real files), a change's page by ``Accept``, escaping,
estimates, and the routes. The engine is the real one, stepped by the gate harness; the
scheduler publishes its snapshot as it does for the HTTP threads."""
from __future__ import annotations

import copy
import gzip
import json
import re
import socket
import time
from pathlib import Path

import pytest
import requests

from ccci_gate.buildparams import split_secrets
from ccci_gate.core import events as ev
from ccci_gate.core.model import Change
from ccci_gate.scheduler import Scheduler
from ccci_gate.credentials import Signer
from ccci_gate.store import Store
from ccci_gate.web import logstream, pages as pages_module
from ccci_gate.web.api import GatekeeperAPI
from ccci_gate.web.artifacts import ArtifactStore
from ccci_gate.web.statusdoc import Estimates
from ccci_gate.web.pages import Pages, prefers_html, shown_params
from ccci_gate.web.routes import Router
from ccci_gate.web.server import WebServer
from gate_harness import Gate

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
EVIL = "<script>alert('x')</script>"


class World:
    """A real engine (the gate harness), its scheduler's snapshots, a store, log files and
    the HTTP listener with the API and the pages."""

    def __init__(self, tmp_path):
        self.gate = Gate()
        self.scheduler = Scheduler(self.gate.engine, merger=None, dispatcher=None)
        self.store = Store(tmp_path / "s.sqlite")
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.api = GatekeeperAPI(self.scheduler, self.store, self.logs, "token",
                                 reconfigure=lambda: [], pool=lambda: {},
                                 change_ref=lambda p, n: "", web_url="")
        self.pages = Pages(self.api)
        router = Router()
        self.api.register(router)
        self.pages.register(router)
        self.artifacts = ArtifactStore(tmp_path / "artifacts", Signer("the gatekeeper's key"))
        self.artifacts.register(router)
        self.web = WebServer(router, "127.0.0.1", 0)
        self.web.start()
        self.url = self.web.url

    def step(self, event: ev.Event) -> None:
        self.gate.send(event)
        self.publish()

    def publish(self) -> None:
        self.scheduler.publish()
        live, done = self.gate.engine.take_dirty()   # what the scheduler's store would save
        self.store.save_items(live)
        self.store.save_items(done, finished=True)

    def close(self) -> None:
        self.pages.close()
        self.web.shutdown()
        self.store.close()


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


class Events:
    """Reads a ``/stream/<id>`` response off a raw socket, as it arrives."""

    def __init__(self, url: str, path: str, headers: str = ""):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        self.data = b""

    def until(self, needle: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                chunk = b""
            if not chunk and time.monotonic() >= deadline:
                raise AssertionError(f"no {needle!r} within {timeout} s; got {self.data!r}")
            self.data += chunk
        return self.data

    def close(self) -> None:
        self.sock.close()


def running_build(world: World) -> str:
    world.step(ev.EnqueueRequest("gate", Change("org/a", "main", "refs/pull/1/head", number=1,
                                                patchset="sha1", sha="sha1", title=EVIL)))
    build_id = world.gate.builds[(1, "build")]
    # what the recording dispatcher keeps of its parameters (buildparams.py)
    kept, secrets = split_secrets({"ZUUL_PROJECT": "org/a", "CCCI_RESULT_TOKEN": "s3cr3t"})
    world.store.save_params([(build_id, "build:build", kept, secrets)])
    return build_id


def test_a_live_log_streams_each_line_as_written_and_ends_with_the_result(world):
    build_id = running_build(world)
    log = world.logs / f"{build_id}.log"
    log.write_text("one\n")
    stream = Events(world.url, f"/stream/{build_id}")
    try:
        head = stream.until(b"data: one\n\n")
        assert b"Content-Type: text/event-stream" in head and b"retry: 2000" in head
        with open(log, "a") as fh:
            fh.write(f"two {EVIL}\nthr")     # a line, and half of one
        stream.until(f"data: two {EVIL}\n\n".encode())
        assert b"thr" not in stream.data
        with open(log, "a") as fh:
            fh.write("ee\r\n")
        stream.until(b"data: three\n\n")     # whole, and the \r cannot break the framing
        assert b"event: end" not in stream.data
        world.step(ev.BuildCompleted(build_id, "FAILURE"))
        stream.until(b"event: end\ndata: FAILURE\n\n")
    finally:
        stream.close()
    events = stream.data.split(b"\r\n\r\n", 1)[1]
    assert events.index(b"data: one") < events.index(b"data: two") < events.index(b"data: three")


def test_a_finished_builds_log_is_sent_whole_then_ends_also_from_gzip(world):
    build_id = running_build(world)
    world.step(ev.BuildCompleted(build_id, "SUCCESS"))
    with gzip.open(world.logs / f"{build_id}.log.gz", "wt") as fh:
        fh.write("a\nb\nno newline at the end")
    started = time.monotonic()
    body = requests.get(f"{world.url}/stream/{build_id}", timeout=10).text
    assert time.monotonic() - started < 3
    assert body == ("retry: 2000\n\ndata: a\n\nid: 4\ndata: b\n\n"
                    "id: 25\ndata: no newline at the end\n\nevent: end\ndata: SUCCESS\n\n")


def test_a_reconnecting_browser_goes_on_from_its_last_event_id(world):
    build_id = running_build(world)
    world.step(ev.BuildCompleted(build_id, "SUCCESS"))
    (world.logs / f"{build_id}.log").write_text("first\nsecond\n")
    first = requests.get(f"{world.url}/stream/{build_id}", timeout=10).text
    assert "id: 13\ndata: second" in first
    again = requests.get(f"{world.url}/stream/{build_id}", headers={"Last-Event-ID": "6"},
                         timeout=10).text
    assert "first" not in again and "data: second" in again


def test_a_client_that_goes_away_frees_its_thread_and_slots_are_bounded(world, monkeypatch):
    monkeypatch.setattr(logstream, "HEARTBEAT", 0.3)
    build_id = running_build(world)
    world.pages._streams = pages_module.threading.BoundedSemaphore(2)
    streams = [Events(world.url, f"/stream/{build_id}") for _ in range(2)]
    for s in streams:
        s.until(b"retry: 2000")
    refused = requests.get(f"{world.url}/stream/{build_id}", timeout=10)
    assert refused.status_code == 503 and "live logs are open" in refused.json()["error"]
    for s in streams:
        s.close()
    # the next keep-alive fails to write: each stream ends and gives its slot back
    deadline = time.monotonic() + 5
    while world.pages._streams._value < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.pages._streams._value == 2
    stream = Events(world.url, f"/stream/{build_id}")
    stream.until(b"retry: 2000")
    stream.close()


def test_an_unknown_build_is_404(world):
    for path in ("/stream/", "/console/"):
        assert requests.get(world.url + path + "0" * 32, timeout=10).status_code == 404
        assert requests.get(world.url + path + "../../etc/passwd", timeout=10).status_code == 404


def test_a_changes_page_for_browsers_and_the_same_json_for_everyone_else(world):
    build_id = running_build(world)
    [item_id] = world.scheduler.snapshot.items
    live = requests.get(f"{world.url}/items/{item_id}", timeout=10).json()
    assert live == json.loads(json.dumps(world.scheduler.snapshot.items[item_id]))
    world.step(ev.BuildCompleted(build_id, "FAILURE"))    # the head failed: reported
    world.store.record_report(item_id, "failure", "log")
    url = f"{world.url}/items/{item_id}"
    as_json = requests.get(url, timeout=10)
    assert as_json.headers["Content-Type"] == "application/json"
    assert as_json.json() == world.store.item(item_id)
    assert as_json.json()["result"] == "FAILURE"
    curl = requests.get(url, headers={"Accept": "*/*"}, timeout=10)
    assert curl.json() == as_json.json()
    page = requests.get(url, headers={"Accept": BROWSER}, timeout=10)
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    html = page.text
    assert EVIL not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert f"ccci-gate replay {build_id}" in html
    assert "refs/zuul/main/1" in html                    # the buildset's ref
    assert "ZUUL_PROJECT=org/a" in html and "s3cr3t" not in html
    assert "CCCI_RESULT_TOKEN=(secret: not stored)" in html
    assert ">failure<" in html and ">log<" in html       # the report sent
    assert f'href="/console/{build_id}"' in html
    world.store.expire_logs([build_id], "older than 30 days")     # retention removed it
    html = requests.get(url, headers={"Accept": BROWSER}, timeout=10).text
    assert "log expired" in html and f'href="/console/{build_id}"' not in html


def test_estimates_are_the_median_of_recent_successes_and_never_change_the_snapshot(world):
    def summary(item_id: str, project: str, durations: list[tuple[float, str]]) -> dict:
        jobs = [{"id": f"{item_id}{k:02d}".ljust(32, "0"), "name": "build", "attempt": 1,
                 "state": "COMPLETED", "result": result, "voting": True,
                 "enqueued_at": 1000.0 + k, "started_at": 1000.0 + k,
                 "finished_at": 1000.0 + k + d} for k, (d, result) in enumerate(durations)]
        return {"item_id": item_id.ljust(32, "0"), "pipeline": "check", "state": "REPORTED",
                "result": "SUCCESS", "quick": False, "enqueued_at": 1000.0,
                "change": {"project": project, "number": 1, "patchset": None, "ref": "r",
                           "branch": "main", "sha": None},
                "buildset": {"id": f"{item_id}b".ljust(32, "0"), "ref": "", "commit": "",
                             "merge_state": "READY", "changes": []}, "jobs": jobs}
    world.store.save_items([
        summary("a", "org/a", [(10, "SUCCESS"), (30, "SUCCESS"), (20, "SUCCESS"),
                               (999, "FAILURE")]),
        summary("b", "org/big", [(300, "SUCCESS"), (400, "SUCCESS")])], finished=True)
    estimates = Estimates(world.store, clock=lambda: 2000.0)
    assert estimates.of("build", "org/a") == 20       # a project's own runs
    assert estimates.of("build", "org/big") == 350
    assert estimates.of("build") == 30                # any project's
    assert estimates.of("build", "org/new") == 30     # a project with no run yet
    assert estimates.of("nothing-yet") is None and estimates.of("nothing-yet", "org/a") is None
    status = {"pipelines": [{"name": "check", "queues": [{"name": "q", "window": 0, "items": [
        {"item_id": "x", "change": {"project": "org/a"}, "jobs": [
            {"name": "build", "started_at": 1995.0, "result": None},
            {"name": "build", "started_at": 1900.0, "result": None},
            {"name": "build", "started_at": None, "result": None},
            {"name": "build", "started_at": 1990.0, "result": "SUCCESS"},
            {"name": "other", "started_at": 1990.0, "result": None}]}]}]}], "time": 1.0}
    before = copy.deepcopy(status)
    jobs = estimates.annotate(status)["pipelines"][0]["queues"][0]["items"][0]["jobs"]
    assert status == before
    assert [(j["estimate"], j["remaining"]) for j in jobs] == [
        (20, 15.0), (20, 0.0), (20, 20.0), (20, None), (None, None)]
    running_build(world)
    full = requests.get(world.url + "/status.json", timeout=10)
    small = requests.get(world.url + "/status.json?compact=1", timeout=10)
    assert "now" in full.json() and small.headers["Content-Type"] == "application/json"
    [item] = full.json()["pipelines"][0]["queues"][0]["items"]
    [same] = small.json()["pipelines"][0]["queues"][0]["items"]
    assert item["items_ahead"] == 0 and item["item_ahead"] is None
    assert same == item and len(small.content) < len(full.content)


def test_the_status_page_its_files_and_the_routes_around_it(world):
    page = requests.get(world.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<script src="/static/status.js">' in page.text
    for name, kind in (("status.js", "text/javascript"), ("status.css", "text/css"),
                       ("console.html", "text/html")):
        resp = requests.get(f"{world.url}/static/{name}", timeout=10)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(kind)
    # nothing is fetched from elsewhere: the page works on a machine with no internet
    remote = re.compile(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|"""
                        r"""@import|fetch\(\s*["'](https?:)?//|EventSource\(\s*["'](https?:)?//""")
    shipped = [*(pages_module.STATIC.iterdir()), *(pages_module.HERE / "templates").iterdir()]
    assert {p.name for p in shipped} >= {"index.html", "status.js", "status.css", "console.html",
                                         "console.js", "item.html"}
    assert not [p.name for p in shipped if remote.search(p.read_text())]
    assert requests.get(world.url + "/static/nope.js", timeout=10).status_code == 404
    assert requests.get(world.url + "/static/.hidden", timeout=10).status_code == 404
    assert requests.get(world.url + "/no/such/path", timeout=10).status_code == 404
    assert requests.post(world.url + "/", timeout=10).status_code == 405
    listing = requests.get(world.url + "/artifacts/" + "a" * 32 + "/", timeout=10)
    assert listing.json() == {"artifacts": []}
    token = world.artifacts.token("a" * 32)
    assert requests.put(world.url + "/artifacts/" + "a" * 32 + "/bundle.tar", data=b"x",
                        headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 201
    listing = requests.get(world.url + "/artifacts/" + "a" * 32 + "/", timeout=10)
    assert listing.json() == {"artifacts": ["bundle.tar"]}


def test_accept_and_parameters_shown():
    assert prefers_html(BROWSER)
    assert prefers_html("text/html")
    assert not prefers_html("*/*") and not prefers_html("")
    assert not prefers_html("application/json")
    assert not prefers_html("application/json, text/html;q=0.5")
    assert not prefers_html("text/html;q=bogus, */*")
    assert shown_params(None) is None
    assert shown_params({"parameters": {"ZUUL_REF": "r", "DB_PASSWORD": "leaked?"},
                         "secrets": ["CCCI_RESULT_TOKEN"]}) == {
        "CCCI_RESULT_TOKEN": "(secret: not stored)", "ZUUL_REF": "r"}


def test_a_changes_page_shows_the_buildset_a_reset_replaced(world):
    for n in (1, 2):
        world.step(ev.EnqueueRequest("gate", Change("org/a", "main", f"refs/pull/{n}/head",
                                                    number=n, patchset=f"sha{n}", sha=f"sha{n}")))
    two = next(i for i in world.scheduler.snapshot.items.values() if i["change"]["number"] == 2)
    first = two["buildset"]["id"]
    world.step(ev.BuildCompleted(world.gate.builds[(1, "build")], "FAILURE"))   # 2 is reset
    html = requests.get(f"{world.url}/items/{two['item_id']}", headers={"Accept": BROWSER},
                        timeout=10).text
    current, earlier = html.index("current buildset"), html.index("earlier buildset")
    assert earlier > current                          # the current one first, then the one replaced
    assert f"earlier buildset <code>{first}</code>" in html
    assert "the items ahead changed" in html[current:earlier]
    assert "refs/zuul/main/1-2" in html[earlier:] and "SUPERSEDED" in html[earlier:]


@pytest.mark.parametrize("ci", ["", "true"])
def test_the_browser_tests_skip_without_chromium_and_fail_under_ci(ci, tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "CI": ci, "CCCI_CHROMIUM": str(tmp_path / "no-chromium")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_status_page.py", "-k", "batching"], env=env,
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    if ci:
        assert done.returncode == 1 and "is required under CI" in done.stdout, done.stdout
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout


def test_a_last_event_id_too_big_for_int_is_ignored_and_leaks_no_slot(world):
    """Review: ``Last-Event-ID`` of 5000 digits passed ``isdigit()`` and then ``int()``
    raised (Python's 4300-digit limit) after the stream's slot was taken: a 500, and the
    slot was never given back — 16 such requests closed the console for everyone."""
    build_id = running_build(world)
    world.step(ev.BuildCompleted(build_id, "SUCCESS"))
    (world.logs / f"{build_id}.log").write_text("first\n")
    free = world.pages._streams._value
    for huge in ("9" * 5000,):
        answer = requests.get(f"{world.url}/stream/{build_id}",
                              headers={"Last-Event-ID": huge}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert "data: first" in answer.text   # from the start
    deadline = time.monotonic() + 5
    while world.pages._streams._value < free and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.pages._streams._value == free, "a slot was not given back"
