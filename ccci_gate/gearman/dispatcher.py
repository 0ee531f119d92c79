"""The dispatcher: the gatekeeper's Gearman client (the ``Dispatcher`` port).

It submits builds, turns what workers send back into frozen events, writes the log
chunks workers stream into the build's log (``logstore.LogStore``: ``log_dir/<build-id>.log``,
compressed on its own thread once the build ends), and cancels builds.

Threads. ``start``, ``cancel`` and ``pool`` never block: they put a request on a queue
(or read a snapshot). One **dispatcher thread** does every blocking gear call —
submits, admin requests (status, workers, ``cancel job``), ``stop:<worker>`` jobs —
and polls the servers' registries once a second. gear's poll thread only runs the
packet callbacks below, which never call gear: a stop decided there is handed to the
dispatcher thread. Every exception of a gear call is caught (``NoConnectedServersError``,
``TimeoutError``... are not ``gear.GearmanError``).

Waiting for workers. A build whose function no worker has registered is *held* here,
not submitted: it is submitted the moment a worker registers it, and reported
``NOT_REGISTERED`` only when no worker registered it within ``grace`` seconds of the
later of: the last (re)connection to a server, the last time a worker had it, and (for
a retry of a lost attempt) the retry itself. So a restarted Gearman server or a
restarting worker gets time to re-register, while a function nobody ever had, on a
server connected for longer than the grace, is NOT_REGISTERED within a poll (~1 s).
While no server is connected at all, builds are held without a deadline.

Outcomes are the same on gear.Server and gearmand: a worker lost mid-build gives
WORK_FAIL on the former and a requeue on the latter (→ a second ``BuildStarted``); a
connection to the server lost under a build gives ``BuildCompleted(result=None)`` and a
``stop:<worker>`` for it once a server is back, so the retry never runs beside it.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gear
from gear import constants

from ..core.actions import CancelBuild, StartBuild
from ..core.events import BuildCompleted, BuildProgress, BuildStarted, Event
from ..logstore import LogStore
from ..pki import TlsFiles
from . import protocol
from .warmpool import WarmReports, route
from .client import ADMIN_TIMEOUT, SUBMIT, Client, send_job, admin, parse_status, parse_workers

log = logging.getLogger("ccci_gate.dispatcher")

GRACE = 30.0          # seconds workers get to (re-)register before NOT_REGISTERED
POLL = 1.0            # registry poll interval
STOP_TTL = 120.0      # how long a stop waits for a server to send it through

HELD, QUEUED, RUNNING = "held", "queued", "running"


@dataclass(eq=False)
class _Build:
    """One build as the dispatcher sees it. ``lock`` guards the fields the poll thread
    reads or writes (state, worker, canceled, stop_sent, finished)."""

    action: StartBuild
    held_since: float
    state: str = HELD
    job: gear.Job | None = None
    worker: str = ""
    canceled: bool = False
    stop_sent: bool = False
    finished: bool = False
    retry: bool = False
    routed: str = ""     # the function it is submitted as (``warmpool.route``)

    @property
    def build_id(self) -> str:
        return self.action.build_id

    @property
    def function(self) -> str:
        return self.routed or self.action.function


@dataclass
class _Pending:
    """A stop to send when a server is connected."""

    worker: str
    build_id: str
    until: float = field(default_factory=lambda: time.monotonic() + STOP_TTL)


class GearmanDispatcher:
    """Runs builds on Gearman workers and reports back through ``emit``."""

    def __init__(self, servers: list[tuple[str, int]], emit: Callable[[Event], None],
                 log_dir: Path, client_id: str = "ccci-gate", connect_timeout: float = 10.0,
                 grace: float = GRACE, poll: float = POLL, tls: TlsFiles | None = None,
                 on_taken: Callable[[str, float], None] = lambda function, seconds: None,
                 logs: LogStore | None = None):
        self.emit = emit
        # (function, seconds from ``start`` to a worker taking the build), on gear's poll
        # thread: it must return at once (``web/metrics.py`` observes a histogram)
        self.on_taken = on_taken
        self.log_dir = Path(log_dir)
        self.logs = logs or LogStore(self.log_dir)
        self.connect_timeout = connect_timeout
        self.grace = grace
        self.poll = poll
        self._lock = threading.Lock()
        self._ops: "queue.Queue[tuple | None]" = queue.Queue()
        self._builds: dict[str, _Build] = {}       # dispatcher thread only
        self._stops: list[_Pending] = []            # dispatcher thread only
        # function → workers, per connection; last time a worker had a function
        self._registry: dict[Any, dict[str, int]] = {}
        self._seen: dict[str, float] = {}
        self._connected_at = time.monotonic()
        self._polled_at = 0.0
        self._snapshot: dict[str, Any] = {"servers": [], "functions": {}, "workers": []}
        self._snapshot_at = 0.0
        self._running = True
        # submitted, canceled, unqueued (removed from a server's queue), stops,
        # not_registered, lost: what happened, for benchmarks and the status
        self.stats: Counter[str] = Counter()
        self.warm = WarmReports()
        self.client = Client(self, client_id)
        for host, port in servers:
            self.client.addServer(host, port, **protocol.tls_options(tls))
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    # --- the port (any thread; never blocks) -------------------------------------------

    def start(self, action: StartBuild) -> None:
        self._ops.put(("start", action))

    def cancel(self, action: CancelBuild) -> None:
        self._ops.put(("cancel", action.build_id))

    def pool(self, max_age: float | None = None) -> dict[str, Any]:
        """Functions (queued, running, workers), workers and servers, as of the last
        poll, and the builds held here for want of a worker (``held``, and
        ``held_functions``: how many per function). ``max_age`` asks for a poll at most that old (waits at most 2 s for it)."""
        if max_age is not None and time.monotonic() - self._snapshot_at > max_age:
            done = threading.Event()
            self._ops.put(("poll", done))
            done.wait(2.0)
        return dict(self._snapshot)

    def wait_for_server(self, timeout: float = 10.0) -> None:
        """Block until a server is connected (for tools and tests, not the scheduler)."""
        self.client.waitForServer(timeout)

    def shutdown(self) -> None:
        self._running = False
        self._ops.put(None)
        self._thread.join(timeout=10)
        self.client.shutdown()

    # --- the dispatcher thread ------------------------------------------------------------

    def _run(self) -> None:
        while self._running:
            wait = max(0.0, self._polled_at + self.poll - time.monotonic())
            try:
                op = self._ops.get(timeout=wait)
            except queue.Empty:
                op = ("tick",)
            if op is None:
                return
            try:
                self._do(op)
            except Exception:  # never let the thread die
                log.exception("dispatcher operation %s failed", op[0])

    def _do(self, op: tuple) -> None:
        kind = op[0]
        if kind == "start":
            self._start(op[1])
        elif kind == "cancel":
            self._cancel(op[1])
        elif kind == "stop":
            self._stops.append(_Pending(op[1], op[2]))
            self._send_stops()
        elif kind == "poll":
            self._tick()
            op[1].set()
        elif kind == "forget":
            build = self._builds.get(op[1])
            if build is not None and build.finished:
                del self._builds[op[1]]
        elif kind == "connected":
            self._connected_at = time.monotonic()
            self._tick()
        if kind == "tick" or time.monotonic() - self._polled_at >= self.poll:
            self._tick()

    def _start(self, action: StartBuild) -> None:
        now = time.monotonic()
        build = _Build(action, now, retry=_attempt(action) > 1)
        self._builds[action.build_id] = build
        if action.prefer:
            if now - self._polled_at > 0.2:
                self._poll_servers()   # route on a fresh look at who holds what
            self._route(build)
        if self._registered(build.function):
            self._submit(build)
        elif now - self._polled_at > 0.2:
            self._tick()  # a fresh look before holding (or calling it NOT_REGISTERED)

    def _tick(self) -> None:
        self._poll_servers()
        self._send_stops()
        now = time.monotonic()
        connected = bool(self.client.active_connections)
        for build in list(self._builds.values()):
            if build.state == HELD:
                if build.canceled:
                    self._builds.pop(build.build_id, None)
                    continue
                if not connected:
                    continue
                self._route(build)
                if self._registered(build.function):
                    self._submit(build)
                elif now >= self._deadline(build):
                    self._not_registered(build)
            elif build.state == QUEUED and connected and not self._registered(build.function) \
                    and now >= self._deadline(build):
                self._unqueue_unregistered(build)

    def _deadline(self, build: _Build) -> float:
        start = max(self._connected_at, self._seen.get(build.function, float("-inf")))
        if build.retry:
            start = max(start, build.held_since)
        return start + self.grace

    def _registered(self, function: str) -> bool:
        """At least one worker can run ``function`` (gear.Server lists count 0 too)."""
        return any(reg.get(function, 0) >= 1 for reg in self._registry.values())

    def _not_registered(self, build: _Build) -> None:
        self._builds.pop(build.build_id, None)
        with self._lock:
            if build.finished:
                return
            build.finished = True
        self.stats["not_registered"] += 1
        self.emit(BuildCompleted(build.build_id, None, not_registered=True,
                                 message=f"no worker registered {build.function} "
                                         f"within {self.grace:g}s"))

    def _unqueue_unregistered(self, build: _Build) -> None:
        """A queued build whose function lost every worker for longer than the grace:
        NOT_REGISTERED; one queued as a preferred function is a lost attempt instead, so
        its retry is routed afresh (gearmand fails a job it cancels to us: lost too)."""
        if self._admin_cancel(build):
            if build.routed and build.routed != build.action.function:
                self._builds.pop(build.build_id, None)
                self._lost(build, f"no worker registers {build.routed} any more: "
                                  f"run again, routed afresh")
                return
            self._not_registered(build)

    def _route(self, build: _Build) -> None:
        """Choose (again) the function a held build is submitted as; its log says so."""
        if not build.action.prefer:
            return
        function, why = route(build.action.function, build.action.prefer, self._registered)
        if function != build.routed:
            build.routed = function
            self.logs.append(build.build_id, why)

    # --- submitting ----------------------------------------------------------------------

    def _submit(self, build: _Build) -> None:
        action = build.action
        job = gear.Job(build.function.encode(), protocol.encode_parameters(action.parameters),
                       unique=action.build_id.encode())
        job.ccci_build = build
        conns = self._connections_for(build.function)
        if not conns:
            return  # held: tried again at the next tick
        conn = conns[0]
        build.job = job
        build.state = QUEUED
        try:
            sent = send_job(self.client, conn, job, SUBMIT[action.precedence], self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - every gear error, whatever its class
            sent, why = None, exc
        else:
            why = None
        if sent is True:
            self.stats["submitted"] += 1
            return
        if sent is None:
            # nothing reached the server: hold it and submit again at the next tick
            log.warning("could not submit build %s (%s); holding it", build.build_id, why)
            build.state, build.job = HELD, None
            return
        # the server may have it or not: count it as a lost attempt (the retry has a new id)
        self._builds.pop(build.build_id, None)
        self._lost(build, f"submit not acknowledged by {conn.host}:{conn.port}: {why or ''}")

    def _connections_for(self, function: str) -> list:
        """Active connections, those whose server has a worker for ``function`` first."""
        conns = list(self.client.active_connections)
        random.shuffle(conns)
        conns.sort(key=lambda c: -min(1, self._registry.get(c, {}).get(function, 0)))
        return conns

    # --- canceling and stopping ----------------------------------------------------------

    def _cancel(self, build_id: str) -> None:
        build = self._builds.pop(build_id, None)
        if build is None:
            return
        self.stats["canceled"] += 1
        with self._lock:
            build.canceled = True
            state, worker = build.state, build.worker
            stop = bool(worker) and not build.stop_sent and not build.finished
            build.stop_sent = build.stop_sent or stop
        if state == HELD:
            return
        if stop:
            self._stops.append(_Pending(worker, build_id))
            self._send_stops()
            return
        if state == QUEUED and self._admin_cancel(build):
            self.stats["unqueued"] += 1
            log.info("build %s removed from the Gearman queue", build_id)
        # else: a worker took it meanwhile; its first WORK_DATA turns into a stop

    def _admin_cancel(self, build: _Build) -> bool:
        job = build.job
        conn = getattr(job, "connection", None)
        if job is None or not job.handle or conn is None or not conn.connected:
            return False
        request = gear.CancelJobAdminRequest(job.handle)
        try:
            conn.sendAdminRequest(request, timeout=ADMIN_TIMEOUT)
        except Exception as exc:  # noqa: BLE001
            log.debug("cancel job %s failed: %s", build.build_id, exc)
            return False
        return request.response.startswith(b"OK")

    def _send_stops(self) -> None:
        now = time.monotonic()
        left = []
        for stop in self._stops:
            if now > stop.until:
                log.warning("gave up stopping build %s on %s: no server", stop.build_id,
                            stop.worker)
                continue
            if not self._send_stop(stop):
                left.append(stop)
        self._stops = left

    def _send_stop(self, stop: _Pending) -> bool:
        if not self._registered(protocol.stop_function(stop.worker)):
            return False  # (re)connecting, or gone with its builds: never queue it blind
        job = gear.Job(protocol.stop_function(stop.worker).encode(),
                       protocol.encode({"build_id": stop.build_id}),
                       unique=f"stop-{stop.build_id}".encode())
        for conn in self._connections_for(protocol.stop_function(stop.worker)):
            try:
                if send_job(self.client, conn, job, constants.SUBMIT_JOB_HIGH_BG, self.connect_timeout):
                    self.stats["stops"] += 1
                    log.info("asked %s to stop build %s", stop.worker, stop.build_id)
                    return True
            except Exception as exc:  # noqa: BLE001
                log.warning("stop of %s on %s failed: %s", stop.build_id, stop.worker, exc)
        return False

    # --- registry ------------------------------------------------------------------------

    def _on_connected(self, conn) -> None:  # gear's connect thread
        self._ops.put(("connected",))

    def _poll_servers(self) -> None:
        now = time.monotonic()
        self._polled_at = now
        registry: dict[Any, dict[str, int]] = {}
        functions: dict[str, dict[str, int]] = {}
        workers: list[dict[str, Any]] = []
        servers = []
        for conn in list(self.client.active_connections):
            servers.append(f"{conn.host}:{conn.port}")
            status = admin(conn, gear.StatusAdminRequest())
            if status is None:
                continue
            reg = registry.setdefault(conn, {})
            for name, total, running, count in parse_status(status):
                reg[name] = reg.get(name, 0) + count
                entry = functions.setdefault(name, {"queued": 0, "running": 0, "workers": 0})
                entry["queued"] += max(0, total - running)
                entry["running"] += running
                entry["workers"] += count
                if count:
                    self._seen[name] = now
            listing = admin(conn, gear.WorkersAdminRequest())
            workers += parse_workers(listing or b"")
        self._registry = registry
        held_functions: dict[str, int] = {}
        for b in self._builds.values():
            if b.state == HELD and not b.canceled:
                held_functions[b.function] = held_functions.get(b.function, 0) + 1
        self._snapshot = {"servers": servers, "functions": functions, "workers": workers,
                          "held": sum(held_functions.values()), "held_functions": held_functions,
                          "warm": self.warm.rows(workers)}
        self._snapshot_at = now

    # --- callbacks from gear's threads (never call gear here) -----------------------------

    def _on_data(self, job: gear.Job, data: bytes) -> None:
        build: _Build | None = getattr(job, "ccci_build", None)
        if build is None:
            return
        message = protocol.decode(data)
        if "name" in message:
            name = str(message.get("name") or "")
            if "warm" in message:
                self.warm.note(name, message["warm"])
            with self._lock:
                first = build.state != RUNNING   # gearmand may hand a lost build on again
                build.worker = name
                build.state = RUNNING
                # canceled, or already given up on (NOT_REGISTERED): it must not run
                stop = (build.canceled or build.finished) and not build.stop_sent
                build.stop_sent = build.stop_sent or stop
                live = not build.canceled and not build.finished
            if stop:
                self._ops.put(("stop", name, build.build_id))
            if live and first:
                self.on_taken(build.function, time.monotonic() - build.held_since)
            if live:
                self.emit(BuildStarted(build.build_id, name, str(message.get("url") or "")))
        elif "log" in message:
            self.logs.append(build.build_id, str(message["log"]))

    def _on_unknown_data(self, data: bytes) -> None:
        """A build we do not know (canceled, given up on) says it started: stop it."""
        message = protocol.decode(data)
        name, number = str(message.get("name") or ""), str(message.get("number") or "")
        if name and number:
            log.info("build %s started on %s after it was canceled: stopping it", number, name)
            self._ops.put(("stop", name, number))

    def _on_status(self, job: gear.Job) -> None:
        build: _Build | None = getattr(job, "ccci_build", None)
        if build is None or build.canceled or build.finished:
            return
        try:
            self.emit(BuildProgress(build.build_id, int(job.numerator), int(job.denominator)))
        except (TypeError, ValueError):
            pass

    def _on_complete(self, job: gear.Job, data: bytes) -> None:
        build: _Build | None = getattr(job, "ccci_build", None)
        if build is None:
            return
        message = protocol.decode(data)
        if "warm" in message:
            self.warm.note(build.worker, message["warm"])
        result = message.get("result")
        if not isinstance(result, str) or not result:
            self._lost(build, "WORK_COMPLETE without a result")
        elif message.get(protocol.RETRY):
            self._lost(build, f"infra {result} on {build.worker or 'a worker'}: "
                              f"{message.get('message') or 'the worker asks for a retry'}")
        else:
            self._finish(build, BuildCompleted(build.build_id, result,
                                               message=str(message.get("message") or "")))

    def _on_lost(self, job: gear.Job, why: str, disconnected: bool = False) -> None:
        build: _Build | None = getattr(job, "ccci_build", None)
        if build is None:
            return
        if disconnected:
            with self._lock:
                worker = build.worker if not build.stop_sent else ""
                build.stop_sent = True
            if worker:  # it may still run there: stop it before its retry starts
                self._ops.put(("stop", worker, build.build_id))
        self._lost(build, why)

    def _lost(self, build: _Build, why: str) -> None:
        self.stats["lost"] += 1
        self._finish(build, BuildCompleted(build.build_id, None, message=why))

    def _finish(self, build: _Build, event: BuildCompleted) -> None:
        self.logs.finish_later(build.build_id)   # nothing more comes for this job
        with self._lock:
            if build.finished or build.canceled:
                build.finished = True
                return
            build.finished = True
        self._ops.put(("forget", build.build_id))
        self.emit(event)


def _attempt(action: StartBuild) -> int:
    try:
        return int(action.parameters.get("BUILD_ATTEMPT") or 1)
    except (TypeError, ValueError):
        return 1
