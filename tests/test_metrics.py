"""``GET /metrics`` of a real gatekeeper (embedded gear.Server, its local worker running
shell jobs, SQLite, git) after a known workload, parsed with prometheus_client's own
parser; the table in doc/operating.md lists exactly the metrics a scrape exposes."""
from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ccci_gate.core.actions import StartBuild
from ccci_gate.core.events import BuildCompleted, BuildStarted, Event
from ccci_gate.drivers.outbox import OutboxStore
from ccci_gate.gearman.dispatcher import GearmanDispatcher
from ccci_gate.gearman.server import EmbeddedServer
from ccci_gate.gearman.worker import GearmanWorker
from ccci_gate.web.metrics import METRICS, GateMetrics, metrics_table
from ccci_gate.web.statsd import Statsd

from e2e_helpers import (admin, finished, free_port, git, make_repo, start_gatekeeper,
                         wait_for, write_layout)
from test_gatekeeper_e2e import JOBS, PIPELINES, PROJECTS, SCRIPTS

ROOT = Path(__file__).resolve().parents[1]
# the check pipeline also reports to a Gitea that is down: its writes wait in the outbox
GITEA_PIPELINES = PIPELINES.replace("log: {}", "log: {}\n      gitea: {}")


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """Every sample of a scrape: {sample name: {sorted label items: value}}."""
    resp = requests.get(url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def families(url: str) -> dict[str, str]:
    """{metric name as documented: type} of a scrape (a counter's family name lacks
    ``_total`` in the parser's view)."""
    text = requests.get(url + "/metrics", timeout=10).text
    return {f.name + ("_total" if f.type == "counter" else ""): f.type
            for f in text_string_to_metric_families(text)}


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def total(samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for key, v in samples.get(name, {}).items()
               if set(labels.items()) <= set(key))


@pytest.fixture
def gatekeeper(tmp_path, monkeypatch):
    repos = tmp_path / "repos"
    make_repo(repos, "org/recipe", {1: {"README.md": "one\n"}, 2: {"fail-install": "x\n"},
                                     3: {"README.md": "three\n"}})
    layouts, jobs_dir = write_layout(tmp_path, GITEA_PIPELINES, PROJECTS, JOBS, SCRIPTS)
    hold = tmp_path / "release"
    jobs_yaml = jobs_dir / "jobs.yaml"
    jobs_yaml.write_text(jobs_yaml.read_text().replace(
        "run: scripts/install.sh\n",
        f"run: scripts/install.sh\n    parameters:\n      HOLD_FILE: {hold}\n"))
    # this host's warm root: one canonical whose restore failed (an open alert)
    warm = tmp_path / "warm"
    (warm / "hello" / "snapshots").mkdir(parents=True)
    (warm / "hello" / "record.json").write_text(json.dumps(
        {"recipe": "hello", "status": "broken", "why": "restore failed"}))
    (warm / "hello" / "snapshots" / "data.tar").write_bytes(b"x" * 1000)
    monkeypatch.setenv("CCCI_WARM_ROOT", str(warm))
    gitea = {"driver": "gitea", "url": f"http://127.0.0.1:{free_port()}", "token": "t",
             "webhook-secret": "s"}
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, connections={"gitea": gitea})
    gk.hold = hold
    gk.shas = {n: git(repos / "org/recipe", "rev-parse", f"refs/pull/{n}/head") for n in (1, 2, 3)}
    gk.warm_bytes = sum(p.stat().st_size for p in warm.rglob("*") if p.is_file())
    yield gk
    gk.stop()


def _install_running(gk) -> bool:
    return any(j["name"] == "install" and j["state"] == "RUNNING"
               for p in gk.scheduler.status()["pipelines"] for q in p["queues"]
               for i in q["items"] for j in i["jobs"])


def test_metrics_of_a_known_run(gatekeeper):
    gk, url = gatekeeper, gatekeeper.web_url
    enqueue = {"pipeline": "check", "project": "org/recipe"}
    assert admin(gk, "/admin/enqueue", {**enqueue, "change": 1,
                                             "patchset": gk.shas[1]}).status_code == 202
    wait_for(lambda: _install_running(gk), what="install of change 1 running (held)")
    gk.scheduler.sync()
    held = scrape(url)
    assert value(held, "ccci_pipeline_queue_length", pipeline="check") == 1
    assert value(held, "ccci_pipeline_paused", pipeline="check") == 0
    assert value(held, "ccci_items_enqueued_total", pipeline="check") == 1
    assert total(held, "ccci_items_finished_total") == 0
    # build and publish ran; install runs (a worker took it), systest waits
    assert total(held, "ccci_build_duration_seconds_count") == 2
    assert total(held, "ccci_dispatch_latency_seconds_count") == 3
    assert value(held, "ccci_dispatch_latency_seconds_count", function="build:install") == 1
    assert "ccci_scheduler_event_queue_depth" in held

    gk.hold.write_text("go")
    for change in (2, 3):
        assert admin(gk, "/admin/enqueue", {**enqueue, "change": change,
                                                 "patchset": gk.shas[change]}).status_code == 202
    items = finished(gk, 3)
    assert sorted(i["result"] for i in items) == ["FAILURE", "SUCCESS", "SUCCESS"]
    gk.scheduler.sync()
    done = scrape(url)
    assert value(done, "ccci_pipeline_queue_length", pipeline="check") == 0
    assert value(done, "ccci_items_enqueued_total", pipeline="check") == 3
    assert value(done, "ccci_items_finished_total", pipeline="check", result="SUCCESS") == 2
    assert value(done, "ccci_items_finished_total", pipeline="check", result="FAILURE") == 1
    # 4 builds for each passing change; the failing one skips systest (never dispatched)
    ran = {job: total(done, "ccci_build_duration_seconds_count", job=job)
           for job in ("build", "publish", "install", "systest")}
    assert ran == {"build": 3, "publish": 3, "install": 3, "systest": 2}
    assert value(done, "ccci_build_duration_seconds_count", job="install", result="FAILURE") == 1
    assert value(done, "ccci_build_duration_seconds_bucket", job="install", result="FAILURE",
                 le="+Inf") == 1
    durations = [j["finished_at"] - j["started_at"] for i in items for j in i["jobs"]
                 if j["started_at"] is not None]
    assert len(durations) == 11
    assert total(done, "ccci_build_duration_seconds_sum") == pytest.approx(sum(durations))
    assert total(done, "ccci_dispatch_latency_seconds_count") == 11
    assert value(done, "ccci_scheduler_event_seconds_count", event="EnqueueRequest") == 3
    # each result arrives twice: WORK_COMPLETE and the worker's HTTP handoff (handoff.py)
    assert value(done, "ccci_scheduler_event_seconds_count", event="BuildCompleted") == 22
    assert value(done, "ccci_scheduler_event_queue_depth") == 0
    # the pool: the gatekeeper's local worker, nothing waiting
    # (the pool's snapshot is at most a poll and POOL_MAX_AGE old: wait for a quiet one)
    pool = wait_for(lambda: total(s := scrape(url), "ccci_builds_waiting") == 0 and s, 10,
                    "no build waiting")
    assert "ccci_builds_waiting" in pool
    assert value(pool, "ccci_gearman_servers_connected") == 1
    assert value(pool, "ccci_gearman_workers") == 1    # the local worker (not its stop: side)
    assert value(pool, "ccci_gearman_functions_registered") == 4
    assert value(pool, "ccci_builds_waiting", state="held") == 0
    assert value(pool, "ccci_builds_waiting", state="queued") == 0
    # Gitea is down: every status and comment of the three items waits in the outbox
    pending = value(pool, "ccci_outbox_pending_writes", connection="gitea")
    assert pending >= 6, pool.get("ccci_outbox_pending_writes")
    assert pending == gk.connections.items["gitea"].store.pending()
    assert value(pool, "ccci_outbox_oldest_pending_seconds", connection="gitea") > 0
    # the warm root, walked on its own thread
    warm = wait_for(lambda: "ccci_warm_root_bytes" in (s := scrape(url)) and s, 10, "warm bytes")
    assert value(warm, "ccci_warm_root_bytes") == gk.warm_bytes
    assert value(warm, "ccci_alerts_open", kind="warm_broken") == 1


def test_the_doc_lists_exactly_the_metrics_exposed(gatekeeper):
    """doc/operating.md holds metrics_table() as printed, and a real scrape has each of
    its metrics with the type it says — no more, no fewer."""
    text = (ROOT / "doc" / "operating.md").read_text()
    table = re.search(r"<!-- metrics table.*?-->\n(.*?)\n<!-- end metrics table -->", text, re.S)
    assert table is not None, "doc/operating.md has no metrics table"
    assert table.group(1) == metrics_table()
    documented = {m.name: m.type for m in METRICS}
    assert set(re.findall(r"^\| `(ccci_[a-z_]+)`", table.group(1), re.M)) == set(documented)
    wait_for(lambda: "ccci_warm_root_bytes" in scrape(gatekeeper.web_url), 10, "warm bytes")
    assert families(gatekeeper.web_url) == documented
    # OpenMetrics for a scraper that asks for it (Prometheus does)
    resp = requests.get(gatekeeper.web_url + "/metrics", timeout=10,
                        headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.text.endswith("# EOF\n")
    odd = requests.get(gatekeeper.web_url + "/metrics", timeout=10,
                       headers={"Accept": "application/openmetrics-text; version=x"})
    assert odd.status_code == 200 and odd.headers["Content-Type"].startswith("text/plain")


def test_two_gatekeepers_in_one_process_keep_their_own_registries():
    one, two = GateMetrics(), GateMetrics()
    one.handled("EnqueueRequest", 0.01)
    assert one.registry.get_sample_value("ccci_scheduler_event_seconds_count",
                                         {"event": "EnqueueRequest"}) == 1
    assert two.registry.get_sample_value("ccci_scheduler_event_seconds_count",
                                         {"event": "EnqueueRequest"}) is None


def test_outbox_backlog_counts_waiting_writes_and_the_oldest(tmp_path):
    store = OutboxStore(tmp_path / "outbox.sqlite")
    assert store.backlog() == (0, None)
    store.push("status", "org/a", "sha1", {"state": "pending"})
    store.push("comment", "org/a", "1/check", {"body": "x"})
    count, oldest = store.backlog()
    assert count == 2 and oldest is not None
    store.sent(store.head().id)
    assert store.backlog()[0] == 1
    store.close()


def test_an_outbox_from_before_queued_at_counts_its_writes_as_queued_when_opened(tmp_path):
    """A store written before the outbox kept ``queued_at``: its waiting writes count as
    queued when the gatekeeper opened it (not in 1970)."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(str(path))
    db.executescript("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT "
                     "NULL, repo TEXT NOT NULL, target TEXT NOT NULL, body TEXT NOT NULL, "
                     "attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0, "
                     "last_error TEXT NOT NULL DEFAULT '');"
                     "INSERT INTO outbox (kind, repo, target, body) VALUES ('status', 'org/a', "
                     "'sha1', '{}');")
    db.commit()
    db.close()
    before = time.time()
    store = OutboxStore(path)
    count, oldest = store.backlog()
    assert count == 1 and before <= oldest <= time.time()
    assert store.head().kind == "status"
    store.close()


def test_a_build_no_worker_can_take_is_held_and_a_dequeued_item_counts_as_dequeued(tmp_path):
    """A job whose label no worker has waits held (builds_waiting{state="held"}); a paused
    pipeline says so; the item dequeued by the operator finishes as DEQUEUED."""
    repos = tmp_path / "repos"
    make_repo(repos, "org/lonely", {1: {"README.md": "one\n"}})
    projects = "projects:\n  - name: org/lonely\n    check: [lonely]\n"
    jobs = "jobs:\n  - name: lonely\n    run: scripts/ok.sh\n    label: nobody-has-it\n"
    layouts, jobs_dir = write_layout(tmp_path, PIPELINES, projects, jobs, {"ok.sh": "echo ok\n"})
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, **{"gearman-grace": 600})
    try:
        url = gk.web_url
        assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/lonely",
                                            "change": 1}).status_code == 202
        held = wait_for(lambda: value(s := scrape(url), "ccci_builds_waiting", state="held") == 1
                        and s, 20, "the build held for want of a worker")
        assert value(held, "ccci_pipeline_queue_length", pipeline="check") == 1
        assert value(held, "ccci_gearman_function_workers", function="build:lonely:nobody-has-it") == 0
        assert admin(gk, "/admin/pause", {"pipeline": "check"}).status_code == 202
        gk.scheduler.sync()
        assert value(scrape(url), "ccci_pipeline_paused", pipeline="check") == 1
        assert admin(gk, "/admin/dequeue", {"project": "org/lonely", "change": 1}).status_code == 202
        gk.scheduler.sync()
        done = scrape(url)
        assert value(done, "ccci_items_enqueued_total", pipeline="check") == 1
        assert value(done, "ccci_items_finished_total", pipeline="check", result="DEQUEUED") == 1
        assert value(done, "ccci_pipeline_queue_length", pipeline="check") == 0
        assert total(done, "ccci_build_duration_seconds_count") == 0   # it never ran
        assert value(done, "ccci_scheduler_event_seconds_count", event="PauseRequest") == 1
        assert value(done, "ccci_scheduler_event_seconds_count", event="DequeueRequest") == 1
        wait_for(lambda: value(scrape(url), "ccci_builds_waiting", state="held") == 0, 10,
                 "the canceled build no longer held")
    finally:
        gk.stop()


def test_a_restarted_gatekeeper_counts_only_what_happens_after_its_start(gatekeeper, tmp_path):
    """Counters start at zero with each process: an item restored from the store is not
    enqueued again, and builds that ended before the restart are not counted again."""
    gk = gatekeeper
    assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe",
                                        "change": 1, "patchset": gk.shas[1]}).status_code == 202
    wait_for(lambda: _install_running(gk), what="install of change 1 running (held)")
    gk.stop()
    gk.hold.write_text("go")
    again = start_gatekeeper(tmp_path, tmp_path / "layouts", tmp_path / "jobs", tmp_path / "repos",
                             connections={"gitea": gk.settings.connections["gitea"]})
    try:
        [item] = finished(again, 1, timeout=90)
        assert item["result"] == "SUCCESS"
        again.scheduler.sync()
        samples = scrape(again.web_url)
        assert value(samples, "ccci_items_enqueued_total", pipeline="check") == 0
        assert value(samples, "ccci_items_finished_total", pipeline="check", result="SUCCESS") == 1
        # build and publish ended before the restart; install (again) and systest after
        assert {k: v for k, v in samples["ccci_build_duration_seconds_count"].items() if v} == {
            (("job", "install"), ("result", "SUCCESS")): 1,
            (("job", "systest"), ("result", "SUCCESS")): 1}
    finally:
        again.stop()


def test_statsd_gets_the_counters_and_timers_as_they_happen(tmp_path):
    """With statsd-host set, a real run sends Zuul-style datagrams to a UDP socket."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.2)
    repos = tmp_path / "repos"
    make_repo(repos, "org/recipe", {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(tmp_path, PIPELINES, PROJECTS, JOBS, SCRIPTS)
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos,
                          **{"statsd-host": f"127.0.0.1:{receiver.getsockname()[1]}"})
    try:
        assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/recipe",
                                            "change": 1}).status_code == 202
        finished(gk, 1)
        gk.scheduler.sync()
        lines: list[str] = []
        while True:
            try:
                lines.append(receiver.recv(65536).decode())
            except socket.timeout:
                break
    finally:
        gk.stop()
        receiver.close()
    names = {line.split(":", 1)[0]: line.rsplit("|", 1)[1] for line in lines}
    assert names["ccci.pipeline.check.enqueued"] == "c"
    assert names["ccci.pipeline.check.finished.SUCCESS"] == "c"
    for job in ("build", "publish", "install", "systest"):
        assert names[f"ccci.job.{job}.SUCCESS"] == "ms"
        assert names[f"ccci.dispatch.build_{job}"] == "ms"
    assert names["ccci.scheduler.event.EnqueueRequest"] == "ms"
    assert names["ccci.scheduler.event.BuildCompleted"] == "ms"
    assert len([x for x in lines if x.startswith("ccci.job.")]) == 4
    assert all(re.fullmatch(r"ccci\.[A-Za-z0-9_.-]+:[0-9.]+\|(c|ms)", x) for x in lines), lines


def test_statsd_that_is_down_or_unknown_costs_nothing_or_says_why():
    down = Statsd("127.0.0.1", free_port())
    for _ in range(3):   # ICMP refusals come back as errors on later sends: swallowed
        down.incr("pipeline", "check", "enqueued")
    down.close()
    with pytest.raises(OSError, match="statsd-host no-such-host.invalid:8125"):
        Statsd("no-such-host.invalid")


def test_a_scrape_answers_while_the_scheduler_is_busy_and_shows_its_backlog(gatekeeper):
    """The scheduler thread is held in a 3 s step; five events wait behind it. A scrape
    reads the published snapshot, so it answers at once and counts the five."""
    busy = threading.Event()
    blocker = threading.Thread(target=gatekeeper.scheduler.call,
                               args=(lambda engine: busy.set() or time.sleep(3),), daemon=True)
    blocker.start()
    assert busy.wait(10)
    for _ in range(5):
        gatekeeper.scheduler.put(Event())   # an event the engine notes and ignores
    started = time.monotonic()
    samples = scrape(gatekeeper.web_url)
    assert time.monotonic() - started < 1.5
    assert value(samples, "ccci_scheduler_event_queue_depth") == 5
    assert value(samples, "ccci_pipeline_queue_length", pipeline="check") == 0
    blocker.join(10)
    gatekeeper.scheduler.sync()
    after = scrape(gatekeeper.web_url)
    assert value(after, "ccci_scheduler_event_queue_depth") == 0
    assert value(after, "ccci_scheduler_event_seconds_count", event="Event") == 5


def test_dispatch_latency_counts_the_hold_and_one_take_per_build(tmp_path):
    """Held 1 s for want of a worker, then taken: one observation of at least 1 s, though
    the worker says it started twice (as gearmand's requeue of a lost build looks)."""
    server = EmbeddedServer("127.0.0.1", 0)
    servers = [("127.0.0.1", server.port)]
    taken: list[tuple[str, float]] = []
    events: list[object] = []
    d = GearmanDispatcher(servers, events.append, tmp_path / "logs", grace=60,
                          on_taken=lambda function, seconds: taken.append((function, seconds)))
    worker = None
    try:
        d.wait_for_server(10)
        d.start(StartBuild("a" * 32, "build:late", {}))
        time.sleep(1.0)
        worker = GearmanWorker(servers, "w1", ["build:late"])
        req = worker.get_build(15)
        assert req is not None
        req.started("w1")
        req.started("w1")
        req.complete("SUCCESS")
        wait_for(lambda: any(isinstance(e, BuildCompleted) for e in events), 10, "the result")
        assert sum(isinstance(e, BuildStarted) for e in events) == 2
        assert len(taken) == 1 and taken[0][0] == "build:late" and 1.0 <= taken[0][1] < 15
    finally:
        if worker is not None:
            worker.shutdown()
        d.shutdown()
        server.shutdown()
