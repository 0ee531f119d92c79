"""The dispatcher under faults, on gear.Server and gearmand: cancels racing starts, a
Gearman outage, a server restart, two servers with one stopped."""
from __future__ import annotations

import random
import subprocess
import threading
import time

import pytest

from ccci_gate.core.actions import CancelBuild, StartBuild
from ccci_gate.core.events import BuildCompleted, BuildStarted
from ccci_gate.gearman.dispatcher import GearmanDispatcher
from ccci_gate.gearman.server import EmbeddedServer
from ccci_gate.gearman.worker import GearmanWorker

from conftest import free_port, wait_listening
from test_gearman_dispatch import Events, bid


class HoldingWorker:
    """A worker thread: a build with ``HOLD=1`` runs until it is stopped (or 20 s pass,
    which the tests count as "never stopped"); other builds succeed at once."""

    def __init__(self, servers, name: str, functions=("build:job",)):
        self.name = name
        self.stops: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.taken: list[str] = []
        self.stopped: list[str] = []
        self.unstopped: list[str] = []
        self.gearman = GearmanWorker(servers, name, list(functions), on_stop=self.stop)
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def stop(self, build_id: str) -> None:
        with self.lock:
            self.stops.setdefault(build_id, threading.Event()).set()

    def loop(self) -> None:
        while self.running:
            req = self.gearman.get_build(0.5)
            if req is None:
                continue
            with self.lock:
                stop = self.stops.setdefault(req.build_id, threading.Event())
                self.taken.append(req.build_id)
            req.started(self.name)
            if req.parameters.get("HOLD") == "1":
                if stop.wait(20):
                    self.stopped.append(req.build_id)
                    req.complete("ABORTED")
                else:
                    self.unstopped.append(req.build_id)
                    req.complete("SUCCESS")
            else:
                req.complete("SUCCESS")

    def shutdown(self) -> None:
        self.running = False
        self.gearman.shutdown()


def gearmand(binary: str, port: int | None = None) -> tuple[subprocess.Popen, int]:
    port = port or free_port()
    proc = subprocess.Popen([binary, "-L", "127.0.0.1", "-p", str(port), "--log-file", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return proc, port


def race_cancels(servers, trials: int, tmp_path, workers: int = 3, seed: int = 1) -> dict:
    """Start ``trials`` builds, half of them holding and canceled at a random moment
    (often while the start is still on its way); return what happened."""
    rnd = random.Random(seed)
    events = Events()
    d = GearmanDispatcher(servers, events, tmp_path / "logs", grace=5)
    pool = [HoldingWorker(servers, f"w{i}") for i in range(workers)]
    slowest_call = 0.0
    try:
        d.wait_for_server(10)
        for w in pool:
            w.gearman.wait_for_server(10)
        deadline = time.monotonic() + 15
        while d.pool(max_age=0)["functions"].get("build:job", {}).get("workers", 0) < workers:
            assert time.monotonic() < deadline, "workers did not register"
            time.sleep(0.05)
        held, plain = [], []
        for n in range(trials):
            hold = n % 2 == 0
            build_id = bid(10_000 + n)
            t0 = time.monotonic()
            d.start(StartBuild(build_id, "build:job", {"HOLD": "1" if hold else "0"}))
            slowest_call = max(slowest_call, time.monotonic() - t0)
            (held if hold else plain).append(build_id)
            if hold:
                time.sleep(rnd.choice((0, 0, 0.0005, 0.002, 0.01)))
                t0 = time.monotonic()
                d.cancel(CancelBuild(build_id))
                slowest_call = max(slowest_call, time.monotonic() - t0)
        results: dict[str, BuildCompleted] = {}
        deadline = time.monotonic() + 60
        while len(results) < len(plain) and time.monotonic() < deadline:
            try:
                event = events.q.get(timeout=0.2)
            except Exception:
                continue
            if isinstance(event, BuildCompleted) and event.build_id in plain:
                results[event.build_id] = event
        # every worker idle again: no canceled build keeps a worker
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            busy = d.pool(max_age=0)["functions"].get("build:job", {})
            if not busy.get("running") and not busy.get("queued") and not d._builds:
                break
            time.sleep(0.1)
        return {
            "finished": sum(1 for e in results.values() if e.result == "SUCCESS"),
            "lost": len(plain) - len(results),
            "not_registered": sum(1 for e in results.values() if e.not_registered),
            "wrong": sum(1 for e in results.values() if e.result not in ("SUCCESS", None)),
            "plain": len(plain),
            "unstopped": sum(len(w.unstopped) for w in pool),
            "stuck": len(d._builds) + sum(busy.get(k, 0) for k in ("running", "queued")),
            "slowest_call": slowest_call,
        }
    finally:
        for w in pool:
            w.shutdown()
        d.shutdown()


def check_race(outcome: dict) -> None:
    assert outcome["finished"] == outcome["plain"], outcome
    assert outcome["lost"] == outcome["not_registered"] == outcome["wrong"] == 0, outcome
    assert outcome["unstopped"] == 0, outcome      # every canceled build that ran was stopped
    assert outcome["stuck"] == 0, outcome
    assert outcome["slowest_call"] < 1.0, outcome  # start/cancel never block the caller


def test_cancels_racing_starts_on_the_embedded_server(tmp_path):
    server = EmbeddedServer("127.0.0.1", 0)
    try:
        check_race(race_cancels([("127.0.0.1", server.port)], 80, tmp_path))
    finally:
        server.shutdown()


def test_cancels_racing_starts_on_gearmand(tmp_path, gearmand_bin):
    proc, port = gearmand(gearmand_bin)
    try:
        check_race(race_cancels([("127.0.0.1", port)], 80, tmp_path))
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_outage_holds_builds_and_never_blocks_the_caller(tmp_path, gearmand_bin):
    """No server at all: start/cancel/pool return at once, builds wait; the server comes
    up and a worker registers within the grace: the build runs and succeeds."""
    port = free_port()
    events = Events()
    d = GearmanDispatcher([("127.0.0.1", port)], events, tmp_path / "logs", grace=20)
    proc = worker = None
    try:
        t0 = time.monotonic()
        d.start(StartBuild(bid(1), "build:job", {}))
        d.start(StartBuild(bid(2), "build:job", {}))
        d.cancel(CancelBuild(bid(2)))
        assert d.pool()["servers"] == [] and time.monotonic() - t0 < 1.0
        time.sleep(1.0)
        assert events.q.empty()              # held, not NOT_REGISTERED, not lost
        proc, _ = gearmand(gearmand_bin, port)
        worker = HoldingWorker([("127.0.0.1", port)], "w1")
        assert events.next(BuildCompleted, bid(1), timeout=30).result == "SUCCESS"
        assert worker.taken == [bid(1)]      # the canceled one never ran
    finally:
        if worker:
            worker.shutdown()
        d.shutdown()
        if proc:
            proc.terminate()
            proc.wait(10)


def test_a_gearmand_restart_loses_nothing_and_gives_no_false_not_registered(tmp_path,
                                                                            gearmand_bin):
    proc, port = gearmand(gearmand_bin)
    servers = [("127.0.0.1", port)]
    events = Events()
    d = GearmanDispatcher(servers, events, tmp_path / "logs", grace=20)
    worker = HoldingWorker(servers, "w1")
    try:
        d.wait_for_server(10)
        d.start(StartBuild(bid(1), "build:job", {"HOLD": "1"}))
        assert events.next(BuildStarted, bid(1), timeout=15)
        proc.kill()
        proc.wait(10)
        lost = events.next(BuildCompleted, bid(1), timeout=15)
        assert lost.result is None and not lost.not_registered   # a lost attempt: retried
        deadline = time.monotonic() + 10
        while bid(1) not in worker.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bid(1) in worker.stopped      # the worker dropped the build it can't report
        proc, _ = gearmand(gearmand_bin, port)
        d.start(StartBuild(bid(2), "build:job", {"BUILD_ATTEMPT": "2"}))   # the retry
        event = events.next(BuildCompleted, bid(2), timeout=40)
        assert event.result == "SUCCESS", event
    finally:
        worker.shutdown()
        d.shutdown()
        proc.terminate()
        proc.wait(10)


def test_two_servers_stopping_one_loses_no_build(tmp_path, gearmand_bin):
    (p1, port1), (p2, port2) = gearmand(gearmand_bin), gearmand(gearmand_bin)
    servers = [("127.0.0.1", port1), ("127.0.0.1", port2)]
    events = Events()
    d = GearmanDispatcher(servers, events, tmp_path / "logs", grace=20)
    workers = [HoldingWorker(servers, f"w{i}") for i in range(2)]
    try:
        deadline = time.monotonic() + 15
        while len(d.pool(max_age=0)["servers"]) < 2 or \
                d.pool(max_age=0)["functions"].get("build:job", {}).get("workers", 0) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ids = [bid(100 + n) for n in range(20)]
        for n, build_id in enumerate(ids):
            d.start(StartBuild(build_id, "build:job", {}))
            if n == 10:
                p1.kill()
        results: dict[str, str | None] = {}
        deadline = time.monotonic() + 60
        retry_of: dict[str, str] = {}
        while len(results) < len(ids) and time.monotonic() < deadline:
            try:
                event = events.q.get(timeout=0.2)
            except Exception:
                continue
            if not isinstance(event, BuildCompleted):
                continue
            origin = retry_of.get(event.build_id, event.build_id)
            assert not event.not_registered, event
            if event.result is None:     # lost with the server: the scheduler retries it
                again = bid(1000 + len(retry_of))
                retry_of[again] = origin
                d.start(StartBuild(again, "build:job", {"BUILD_ATTEMPT": "2"}))
            else:
                results[origin] = event.result
        assert results == {build_id: "SUCCESS" for build_id in ids}
    finally:
        for w in workers:
            w.shutdown()
        d.shutdown()
        for p in (p1, p2):
            p.terminate()
            p.wait(10)
