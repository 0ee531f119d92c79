"""Retention (``retention.py``): the janitor pass removes finished logs and artifacts past
their age or beyond the size budget, oldest first, and history past its own age; an
expired log stays visible as such; running logs and live items' artifacts are never
touched. Real files, SQLite, a real listener; time moved by the janitor's clock."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
import requests

from ccci_gate.logstore import LogStore
from ccci_gate.retention import Janitor, Policy, parse_duration, parse_size
from ccci_gate.settings import load_settings
from ccci_gate.store import Store

from e2e_helpers import (admin, admin_pipeline, finished, make_repo, start_gatekeeper, wait_for,
                         write_layout)
from log_helpers import item_summary

DAY = 86400.0


def test_settings_parse_with_defaults_and_say_what_is_wrong(tmp_path):
    assert Policy.parse(None) == Policy(30 * DAY, 10 << 30, 365 * DAY, 3600.0)
    p = Policy.parse({"max-age": "7d", "max-bytes": "500M", "interval": "10m",
                      "history-max-age": "off"})
    assert (p.max_age, p.max_bytes, p.history_max_age, p.interval) == (7 * DAY, 500 << 20,
                                                                       None, 600.0)
    assert parse_duration("12h") == 43200 and parse_duration(90) == 90
    assert parse_size("1.5k") == 1536 and parse_size("10GiB") == 10 << 30
    assert parse_size("off") is None
    for raw, words in [({"max-age": "30x"}, "retention.max-age: '30x' is not a duration"),
                       ({"max-bytes": "lots"}, "retention.max-bytes: 'lots' is not a size"),
                       ({"max-age": "0d"}, "retention.max-age: '0d' is not a duration"),
                       ({"interval": "off"}, "retention.interval: cannot be off"),
                       ({"history-max-age": "10d"},
                        "retention.history-max-age (10d) is shorter than max-age (30d)"),
                       ({"max_age": "1d"}, "retention: unknown key(s) max_age")]:
        with pytest.raises(ValueError) as exc:
            Policy.parse(raw)
        assert words in str(exc.value), exc.value
    settings = tmp_path / "ccci-gate.yaml"
    settings.write_text("retention:\n  max-age: 2w\n  max-bytes: 1G\n")
    assert load_settings(settings).retention.max_age == 14 * DAY
    settings.write_text("retention:\n  max-bytes: ten gigs\n")
    with pytest.raises(ValueError, match=r"ccci-gate.yaml: retention.max-bytes: 'ten gigs'"):
        load_settings(settings)


class World:
    """A store, a log store and artifact folders, with builds made to order."""

    def __init__(self, tmp_path, policy: Policy):
        self.logs = LogStore(tmp_path / "logs")
        self.store = Store(tmp_path / "db.sqlite")
        self.artifacts = tmp_path / "artifacts"
        self.artifacts.mkdir()
        self.now = time.time()
        self.janitor = Janitor(policy, self.logs, self.store, self.artifacts,
                               {"logs": lambda: self.logs.root,
                                "artifacts": lambda: self.artifacts,
                                "nothing": lambda: None},
                               clock=lambda: self.now)

    def build(self, size: int = 1000, age: float = 0.0, live: bool = False,
              artifacts: int = 0) -> tuple[str, str]:
        """A build (finished and compressed unless ``live``) ``age`` seconds old, with
        ``artifacts`` bytes in its buildset's folder; ``(build id, buildset id)``."""
        build = uuid.uuid4().hex
        summary = item_summary([{"id": build, "state": "RUNNING" if live else "COMPLETED",
                                 "result": None if live else "SUCCESS"}],
                               state="TESTING" if live else "REPORTED",
                               result=None if live else "SUCCESS")
        self.store.save_items([summary], finished=not live)
        self.logs.append(build, os.urandom(size // 2).hex())
        if not live:
            self.logs.finish(build)
        path = self.logs.plain(build) if live else self.logs.packed(build)
        os.utime(path, (self.now - age, self.now - age))
        buildset = summary["buildset"]["id"]
        if artifacts:
            folder = self.artifacts / buildset
            folder.mkdir()
            (folder / "bundle.tar").write_bytes(os.urandom(artifacts))
            os.utime(folder, (self.now - age, self.now - age))
        return build, buildset


def test_a_pass_removes_what_is_past_its_age_and_never_a_running_log(tmp_path, caplog):
    w = World(tmp_path, Policy(max_age=30 * DAY, max_bytes=None))
    old, old_set = w.build(age=40 * DAY, artifacts=5000)
    new, new_set = w.build(age=1 * DAY, artifacts=5000)
    running, running_set = w.build(age=40 * DAY, live=True, artifacts=5000)
    size = w.logs.packed(old).stat().st_size
    with caplog.at_level("INFO", logger="ccci_gate.retention"):
        freed = w.janitor.run_pass()
    assert f"retention pass freed 1 logs ({size}B), 1 artifact sets (4.9k), 0 history items" \
        in caplog.text
    assert freed["logs"] == 1 and freed["artifacts"] == 1 and freed["items"] == 0
    assert w.logs.state(old) is None and not (w.artifacts / old_set).exists()
    assert w.logs.state(new) == "finished" and (w.artifacts / new_set).exists()
    assert w.logs.state(running) == "running" and (w.artifacts / running_set).exists()
    assert w.store.logs_expired([old, new, running]) == {
        old: {"at": pytest.approx(time.time(), abs=60), "reason": "older than 30d"}}
    assert w.store.build(old) is not None, "the build stays in the history"
    assert set(w.janitor.disk) == {"logs", "artifacts", "measured_at"}
    assert w.janitor.disk["artifacts"] == 10000


def test_a_pass_keeps_within_the_budget_oldest_first(tmp_path):
    w = World(tmp_path, Policy(max_age=None, max_bytes=1, history_max_age=None))
    oldest, _ = w.build(size=4000, age=5 * DAY)
    second, second_set = w.build(size=200, age=4 * DAY, artifacts=4000)
    middle, _ = w.build(size=4000, age=3 * DAY)
    newest, newest_set = w.build(size=4000, age=1 * DAY, artifacts=2000)
    running, _ = w.build(size=6000, age=9 * DAY, live=True)
    on_disk = {b: f.bytes for f in w.logs.files() for b in [f.build_id]}
    # the budget fits the running log, the newest build and the middle log: exactly the
    # oldest log, then the second's log and artifacts must go (oldest first)
    budget = on_disk[running] + on_disk[newest] + 2000 + on_disk[middle]
    w.janitor.policy = Policy(max_age=None, max_bytes=budget, history_max_age=None)
    freed = w.janitor.run_pass()
    assert w.logs.state(oldest) is None and w.logs.state(second) is None
    assert not (w.artifacts / second_set).exists()
    assert w.logs.state(middle) == "finished"
    assert w.logs.state(newest) == "finished" and (w.artifacts / newest_set).exists()
    assert w.logs.state(running) == "running"
    assert freed["logs"] == 2 and freed["artifacts"] == 1
    assert w.logs.disk_use() + 2000 == budget
    expired = w.store.logs_expired([oldest, second, middle, newest])
    assert set(expired) == {oldest, second}
    assert expired[oldest]["reason"] == f"over the {budget / 1024:.1f}k budget"
    # a budget smaller than the running log alone still never touches it
    w.janitor.policy = Policy(max_age=None, max_bytes=10, history_max_age=None)
    w.janitor.run_pass()
    assert w.logs.state(running) == "running" and w.logs.state(newest) is None


def test_history_past_its_age_goes_with_its_logs_and_a_missed_compression_is_caught(tmp_path):
    w = World(tmp_path, Policy(max_age=30 * DAY, max_bytes=None, history_max_age=90 * DAY))
    build, buildset = w.build(artifacts=100)
    straggler, _ = w.build(live=True)
    w.store.save_items([item_summary([{"id": straggler}])], finished=True)  # has its result
    os.utime(w.logs.plain(straggler), (w.now - 600, w.now - 600))
    w.now += 100 * DAY
    freed = w.janitor.run_pass()
    assert freed["items"] == 2 and freed["packed"] == 1
    assert w.store.build(build) is None and w.store.params(build) is None
    assert w.logs.state(build) is None and not (w.artifacts / buildset).exists()
    assert w.store.history() == []


def test_the_gatekeeper_shows_an_expired_log_and_disk_use(tmp_path):
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(
        tmp_path, admin_pipeline("check"), "projects:\n  - name: org/app\n    check: [hello]\n",
        "jobs:\n  - name: hello\n    run: scripts/hello.sh\n", {"hello.sh": "echo hello\n"})
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos,
                          retention={"max-age": "30d", "interval": "1h"})
    try:
        disk = wait_for(lambda: requests.get(gk.web_url + "/status.json", timeout=10).json()
                        ["disk"].get("measured_at") and
                        requests.get(gk.web_url + "/status.json", timeout=10).json()["disk"],
                        30, "the first disk measurement")
        assert {"logs", "artifacts", "git", "state_db", "measured_at"} <= set(disk)
        assert disk["state_db"] > 0
        admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/app", "change": 1})
        [item] = finished(gk)
        build = item["jobs"][0]["id"]
        log_url = item["jobs"][0]["log_url"]
        # the item may finish by the result handed over HTTP before WORK_COMPLETE arrives
        wait_for(lambda: gk.logs.state(build) == "finished", 30, "the log to be compressed")
        assert "hello" in requests.get(log_url, timeout=10).text
        gk.janitor.clock = lambda: time.time() + 31 * DAY
        assert gk.janitor.run_pass()["logs"] == 1
        gone = requests.get(log_url, timeout=10)
        assert gone.status_code == 410 and "expired" in gone.json()["error"]
        page = requests.get(f"{gk.web_url}/items/{item['item_id']}", timeout=10).json()
        assert page["jobs"][0]["log_expired"]["reason"] == "older than 30d"
        record = requests.get(f"{gk.web_url}/builds/{build}.json", timeout=10).json()
        assert record["log"]["state"] == "expired" and record["result"] == "SUCCESS"
        logs = subprocess.run([sys.executable, "-m", "ccci_gate.cli", "logs", "-f", build,
                               "--url", gk.web_url], capture_output=True, text=True, timeout=60)
        assert logs.returncode == 2 and "expired" in logs.stderr and logs.stdout == ""
    finally:
        gk.stop()


def test_what_age_removed_counts_no_more_against_the_budget(tmp_path):
    w = World(tmp_path, Policy(max_age=30 * DAY, max_bytes=1, history_max_age=None))
    _, old_set = w.build(age=40 * DAY, artifacts=50_000)
    new, new_set = w.build(age=1 * DAY, artifacts=3000)
    budget = w.logs.disk_use() + 3000   # both logs and the new artifacts fit
    w.janitor.policy = Policy(max_age=30 * DAY, max_bytes=budget, history_max_age=None)
    freed = w.janitor.run_pass()
    assert not (w.artifacts / old_set).exists() and freed["artifacts"] == 1
    assert w.logs.state(new) == "finished" and (w.artifacts / new_set).exists()
