"""Autohold without Docker: ``--for`` parsing, the request store (matching, count,
restart survival), the parameters a matching build gets, holds handed over with a
result through a real gatekeeper, the CLI, and the janitor's predicate for held leases.
The held app itself, on a real swarm: ``test_autohold_swarm.py``."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from ccci_gate.autohold.service import Autohold
from ccci_gate.autohold.spec import HoldRequest, format_duration, parse_duration, request_fields
from ccci_gate.autohold.store import HoldStore
from ccci_gate.config.loader import load_layout
from ccci_gate.core.actions import StartBuild
from ccci_gate.swarm import holds
from ccci_gate.swarm.host import Host

from e2e_helpers import admin_pipeline, start_gatekeeper

ROOT = Path(__file__).resolve().parents[1]
BUILD = "ab" * 16


# --- --for ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("4h", 14400), ("30m", 1800), ("2d", 172800),
                                          ("45s", 45), ("1h30m", 5400), ("90", 90),
                                          (" 4H ", 14400), (600, 600)])
def test_for_parses(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text,error", [
    ("4x", "not a duration: '4x' (use a number and a unit: 45s, 30m, 4h, 2d"),
    ("h", "not a duration"), ("", "not a duration"), ("4 h", "not a duration"),
    ("-1h", "not a duration"), ("1.5h", "not a duration"), (True, "not a duration"),
    ("0m", "more than 0 seconds"), ("31d", "longer than the longest hold, 30d")])
def test_for_refuses_with_a_clear_error(text, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        parse_duration(text)


def test_durations_print_back():
    assert [format_duration(s) for s in (14400, 5400, 59, 0, 90061)] == [
        "4h", "1h30m", "59s", "0s", "1d1h1m1s"]


def test_request_fields_say_what_is_wrong():
    assert request_fields({"project": "p", "job": "j"}) == {
        "project": "p", "job": "j", "change": None, "count": 1, "for_seconds": 14400,
        "reason": ""}
    for body, error in (({"job": "j"}, "'project' is required"),
                        ({"project": "p", "job": ""}, "'job' is required"),
                        ({"project": "p", "job": "j", "count": 0}, "count must be a positive"),
                        ({"project": "p", "job": "j", "count": "2x"}, "count must be a positive"),
                        ({"project": "p", "job": "j", "change": "one"}, "change must be"),
                        ({"project": "p", "job": "j", "for": "soon"}, "not a duration"),
                        ({"project": "p", "job": "j", "reason": 3}, "'reason' must be text")):
        with pytest.raises(ValueError, match=error):
            request_fields(body)


# --- matching and the store ---------------------------------------------------------------------

def test_a_request_matches_its_project_job_and_change_while_active():
    any_change = HoldRequest(1, "org/app", "install")
    one_change = HoldRequest(2, "org/app", "install", change=7)
    assert any_change.matches("org/app", "install", None)
    assert any_change.matches("org/app", "install", "3")
    assert not any_change.matches("org/app", "systest", "3")
    assert not any_change.matches("org/other", "install", "3")
    assert one_change.matches("org/app", "install", "7")
    assert not one_change.matches("org/app", "install", "8")
    assert not one_change.matches("org/app", "install", None)
    assert not HoldRequest(3, "org/app", "install", count=2, used=2).matches("org/app", "install", 1)
    assert not HoldRequest(4, "org/app", "install", released_at=1.0).matches("org/app", "install", 1)


def report(request: int, stack: str = "hell-1a2b3c_ci_local", until: float | None = None) -> dict:
    return {"request": str(request), "stack": stack, "host": "h1", "worker": "w1",
            "domain": "hell-1a2b3c.ci.local", "networks": [f"{stack}_default"],
            "until": until or time.time() + 600}


def test_count_decrements_once_per_build_and_survives_a_restart(tmp_path):
    path = tmp_path / "autohold.sqlite"
    store = HoldStore(path)
    first = store.add(request_fields({"project": "org/app", "job": "install", "count": 2,
                                      "for": "1h", "reason": "flaky db"}))
    other = store.add(request_fields({"project": "org/app", "job": "systest", "change": 5}))
    assert store.match("org/app", "install", "1").id == first.id
    assert store.match("org/app", "systest", "5").id == other.id
    assert store.match("org/app", "systest", "6") is None
    row, counted = store.record_held("a" * 32, report(first.id), "http://gk/logs/" + "a" * 32)
    assert counted and row["state"] == "held" and row["networks"] == ["hell-1a2b3c_ci_local_default"]
    assert store.record_held("a" * 32, report(first.id), "")[1]   # handed over twice: once
    assert store.request(first.id).used == 1 and store.match("org/app", "install", 1)
    store.record_held("b" * 32, report(first.id, "hell-222222_ci_local"), "")
    assert store.request(first.id).state == "used"
    assert store.match("org/app", "install", "1") is None      # count spent: no longer matches
    # a third build that failed at the same time: recorded, released, not counted
    row, counted = store.record_held("c" * 32, report(first.id, "hell-333333_ci_local"), "")
    assert not counted and row["state"] == "released"
    assert row["why"] == f"request {first.id} was used before this hold arrived"
    assert store.request(first.id).used == 2
    store.close()

    again = HoldStore(path)                                     # the gatekeeper restarted
    assert [r.id for r in again.requests()] == [first.id, other.id]
    assert again.request(first.id).reason == "flaky db" and again.request(first.id).used == 2
    assert again.match("org/app", "systest", "5").id == other.id
    assert [h["state"] for h in again.held_apps()] == ["held", "held", "released"]
    released = again.release(first.id)
    assert sorted(h["stack"] for h in released) == ["hell-1a2b3c_ci_local", "hell-222222_ci_local"]
    assert [h["state"] for h in again.held_apps()] == ["released"] * 3
    assert again.release(999) is None
    assert again.release(other.id) == [] and again.match("org/app", "systest", "5") is None


def test_held_apps_expire(tmp_path):
    store = HoldStore(tmp_path / "autohold.sqlite")
    request = store.add(request_fields({"project": "org/app", "job": "install", "count": 3}))
    store.record_held("a" * 32, report(request.id, until=time.time() - 1), "")
    store.record_held("b" * 32, report(request.id, "hell-222222_ci_local"), "")
    assert [h["state"] for h in store.held_apps()] == ["expired", "held"]
    assert [h["build_id"] for h in store.expire()] == ["a" * 32]
    assert store.expire() == []
    assert [h["state"] for h in store.held_apps()] == ["expired", "held"]


# --- the parameters of a matching build -------------------------------------------------------

def test_a_matching_build_is_told_to_hold_and_others_are_not(tmp_path):
    layout = load_layout([ROOT / "jobs", ROOT / "layouts"])
    autohold = Autohold(HoldStore(tmp_path / "a.sqlite"), "http://gk:8001/", lambda: layout,
                        janitor=lambda ask: [])
    request = autohold.add({"project": "coop-cloud/hello", "job": "install", "change": 1,
                            "for": "30m"})

    def start(job: str, change: str | None) -> dict:
        params = {"ZUUL_PROJECT": "coop-cloud/hello", "JOB_NAME": job}
        if change:
            params["ZUUL_CHANGE"] = change
        return dict(autohold.parameters(StartBuild(BUILD, f"build:{job}", params)))

    held = start("install", "1")
    assert held[holds.REQUEST] == str(request.id) and held[holds.FOR] == "1800"
    assert held[holds.URL] == f"http://gk:8001/autohold/held/{BUILD}"
    for job, change in (("systest", "1"), ("install", "2"), ("install", None)):
        assert holds.REQUEST not in start(job, change)
    with pytest.raises(ValueError, match="'build' is a recipe-build job: only the jobs that "
                                         "deploy an app"):
        autohold.add({"project": "coop-cloud/hello", "job": "build"})
    with pytest.raises(ValueError, match="project 'org/nope' is not in the layout"):
        autohold.add({"project": "org/nope", "job": "install"})
    with pytest.raises(ValueError, match="no job 'nope' in the layout"):
        autohold.add({"project": "coop-cloud/hello", "job": "nope"})


def test_the_gatekeeper_expires_held_apps_and_runs_its_janitor_on_release(tmp_path):
    layout = load_layout([ROOT / "jobs", ROOT / "layouts"])
    asked: list = []

    def janitor(ask):
        asked.append(ask({"build": "a" * 32}))
        return []

    autohold = Autohold(HoldStore(tmp_path / "a.sqlite"), "http://gk", lambda: layout,
                        janitor=janitor, every=0.2)
    request = autohold.add({"project": "coop-cloud/hello", "job": "systest", "count": 2})
    autohold.take("a" * 32, {"result": "FAILURE", "autohold": report(request.id,
                                                                    until=time.time() + 0.5)})
    autohold.take("b" * 32, {"result": "FAILURE", "autohold": {"request": "x"}})   # malformed
    assert [h["build_id"] for h in autohold.store.held_apps()] == ["a" * 32]
    autohold.start()
    try:
        deadline = time.monotonic() + 10
        while "expired" not in asked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "expired" in asked and autohold.store.held("a" * 32)["why"] == "expired"
        autohold.periodic.every = 3600     # from now on only a release runs the janitor
        time.sleep(0.3)
        before = len(asked)
        assert autohold.release(request.id) == []
        deadline = time.monotonic() + 10
        while len(asked) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(asked) == before + 1
    finally:
        autohold.stop()


def test_a_replay_is_not_held():
    from ccci_gate.commands.replay import fresh_parameters
    record = {"id": BUILD, "parameters": {"ZUUL_PROJECT": "coop-cloud/hello",
                                          holds.REQUEST: "1", holds.FOR: "60", holds.URL: "u"}}
    assert fresh_parameters(record, {}) == ({"ZUUL_PROJECT": "coop-cloud/hello"}, [])


# --- the janitor's predicate ---------------------------------------------------------------------

def test_a_held_lease_stands_until_it_expires_or_is_released(tmp_path):
    now = time.time()
    hold = {"request": "1", "build": BUILD, "until": now + 60, "url": ""}
    assert holds.why_release(hold, None, now) is None
    assert holds.why_release(hold, lambda h: None, now) is None        # gatekeeper unreachable
    assert holds.why_release(hold, lambda h: "held", now) is None
    assert holds.why_release(hold, lambda h: "released", now) == "its hold was released (request 1)"
    assert holds.why_release(hold, None, now + 60) == "its hold expired"
    assert not holds.wanted({}, "FAILURE", False)
    assert holds.wanted({holds.REQUEST: "1"}, "FAILURE", False)
    assert holds.wanted({holds.REQUEST: "1"}, "TIMED_OUT", False)
    assert not holds.wanted({holds.REQUEST: "1"}, "SUCCESS", False)   # a pass is never held
    assert not holds.wanted({holds.REQUEST: "1"}, "FAILURE", True)    # nor a stopped run
    assert not holds.wanted({holds.REQUEST: "1"}, "ERROR", False)


def test_a_held_lease_is_written_whole_and_keeps_its_run(tmp_path):
    host = Host(tmp_path)
    host.take_lease("hell-1a2b3c_ci_local", BUILD)
    host.hold("hell-1a2b3c_ci_local", {"request": "1", "build": BUILD, "until": 1.0})
    [lease] = host.leases()
    assert lease["build"] == BUILD and lease["hold"]["until"] == 1.0
    assert sorted(p.name for p in (tmp_path / "leases").iterdir()) == ["hell-1a2b3c_ci_local.json"]


# --- through a real gatekeeper: the admin API, the hand-over, the CLI --------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccci_gate.cli", *args], capture_output=True,
                          text=True, timeout=60)


def gatekeeper(tmp_path: Path):
    extra = tmp_path / "extra"
    extra.mkdir(exist_ok=True)
    (extra / "try.yaml").write_text(admin_pipeline("try") + textwrap.dedent("""
        projects:
          - name: coop-cloud/hello
            try: [build, publish, install, systest]
        """))
    (tmp_path / "repos").mkdir(exist_ok=True)
    return start_gatekeeper(tmp_path, extra, ROOT / "jobs", tmp_path / "repos",
                            layout=[str(ROOT / "jobs"), str(extra)], worker={"enabled": False})


def test_holds_through_the_cli_the_hand_over_and_a_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("CCCI_SWARM_STATE", str(tmp_path / "swarm-state"))
    gk = gatekeeper(tmp_path)
    client = ("--url", gk.web_url, "--state-dir", str(tmp_path / "state"))
    try:
        made = cli("autohold", "--project", "coop-cloud/hello", "--job", "install", "--change",
                   "1", "--for", "2h", "--reason", "db migration", *client)
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip() == ("autohold 1: the next 1 failing install run(s) of "
                                       "coop-cloud/hello change 1 stay deployed for 2h each")
        for args, error in ((("--project", "org/nope", "--job", "install"),
                             "project 'org/nope' is not in the layout"),
                            (("--project", "coop-cloud/hello", "--job", "build"),
                             "'build' is a recipe-build job"),
                            (("--project", "coop-cloud/hello", "--job", "install", "--for", "2w"),
                             "argument --for: not a duration: '2w'"),
                            (("release", "9"), "no autohold request 9"),
                            (("release", "x"), "give the request's number")):
            bad = cli("autohold", *args, *client)
            assert bad.returncode in (1, 2) and error in bad.stderr, (args, bad.stderr)
        assert cli("autohold", "--project", "coop-cloud/hello", "--job", "install",
                   "--url", gk.web_url, "--token", "wrong").returncode == 1
        listed = cli("autohold", "list", "--url", gk.web_url)     # read-only: no token needed
        assert listed.returncode == 0
        assert listed.stdout.splitlines() == [
            "request 1    active    coop-cloud/hello install change 1  held 0/1  keep 2h  "
            "(db migration)"]

        # the worker hands its hold over with the build's result (its per-build token)
        token = gk.handoff.token(BUILD)
        body = {"result": "FAILURE", "autohold": {**report(1), "worker": "w1"}}
        url = f"{gk.web_url}/builds/{BUILD}/result"
        assert requests.post(url, json=body, timeout=10,
                             headers={"Authorization": "Bearer nope"}).status_code == 403
        assert requests.post(url, json=body, timeout=10,
                             headers={"Authorization": f"Bearer {token}"}).status_code == 202
        hold = {"url": f"{gk.web_url}/autohold/held/{BUILD}", "until": time.time() + 600,
                "request": "1", "build": BUILD}
        assert holds.ask_gatekeeper(hold) == "held"
        assert holds.ask_gatekeeper({**hold, "url": f"{gk.web_url}/autohold/held/{'c' * 32}"}) is None
        text = cli("autohold", "list", "--url", gk.web_url).stdout
        assert "request 1    used      coop-cloud/hello install change 1  held 1/1" in text
        assert f"held app hell-1a2b3c_ci_local (request 1, build {BUILD}): held until" in text
        assert "  host h1 (worker w1)" in text
        assert ("  services: docker service ls --filter "
                "label=com.docker.stack.namespace=hell-1a2b3c_ci_local") in text
        assert "  domain hell-1a2b3c.ci.local; networks hell-1a2b3c_ci_local_default" in text
        assert f"  log: {gk.web_url}/logs/{BUILD}" in text
    finally:
        gk.stop()

    gk = gatekeeper(tmp_path)                                      # restarted: all kept
    client = ("--url", gk.web_url, "--state-dir", str(tmp_path / "state"))
    try:
        hold["url"] = f"{gk.web_url}/autohold/held/{BUILD}"
        assert holds.ask_gatekeeper(hold) == "held"
        assert "held 1/1" in cli("autohold", "list", *client).stdout
        released = cli("autohold", "release", "1", *client)
        assert released.returncode == 0, released.stderr
        assert released.stdout.startswith("autohold 1 released; removing hell-1a2b3c_ci_local")
        assert holds.ask_gatekeeper(hold) == "released"
        assert holds.why_release(hold, holds.ask_gatekeeper) == "its hold was released (request 1)"
        data = requests.get(gk.web_url + "/autohold.json", timeout=10).json()
        assert data["requests"][0]["state"] == "released"
        assert data["held"][0]["state"] == "released"
    finally:
        gk.stop()
