"""The status page, a change's page and the console, in a real headless browser (Debian's
chromium through selenium) against a real gatekeeper: embedded gear.Server, its local
worker running shell jobs, real git, SQLite. What is asserted is what a person sees.

``CCCI_SCREENSHOT=doc/status-page.png`` also writes the screenshot the README shows; every
run leaves one in ``$CCCI_ARTIFACTS_DIR`` (or the test's temporary folder).
"""
from __future__ import annotations

import os
import shutil
import textwrap
from urllib.parse import quote

import pytest
import requests

from ccci_gate.alerts import open_alerts

from e2e_helpers import admin, finished, git, make_repo, start_gatekeeper, wait_for, write_layout
from status_worlds import gate_status, serve

pytestmark = pytest.mark.chromium

PIPELINES = """
pipelines:
  - name: gate
    description: Approved changes, tested on top of each other and merged in order.
    manager: dependent
    window: {start: 3, floor: 3}
    trigger:
      admin: []
    success:
      log: {}
    failure:
      log: {}
  - name: check
    description: A pull request on its own.
    trigger:
      admin: []
    success:
      log: {}
    failure:
      log: {}
"""
PROJECTS = """
projects:
  - name: org/recipe
    gate: [build, test]
    check: [build, test]
"""
SCRIPTS = {
    "build.sh": """
        echo "building $ZUUL_PROJECT change ${ZUUL_CHANGE:-}"
        case "${ZUUL_CHANGE:-}" in
          9) sleep 2 ;;
          2) echo '<b id="injected">not markup</b><script>document.title = "pwned"</script>'
             echo "build failed" >&2
             exit 1 ;;
          1) echo "holding until $HOLD_DIR/say"
             while [ ! -f "$HOLD_DIR/say" ]; do sleep 0.05; done
             echo 'LIVE-LINE <i id="live-injected">x</i>'
             while [ ! -f "$HOLD_DIR/release" ]; do sleep 0.05; done ;;
        esac
        echo built
        """,
    "test.sh": "echo tested\n",
}
GATE_ITEMS = "section[data-pipeline=gate] li.item"
GREEN, RED, GREY = "rgb(46, 133, 64)", "rgb(208, 49, 45)", "rgb(138, 138, 138)"   # status.css


@pytest.fixture
def gate(tmp_path):
    repos = tmp_path / "repos"
    upstream = make_repo(repos, "org/recipe", {
        n: {f"{n}.txt": f"{n}\n"} for n in (1, 2, 3, 4, 5, 9)})
    git(upstream, "config", "receive.denyCurrentBranch", "updateInstead")
    hold = tmp_path / "hold"
    hold.mkdir()
    jobs = textwrap.dedent(f"""
        jobs:
          - name: build
            run: scripts/build.sh
            parameters:
              HOLD_DIR: {hold}
          - name: test
            run: scripts/test.sh
            requires: build
        """)
    layouts, jobs_dir = write_layout(tmp_path, PIPELINES, PROJECTS, jobs, SCRIPTS)
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, worker={"max-builds": 4})
    yield gk, hold
    (hold / "say").touch()
    (hold / "release").touch()
    gk.stop()


def enqueue(gk, pipeline: str, *numbers: int) -> None:
    for n in numbers:
        resp = admin(gk, "/admin/enqueue", {"pipeline": pipeline, "project": "org/recipe",
                                            "change": n})
        assert resp.status_code == 202, resp.text


def gate_items(gk) -> list[dict]:
    status = requests.get(gk.web_url + "/status.json", timeout=10).json()
    [gate] = [p for p in status["pipelines"] if p["name"] == "gate"]
    return [i for q in gate["queues"] for i in q["items"]]


def by_change(items: list[dict], n: int) -> dict:
    return next(i for i in items if i["change"]["number"] == n)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def colour(driver, element) -> str:
    return driver.execute_script("return getComputedStyle(arguments[0]).backgroundColor", element)


def see(driver, what: str, predicate, timeout: float = 20.0):
    """Wait until ``predicate()`` holds on the page (it refreshes every 2 s)."""
    return wait_for(lambda: _quiet(predicate), timeout, what)


def _quiet(predicate):
    from selenium.common.exceptions import StaleElementReferenceException
    try:
        return predicate()
    except (StaleElementReferenceException, StopIteration, IndexError):
        return None


def gate_changes(driver) -> list[str]:
    """The gate's items top to bottom, as the page shows them."""
    return [e.get_attribute("data-change") for e in css(driver, GATE_ITEMS)]


def item_li(driver, n: int):
    return next(e for e in css(driver, GATE_ITEMS)
                if e.get_attribute("data-change") == f"org/recipe#{n}")


def build_li(driver, n: int, job: str):
    return next(e for e in item_li(driver, n).find_elements("css selector", "li.build")
                if e.get_attribute("data-job") == job)


def test_a_gate_queue_as_a_person_sees_it(gate, browser, artifacts_dir):
    gk, hold = gate
    url = gk.web_url
    # a successful run first, so the jobs have a duration to estimate from
    enqueue(gk, "check", 9)
    [warm] = finished(gk, 1)
    assert warm["result"] == "SUCCESS"
    enqueue(gk, "gate", 1, 2, 3, 4, 5)
    wait_for(lambda: _quiet(lambda: (
        by_change(gate_items(gk), 2)["result"] == "FAILURE"
        and by_change(gate_items(gk), 1)["jobs"][0]["started_at"]
        and by_change(gate_items(gk), 3)["jobs"][1]["result"] == "SUCCESS")),
        60, "#2 failed while #1 runs and #3 passed")

    browser.get(url + "/")
    see(browser, "the gate drawn", lambda: len(css(browser, GATE_ITEMS)) == 5)
    # queue order, top to bottom, as the gate tests them
    assert gate_changes(browser) == [f"org/recipe#{n}" for n in (1, 2, 3, 4, 5)]
    # the failing change: red; the one behind it, tested without it: green
    see(browser, "#2 red", lambda: "result-FAILURE" in item_li(browser, 2).get_attribute("class"))
    assert colour(browser, item_li(browser, 2).find_element("css selector", ".head .result")) == RED
    failed_bar = build_li(browser, 2, "build").find_element("css selector", ".bar .fill")
    assert colour(browser, failed_bar) == RED
    see(browser, "#3 green", lambda: "result-SUCCESS" in build_li(browser, 3, "test")
        .get_attribute("class"))
    passed = build_li(browser, 3, "test").find_element("css selector", ".fill")
    assert colour(browser, passed) == GREEN
    skipped = build_li(browser, 2, "test")
    assert "SKIPPED" in skipped.text
    assert colour(browser, skipped.find_element("css selector", ".fill")) == GREY
    assert "tested on top of org/recipe#1" in item_li(browser, 3).text
    assert "org/recipe#2" not in item_li(browser, 3).find_element("css selector", ".ahead").text
    # the running build: a progress bar from the estimate of the earlier run
    running = build_li(browser, 1, "build")
    assert "state-running" in running.get_attribute("class")
    bar = running.find_element("css selector", ".bar")
    assert bar.get_attribute("aria-valuenow") is not None
    assert ("left" in running.text) or ("over its estimate" in running.text)
    assert css(browser, "li.window-edge"), "the window's edge is drawn"
    assert browser.title == "ccci-gate status"
    shot = artifacts_dir / "status-page.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("CCCI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["CCCI_SCREENSHOT"])
    print(f"screenshot: {shot}")

    # the filter, kept in the URL
    box = css(browser, "#filter")[0]
    box.send_keys("recipe#3")
    see(browser, "only #3", lambda: gate_changes(browser) == ["org/recipe#3"])
    assert "q=" + quote("recipe#3", safe="") in browser.current_url
    browser.get(browser.current_url)
    see(browser, "only #3 after a reload", lambda: gate_changes(browser) == ["org/recipe#3"])
    browser.get(url + "/")
    see(browser, "the gate drawn", lambda: len(css(browser, GATE_ITEMS)) == 5)

    # the failed build's log link works, and its markup is text
    log_link = build_li(browser, 2, "build").find_element("css selector", "a.log")
    browser.get(log_link.get_attribute("href"))
    assert '<b id="injected">not markup</b>' in browser.find_element("tag name", "body").text
    assert browser.title != "pwned"

    # the running build's console: a line appears while the build runs
    browser.get(url + "/")
    see(browser, "the gate drawn", lambda: len(css(browser, GATE_ITEMS)) == 5)
    console = build_li(browser, 1, "build").find_element("css selector", "a.console")
    browser.get(console.get_attribute("href"))
    see(browser, "the log so far", lambda: "holding until" in css(browser, "#log")[0].text)
    assert "LIVE-LINE" not in css(browser, "#log")[0].text
    (hold / "say").touch()
    see(browser, "a live line", lambda: "LIVE-LINE" in css(browser, "#log")[0].text, timeout=10)
    assert '<i id="live-injected">x</i>' in css(browser, "#log")[0].text
    assert not css(browser, "#live-injected")
    (hold / "release").touch()
    see(browser, "the end of the build", lambda: css(browser, "#log")[0].get_attribute(
        "data-result") == "SUCCESS", timeout=30)
    assert "finished: SUCCESS" in css(browser, "#console-state")[0].text
    browser.save_screenshot(str(artifacts_dir / "console.png"))

    items = finished(gk, 6, timeout=60)
    verdicts = {i["change"]["number"]: i["result"] for i in items if i["pipeline"] == "gate"}
    assert verdicts == {1: "SUCCESS", 2: "FAILURE", 3: "SUCCESS", 4: "SUCCESS", 5: "SUCCESS"}

    # the failed change's page: its builds, a replay command, the reports sent
    two = next(i for i in items if i["change"]["number"] == 2)
    browser.get(url + f"/items/{two['item_id']}")
    page = browser.find_element("tag name", "body").text
    build_id = two["jobs"][0]["id"]
    assert f"ccci-gate replay {build_id}" in page
    # the parameters it was dispatched with, as recorded; the hand-over token's value never
    assert "ZUUL_PROJECT=org/recipe" in browser.page_source
    assert "CCCI_RESULT_TOKEN=(secret: not stored)" in browser.page_source
    assert "FAILURE" in page and "org/recipe#2" in page
    assert css(browser, "#reports tr") and "failure" in css(browser, "#reports")[0].text
    browser.save_screenshot(str(artifacts_dir / "change-page.png"))
    # ... and a script asks for the same URL and gets the JSON it always got
    as_json = requests.get(url + f"/items/{two['item_id']}", timeout=10).json()
    assert as_json == gk.store.item(two["item_id"])

    # a paused pipeline is shown, with the server's alert (ccci_gate/alerts.py) in its words
    assert admin(gk, "/admin/pause", {"pipeline": "check"}).status_code == 202
    gk.scheduler.sync()
    served = requests.get(url + "/status.json", timeout=10).json()["alerts"]
    paused = [a["message"] for a in served if a["kind"] == "pipeline_paused"]
    assert paused == ["pipeline check is paused: its items wait"]
    browser.get(url + "/")
    see(browser, "the paused badge",
        lambda: css(browser, "section[data-pipeline=check] .paused-badge"))
    see(browser, "the server's alert", lambda: paused[0] in [
        a.text for a in css(browser, "#alerts .alert.warning")])


def test_a_batching_gate_of_500_items_with_a_batch_set_aside(browser):
    """The page against the real engine's status of a 500-item batching gate whose first
    batch failed and stepped aside (render figures: ``bench/status_page.py``)."""
    status = gate_status(500, batch=True)
    items = status["pipelines"][0]["queues"][0]["items"]
    aside = [i["change"]["id"] for i in items if i["aside"]]
    assert len(aside) == 8
    status["pool"].update(held=3, held_functions={"build:build": 3},
                          functions={"build:build": {"queued": 2, "running": 0, "workers": 0}})
    status["alerts"] = [a.to_dict() for a in open_alerts(status, status["pool"], {}, (), 0.0)]
    evil = '<img id="evil" src="x" onerror="document.title = \'pwned\'">'
    items[0]["change"].update(title=evil, url="javascript:document.title='pwned'")
    web = serve(status)
    try:
        browser.get(web.url + "/")
        drawn = see(browser, "500 items drawn", lambda: (browser.execute_script(
            "return window.ccciRender || null") or {}).get("items") == 500 and
            browser.execute_script("return window.ccciRender"))
        print(f"500 items drawn in {drawn['ms']:.0f} ms")
        # read in one go: the page redraws every 2 s, faster than 500 round trips
        shown = browser.execute_script("""
            return [...document.querySelectorAll('section[data-pipeline=gate] li.item')].map(
              (e) => ({change: e.dataset.change, aside: e.classList.contains('aside'),
                       text: e.innerText,
                       running: e.querySelectorAll('li.build.state-running').length}));""")
        assert [e["change"] for e in shown] == [i["change"]["id"] for i in items]
        set_aside = [e for e in shown if e["aside"]]
        assert [e["change"] for e in set_aside] == aside
        assert all("set aside by batching" in e["text"] for e in set_aside)
        assert any(e["running"] for e in shown), "the probes' builds run"
        assert evil in shown[0]["text"] and not css(browser, "#evil")   # text, not markup
        first = css(browser, GATE_ITEMS)[0].find_element("css selector", ".change")
        assert first.tag_name == "span" and first.get_attribute("href") is None
        assert browser.title == "ccci-gate status"
        alerts = [a.text for a in css(browser, "#alerts .alert")]
        assert alerts == ["build:build: 5 build(s) wait, no worker registered"]
        assert css(browser, "#alerts .alert.critical")   # its severity, as the server says
        status["pool"], status["alerts"] = {"error": "the Gearman servers have not answered yet"}, []
        see(browser, "the pool's trouble", lambda: [a.text for a in css(
            browser, "#alerts .alert")] == ["Gearman: the Gearman servers have not answered yet"])
        css(browser, "#filter")[0].send_keys("a#250,")
        see(browser, "one item", lambda: gate_changes(browser) == ["org/a#250,sha250"])
        gate = css(browser, "section[data-pipeline=gate]")[0]
        assert "499 hidden by the filter" in gate.text
    finally:
        web.shutdown()
    see(browser, "lost contact said", lambda: any("status unavailable" in a.text and
                                                  "showing the last one" in a.text
                                                  for a in css(browser, "#alerts .alert")))
    assert css(browser, GATE_ITEMS)   # the last view stays
