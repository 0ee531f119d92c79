"""One build run by hand on the worker pool (``ccci-gate replay``), outside the gatekeeper.

:func:`run_once` submits one ``build:<job>[:<label>]`` job with the given parameters and
a fresh unique (the build id the worker uses), prints nothing itself: the worker's log
chunks go to ``on_log`` as they arrive, and its result is returned. The gatekeeper never
hears of it: no item, no report, no retry. A function no worker registers is refused at
once (gear.Server would queue it forever). Interrupted (Ctrl-C) or past its timeout, it
asks the worker that took the build to stop it (``stop:<worker>``), as the gatekeeper
does, so nothing keeps running unattended. When no worker has registered its function
for ``LOST_GRACE`` seconds (its worker died and gearmand queued it again), the build is
lost: the result is None (gearmand drops a queued job whose client left).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

import gear

from ..pki import TlsFiles
from . import protocol
from .client import admin, parse_status

log = logging.getLogger("ccci_gate.replay")

CONNECT_TIMEOUT = 10.0
WATCH = 2.0          # seconds between asks whether a worker still has the function
LOST_GRACE = 10.0    # seconds with none before the build counts as lost (a worker restarts)


class OneOffError(Exception):
    """The build could not be run (no server, no worker for its function)."""


class _Client(gear.Client):
    def __init__(self, on_log: Callable[[str], None], on_start: Callable[[str], None]):
        super().__init__(client_id="ccci-gate-replay")
        self.on_log = on_log
        self.on_start = on_start
        self.done = threading.Event()
        self.worker = ""

    def _onConnect(self, conn):  # noqa: N802 - gear's name
        protocol.set_nodelay(conn.conn)
        super()._onConnect(conn)

    def handleWorkData(self, packet):  # noqa: N802
        job = super().handleWorkData(packet)
        job.data.clear()   # a long log is printed as it comes, not kept
        message = protocol.decode(packet.getArgument(1, True))
        if "log" in message:
            self.on_log(str(message["log"]))
        elif "name" in message:
            self.worker = str(message["name"])
            self.on_start(self.worker)
        return job

    def handleWorkComplete(self, packet):  # noqa: N802
        job = super().handleWorkComplete(packet)
        self.done.set()
        return job

    def handleWorkFail(self, packet):  # noqa: N802
        job = super().handleWorkFail(packet)
        self.done.set()
        return job

    def handleWorkException(self, packet):  # noqa: N802
        job = super().handleWorkException(packet)
        self.done.set()
        return job

    def handleDisconnect(self, job):  # noqa: N802
        self.done.set()
        return job


def run_once(servers: list[tuple[str, int]], function: str, parameters: Mapping[str, str],
             unique: str, on_log: Callable[[str], None],
             on_start: Callable[[str], None] = lambda worker: None,
             tls: TlsFiles | None = None, timeout: float | None = None) -> str | None:
    """Run one build; its result (None: the worker failed or the connection was lost)."""
    client = _Client(on_log, on_start)
    try:
        for host, port in servers:
            client.addServer(host, port, **protocol.tls_options(tls))
        try:
            client.waitForServer(CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - gear raises a bare Exception on timeout
            raise OneOffError(f"no Gearman server answered within {CONNECT_TIMEOUT:.0f} s "
                              f"({exc})") from None
        where = ", ".join(f"{h}:{p}" for h, p in servers)
        registered = _registered(client, function)
        if registered is None:
            raise OneOffError(f"no Gearman server on {where} answered an admin request"
                              + ("" if tls else " (a pool on TLS? pass --tls-dir)"))
        if not registered:
            raise OneOffError(f"no worker registers {function} on {where}")
        job = gear.Job(function.encode(), protocol.encode_parameters(parameters),
                       unique=unique.encode())
        try:
            client.submitJob(job, timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - gear's errors share no base class
            hint = " (a pool on TLS lets only the gatekeeper's certificate submit)" if tls else ""
            raise OneOffError(f"submitting {function}: {exc}{hint}") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = _Watch(client, function)
        try:
            while not client.done.wait(0.2):
                if deadline is not None and time.monotonic() > deadline:
                    raise OneOffError(f"no result within {timeout:.0f} s")
                if watch.lost():
                    log.warning("no worker has registered %s for %.0f s: the build is lost",
                                function, LOST_GRACE)
                    return None   # leaving drops it from gearmand's queue (the test shows)
        except (KeyboardInterrupt, OneOffError):
            _stop(client, unique)   # never leave it running unattended
            raise
        if job.failure or job.exception or not job.complete:
            return None
        return _result_of(job)
    finally:
        client.shutdown()


class _Watch:
    """Whether the build is lost: no worker has registered its function for
    ``LOST_GRACE`` seconds (asked every ``WATCH`` seconds). gear.Server fails a build whose
    worker died (WORK_FAIL); gearmand puts it back in the queue, where it waits for a
    worker that may never come."""

    def __init__(self, client: gear.Client, function: str):
        self.client, self.function = client, function
        self.next = time.monotonic() + WATCH
        self.missing_since: float | None = None

    def lost(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + WATCH
        if _registered(self.client, self.function) is not False:
            self.missing_since = None   # a worker has it (or no server answered: wait)
            return False
        self.missing_since = self.missing_since or now
        return now - self.missing_since >= LOST_GRACE


def _stop(client: _Client, unique: str) -> None:
    """Ask the worker running the build to stop it (``stop:<worker>``), if one took it."""
    if not client.worker:
        return
    job = gear.Job(protocol.stop_function(client.worker).encode(),
                   protocol.encode({"build_id": unique}), unique=f"stop-{unique}".encode())
    try:
        client.submitJob(job, background=True, precedence=gear.PRECEDENCE_HIGH,
                         timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - gear's errors share no base class
        log.warning("could not ask %s to stop build %s: %r", client.worker, unique, exc)
    else:
        log.info("asked %s to stop build %s", client.worker, unique)


def _result_of(job: Any) -> str | None:
    """The result in WORK_COMPLETE's data (gear appends it to ``job.data``)."""
    for chunk in reversed(job.data or []):
        result = protocol.decode(chunk).get("result")
        if result:
            return str(result)
    return None


def _registered(client: gear.Client, function: str) -> bool | None:
    """Whether a worker has ``function``; None when no server answered."""
    answered = False
    for conn in list(client.active_connections):
        answer = admin(conn, gear.StatusAdminRequest())
        answered = answered or answer is not None
        for name, _total, _running, workers in parse_status(answer or b""):
            if name == function and workers > 0:
                return True
    return False if answered else None
