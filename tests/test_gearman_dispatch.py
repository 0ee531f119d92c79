"""The dispatcher and worker connection on real Gearman servers (gear.Server and gearmand):
round trip with log and progress, NOT_REGISTERED, lost attempts, cancel, stop, precedence."""
from __future__ import annotations

import queue
import socket
import threading
import time

import pytest

from ccci_gate.core.actions import CancelBuild, StartBuild
from ccci_gate.core.events import BuildCompleted, BuildProgress, BuildStarted
from ccci_gate.gearman.dispatcher import GearmanDispatcher
from ccci_gate.gearman.server import EmbeddedServer
from ccci_gate.gearman.worker import GearmanWorker


GRACE = 1.0  # seconds workers get to (re-)register, short for the tests


class Events:
    def __init__(self) -> None:
        self.q: "queue.Queue" = queue.Queue()

    def __call__(self, event) -> None:
        self.q.put(event)

    def next(self, kind, build_id=None, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, kind) and (build_id is None or event.build_id == build_id):
                return event
        raise AssertionError(f"no {kind.__name__} for {build_id}")


@pytest.fixture
def dispatcher(gearman_server, tmp_path):
    events = Events()
    d = GearmanDispatcher([gearman_server], events, tmp_path / "logs", grace=GRACE)
    d.wait_for_server(10)
    d.events = events
    yield d
    d.shutdown()


@pytest.fixture
def make_worker(gearman_server):
    made = []

    def make(name, functions, on_stop=lambda b: None):
        w = GearmanWorker([gearman_server], name, functions, on_stop)
        w.wait_for_server(10)
        made.append(w)
        return w
    yield make
    for w in made:
        w.shutdown()


def wait_registered(d: GearmanDispatcher, function: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if d.pool(max_age=0)["functions"].get(function, {}).get("workers", 0) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{function} not registered")


def bid(n: int) -> str:
    return f"{n:032x}"


def test_round_trip_with_parameters_log_and_progress(dispatcher, make_worker, tmp_path):
    w = make_worker("w1", ["build:hello"])
    wait_registered(dispatcher, "build:hello")
    dispatcher.start(StartBuild(bid(1), "build:hello", {"ZUUL_PROJECT": "org/a", "N": 3}))
    req = w.get_build(10)
    assert req.parameters == {"ZUUL_PROJECT": "org/a", "N": "3"} and req.job_name == "hello"
    assert req.build_id == bid(1)
    req.started("w1", "http://w1/1")
    assert dispatcher.events.next(BuildStarted, bid(1)).worker == "w1"
    req.log("line one\n")
    req.progress(1, 2)
    assert dispatcher.events.next(BuildProgress, bid(1)).denominator == 2
    req.log("line two\n")
    req.complete("SUCCESS")
    assert dispatcher.events.next(BuildCompleted, bid(1)).result == "SUCCESS"
    assert dispatcher.logs.read(bid(1)) == b"line one\nline two\n"   # plain or compressed


def test_no_registered_worker_is_not_registered_after_the_grace(dispatcher, make_worker):
    w = make_worker("w1", ["build:other"])
    wait_registered(dispatcher, "build:other")
    w.shutdown()
    deadline = time.monotonic() + 10
    while dispatcher.pool(max_age=0)["functions"].get("build:other", {}).get("workers", 0) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    for n, function in ((2, "build:nobody"), (3, "build:other")):
        started = time.monotonic()
        dispatcher.start(StartBuild(bid(n), function, {}))
        event = dispatcher.events.next(BuildCompleted, bid(n), timeout=GRACE + 10)
        assert event.not_registered and event.result is None
        assert time.monotonic() - started < GRACE + 5
    # long after the last worker left and the connection came up: at once (one poll)
    time.sleep(GRACE)
    dispatcher.start(StartBuild(bid(20), "build:nobody", {}))
    assert dispatcher.events.next(BuildCompleted, bid(20), timeout=5).not_registered


def test_a_build_waits_for_a_worker_that_registers_within_the_grace(gearman_server, tmp_path,
                                                                     make_worker):
    events = Events()
    d = GearmanDispatcher([gearman_server], events, tmp_path / "logs", grace=20)
    try:
        d.wait_for_server(10)
        d.start(StartBuild(bid(21), "build:late", {"BUILD_ATTEMPT": "2"}))
        time.sleep(1.5)   # a retry of a lost build: no worker yet, and no verdict either
        assert events.q.empty()
        w = make_worker("w-late", ["build:late"])
        req = w.get_build(15)
        assert req is not None and req.build_id == bid(21)
        req.started("w-late")
        req.complete("SUCCESS")
        assert events.next(BuildCompleted, bid(21)).result == "SUCCESS"
    finally:
        d.shutdown()


@pytest.mark.parametrize("how", ["fail", "no-result"])
def test_lost_attempts_come_back_without_a_result(dispatcher, make_worker, how):
    w = make_worker("w1", ["build:flaky"])
    wait_registered(dispatcher, "build:flaky")
    dispatcher.start(StartBuild(bid(4), "build:flaky", {}))
    req = w.get_build(10)
    req.started("w1")
    if how == "fail":
        req.fail()
    else:
        req._job.sendWorkComplete(b"{}")
    event = dispatcher.events.next(BuildCompleted, bid(4))
    assert event.result is None and event.message


def test_cancel_of_a_queued_build_removes_it_from_the_queue(dispatcher, make_worker):
    busy = make_worker("w1", ["build:slow"])
    wait_registered(dispatcher, "build:slow")
    dispatcher.start(StartBuild(bid(5), "build:slow", {}))
    holding = busy.get_build(10)          # the only worker is busy with build 5
    holding.started("w1")
    dispatcher.events.next(BuildStarted, bid(5))
    dispatcher.start(StartBuild(bid(6), "build:slow", {}))  # build 6 waits in the queue
    time.sleep(0.2)
    dispatcher.cancel(CancelBuild(bid(6)))
    dispatcher.pool(max_age=0)   # requests are handled in order: the cancel is done
    holding.complete("SUCCESS")
    assert busy.get_build(1.0) is None, "a cancelled build reached a worker"
    assert dispatcher.pool(max_age=0)["functions"]["build:slow"]["queued"] == 0


def test_cancel_of_a_running_build_stops_it_on_its_worker(dispatcher, make_worker):
    stopped = threading.Event()
    w = make_worker("w1", ["build:long"], on_stop=lambda b: stopped.set() if b == bid(7) else None)
    wait_registered(dispatcher, "build:long")
    dispatcher.start(StartBuild(bid(7), "build:long", {}))
    req = w.get_build(10)
    req.started("w1")
    dispatcher.events.next(BuildStarted, bid(7))
    dispatcher.cancel(CancelBuild(bid(7)))
    assert stopped.wait(10), "the worker was not told to stop"
    req.complete("ABORTED")


def test_precedence_orders_the_queue(dispatcher, make_worker):
    w = make_worker("w1", ["build:p"])
    wait_registered(dispatcher, "build:p")
    dispatcher.start(StartBuild(bid(10), "build:p", {"N": "first"}))
    first = w.get_build(10)
    for n, prec in ((11, "low"), (12, "normal"), (13, "high")):
        dispatcher.start(StartBuild(bid(n), "build:p", {"N": prec}, precedence=prec))
    time.sleep(0.2)
    first.complete("SUCCESS")
    order = []
    for _ in range(3):
        req = w.get_build(10)
        order.append(req.parameters["N"])
        req.complete("SUCCESS")
    assert order == ["high", "normal", "low"]


def test_every_connection_sets_tcp_nodelay():
    server = EmbeddedServer("127.0.0.1", 0)
    events = Events()
    d = GearmanDispatcher([("127.0.0.1", server.port)], events, __import__("pathlib").Path("/tmp"))
    w = GearmanWorker([("127.0.0.1", server.port)], "w1", ["build:x"])
    try:
        d.wait_for_server(10)
        w.wait_for_server(10)
        sockets = [c.conn for c in d.client.active_connections]
        sockets += [c.conn for c in w._builds_conn.active_connections]
        deadline = time.monotonic() + 5
        while len(server._server.active_connections) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        sockets += [c.conn for c in server._server.active_connections]
        assert len(sockets) >= 4
        for sock in sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        w.shutdown()
        d.shutdown()
        server.shutdown()
