"""How a build finds the host that holds its recipe's canonical, on real Gearman servers
(gear.Server and gearmand): a worker registers ``warm:<recipe>`` functions for the usable
canonicals of its warm root; the dispatcher sends a quick build of an enrolled recipe
there, else to any worker (cold fallback, said in the build's log); workers report their
canonicals, and the pool in ``/status.json`` shows them.

Two real ``WorkerDaemon`` s, each with its own warm root; one holds a canonical of
``hello`` written on disk with ``swarm.warm`` (its record, a good with recipe files, a
snapshot naming it: no Docker needed, nothing is deployed). The ``recipe-systest`` kind
is replaced by one that only says what the quick lane would find on the worker that
runs it (``quick.canonical_for``): routing is what is under test."""
from __future__ import annotations

import os
import threading
import time

import pytest

from ccci_gate.core.actions import StartBuild
from ccci_gate.core.events import BuildCompleted, BuildStarted
from ccci_gate.core.layout import JobConfig, warm_function
from ccci_gate.core.managers.builds import warm_preference
from ccci_gate.gearman.dispatcher import GearmanDispatcher
from ccci_gate.gearman.warmpool import WarmReports, route
from ccci_gate.swarm import warm
from ccci_gate.worker import kinds
from ccci_gate.worker.daemon import WorkerDaemon
from ccci_gate.worker.kinds import quick

from test_gearman_dispatch import Events, wait_registered

JOBS = {"systest": JobConfig("systest", kind="recipe-systest"),
        "lint": JobConfig("lint", kind="shell", run="true")}
WARM_HELLO = "build:systest:warm:hello"


def fake_canonical(root, recipe: str, version: str = "1.1.0+1") -> warm.Canonical:
    """A seeded canonical as a promotion leaves it, minus the Docker volumes."""
    canonical = warm.Canonical(root, recipe)
    state = root / "hook-state"
    state.mkdir(parents=True, exist_ok=True)
    good = canonical.new_good(b"recipe files", {f"warm-{recipe}_ci_local_pw_v1": "s3cret"}, state)
    snap = canonical.snapshots / "snap-1"
    snap.mkdir(parents=True)
    (snap / f"warm-{recipe}_ci_local_data.tar").write_bytes(b"\0" * 10240)
    (snap / "meta.json").write_text(
        f'{{"good": "{good}", "version": "{version}", "commit": "abc12345", '
        f'"recipe": "{recipe}", "domain": "warm-{recipe}.ci.local", "volumes": []}}')
    os.symlink("snap-1", canonical.snapshots / "current")
    canonical.promoted({"version": version, "commit": "abc12345", "good": good,
                        "domain": f"warm-{recipe}.ci.local", "stack": f"warm-{recipe}_ci_local"})
    assert canonical.unusable() == ""
    return canonical


class Where:
    """``recipe-systest`` reduced to what the quick lane would find here."""

    name = "recipe-systest"

    def run(self, ctx) -> str:
        if ctx.parameters.get("HOLD"):     # keep the worker busy until stopped
            ctx.stop.wait(30)
            return "ABORTED"
        canonical = quick.canonical_for(ctx)
        why = "the project is not enrolled" if canonical is None else canonical.unusable()
        ctx.log(f"canonical here: {why or 'usable'}\n")
        return "SUCCESS"


@pytest.fixture
def pool(gearman_server, tmp_path, monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "recipe-systest", Where())
    events = Events()
    dispatcher = GearmanDispatcher([gearman_server], events, tmp_path / "logs", grace=1.0)
    dispatcher.wait_for_server(10)
    canonical = fake_canonical(tmp_path / "warm-a", "hello")
    daemons = {}
    for name in ("warm", "cold"):
        daemons[name] = WorkerDaemon([gearman_server], name, JOBS, [], tmp_path / f"w-{name}",
                                     tmp_path, swarm=lambda: None,
                                     warm_root=tmp_path / ("warm-a" if name == "warm" else "warm-b"))
        threading.Thread(target=daemons[name].run_forever, daemon=True).start()
    wait_registered(dispatcher, "build:systest", 2)
    wait_registered(dispatcher, WARM_HELLO, 1)
    yield dispatcher, events, daemons, canonical, tmp_path / "logs"
    for daemon in daemons.values():
        daemon.shutdown()
    dispatcher.shutdown()


def quick_build(n: int, recipe: str = "hello") -> StartBuild:
    build_id = f"{n:032x}"
    params = {"ZUUL_UUID": build_id, "ZUUL_PROJECT": f"coop-cloud/{recipe}", "CCCI_WARM": "1",
              "CCCI_QUICK": "1", "ZUUL_CHANGE": "1", "JOB_NAME": "systest"}
    return StartBuild(build_id, "build:systest", params,
                      prefer=warm_preference(JOBS["systest"], params))


def run(dispatcher, events, action: StartBuild, logs) -> tuple[str, str]:
    dispatcher.start(action)
    started = events.next(BuildStarted, action.build_id)
    done = events.next(BuildCompleted, action.build_id)
    assert done.result == "SUCCESS"
    return started.worker, log_of(dispatcher, action.build_id)


def log_of(dispatcher, build_id: str) -> str:
    """The build's log as the gatekeeper keeps it (plain, or compressed once it ended)."""
    return (dispatcher.logs.read(build_id) or b"").decode()


def test_only_the_worker_holding_a_canonical_registers_its_label(pool):
    dispatcher, _, daemons, _, _ = pool
    functions = dispatcher.pool(max_age=0)["functions"]
    assert functions[WARM_HELLO]["workers"] == 1 and functions["build:systest"]["workers"] == 2
    assert daemons["warm"].functions() == ["build:lint", "build:systest", WARM_HELLO]
    assert daemons["cold"].functions() == ["build:lint", "build:systest"]


def test_a_quick_build_goes_to_the_canonicals_host_and_falls_back_to_cold(pool):
    dispatcher, events, daemons, canonical, logs = pool
    for n in range(1, 5):     # never the other worker, though both are idle
        worker, log = run(dispatcher, events, quick_build(n), logs)
        assert worker == "warm", log
        assert log.startswith(f"dispatch: as {WARM_HELLO}: a worker labelled warm:hello "
                              f"holds the canonical\n"), log
        assert "canonical here: usable" in log

    # a recipe no host holds: any worker, and the log says why the run will be cold
    worker, log = run(dispatcher, events, quick_build(9, "other"), logs)
    assert log.startswith("dispatch: no worker has the label warm:other (no host holds a "
                          "usable canonical): as build:systest, on any worker; a quick run "
                          "there falls back to cold\n"), log
    assert "canonical here: no canonical of other on this host" in log

    # the canonical breaks (a failed restore): its host stops offering it; hello goes cold
    canonical.set_record(status="broken", why="tar: no space left")
    daemons["warm"].refresh_warm()
    wait_registered(dispatcher, "build:systest", 2)
    assert WARM_HELLO not in dispatcher.pool(max_age=0)["functions"] or \
        dispatcher.pool(max_age=0)["functions"][WARM_HELLO]["workers"] == 0
    worker, log = run(dispatcher, events, quick_build(10), logs)
    assert log.startswith("dispatch: no worker has the label warm:hello"), log


def test_a_build_queued_for_a_canonicals_host_that_leaves_is_routed_again(pool):
    dispatcher, events, daemons, _, logs = pool
    busy = quick_build(1)
    busy = StartBuild(busy.build_id, busy.function, {**busy.parameters, "HOLD": "1"},
                      prefer=busy.prefer)
    dispatcher.start(busy)
    assert events.next(BuildStarted, busy.build_id).worker == "warm"
    waiting = quick_build(2)          # queued behind it, for the same host
    dispatcher.start(waiting)
    deadline = time.monotonic() + 10
    while dispatcher.pool(max_age=0)["functions"].get(WARM_HELLO, {}).get("queued", 0) < 1:
        assert time.monotonic() < deadline, "the second build never queued for warm:hello"
        time.sleep(0.05)
    daemons["warm"].shutdown()        # the host holding the canonical goes away
    lost = events.next(BuildCompleted, waiting.build_id)
    assert lost.result is None, lost        # a lost attempt: the engine runs it again...
    assert log_of(dispatcher, waiting.build_id).startswith(f"dispatch: as {WARM_HELLO}")
    retry = quick_build(3)                  # ...under a new id, routed afresh
    worker, log = run(dispatcher, events, retry, logs)
    assert worker == "cold"
    assert log.startswith("dispatch: no worker has the label warm:hello"), log
    assert "canonical here: no canonical of hello on this host" in log


def test_workers_report_their_canonicals_to_the_pool(pool):
    dispatcher, events, _, canonical, logs = pool
    rows = dispatcher.pool(max_age=0)["warm"]     # labelled, no build reported yet
    assert rows == [{"worker": "warm", "recipe": "hello", "reported": None, "registered": True}]
    run(dispatcher, events, quick_build(1), logs)
    [row] = dispatcher.pool(max_age=0)["warm"]
    assert (row["worker"], row["recipe"], row["version"], row["status"], row["registered"]) == \
        ("warm", "hello", "1.1.0+1", "ready", True)
    assert row["last_good"]["version"] == "1.1.0+1" and row["reported"] > 0
    assert row["bytes"] == warm.disk_usage(canonical.dir) > 10240


def test_preference_only_for_canonical_runs_of_enrolled_recipes():
    systest, lint = JOBS["systest"], JOBS["lint"]
    quick_pr = {"CCCI_WARM": "1", "CCCI_QUICK": "1", "ZUUL_CHANGE": "3",
                "ZUUL_PROJECT": "coop-cloud/hello"}
    assert warm_preference(systest, quick_pr) == (WARM_HELLO,)
    assert warm_preference(systest, {**quick_pr, "RECIPE": "hi"}) == ("build:systest:warm:hi",)
    branch = {"CCCI_WARM": "1", "CCCI_QUICK": "0", "ZUUL_PROJECT": "coop-cloud/hello"}
    assert warm_preference(systest, branch) == (WARM_HELLO,)       # may promote: re-seed there
    assert warm_preference(systest, {**quick_pr, "CCCI_QUICK": "0"}) == ()   # a cold check
    assert warm_preference(systest, {**quick_pr, "CCCI_WARM": "0"}) == ()    # not enrolled
    assert warm_preference(lint, quick_pr) == ()
    sweep = JobConfig("sweep", kind="recipe-sweep")      # compares with the known-good
    assert warm_preference(sweep, branch) == ("build:sweep:warm:hello",)
    assert warm_function("build:systest", "bad name") is None
    assert warm_preference(systest, {**quick_pr, "RECIPE": "a b"}) == ()


def test_route_and_reports_without_a_server():
    assert route("build:x", (), lambda f: True) == ("build:x", "")
    assert route("build:x", ("build:x:warm:a",), lambda f: True)[0] == "build:x:warm:a"
    assert route("build:x", ("build:x:warm:a",), lambda f: False)[0] == "build:x"
    reports = WarmReports()
    reports.note("w", "not a list")
    reports.note("w", [{"recipe": "a", "bytes": 5, "evil": "x", "last_good": {"v": [1]}}, 7])
    assert reports.rows([]) == [{"worker": "w", "recipe": "a", "bytes": 5, "last_good": {},
                                 "reported": reports.rows([])[0]["reported"],
                                 "registered": False}]
