"""The worker side of the protocol: take builds, report them, honour ``stop:<worker>``.

A background thread pulls jobs from Gearman: build jobs wait in a queue for
:meth:`GearmanWorker.get_build`; a stop job calls ``on_stop(build_id)`` at once and is
answered immediately.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

import gear

from ..pki import TlsFiles
from . import protocol

log = logging.getLogger("ccci_gate.gearman.worker")


class BuildRequest:
    """One build taken by this worker."""

    def __init__(self, job: gear.WorkerJob):
        self._job = job
        self.function: str = job.name
        self.job_name: str = protocol.job_of(self.function)
        self.parameters: dict[str, str] = {
            str(k): str(v) for k, v in protocol.decode(job.arguments).items()}
        unique = job.binary_unique
        self.build_id: str = (unique.decode("utf-8") if unique else
                              self.parameters.get("ZUUL_UUID", ""))
        self._lock = threading.Lock()
        self._done = False

    def started(self, worker_name: str, url: str = "") -> None:
        self._job.sendWorkData(protocol.started(worker_name, self.build_id, "ccci-gate", url))

    def log(self, text: str) -> None:
        if text:
            self._job.sendWorkData(protocol.log_chunk(text))

    def progress(self, numerator: int, denominator: int) -> None:
        self._job.sendWorkStatus(numerator, denominator)

    def complete(self, result: str, data: dict[str, Any] | None = None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._job.sendWorkComplete(protocol.completed(result, data))

    def fail(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._job.sendWorkFail()


class _Worker(gear.Worker):
    def _onConnect(self, conn):  # noqa: N802 - gear's name
        protocol.set_nodelay(conn.conn)
        super()._onConnect(conn)


class GearmanWorker:
    """Registers ``functions`` and ``stop:<name>``; hands out builds.

    Builds are grabbed only when a caller waits in :meth:`get_build`, so an idle worker
    elsewhere gets the next job rather than a busy one hoarding it. Stop jobs arrive on
    a second connection that always listens, so a running build can be stopped.
    """

    def __init__(self, servers: list[tuple[str, int]], name: str, functions: list[str],
                 on_stop: Callable[[str], None] = lambda build_id: None,
                 tls: TlsFiles | None = None):
        self.name = name
        self.on_stop = on_stop
        self._builds_conn = _Worker(client_id=name)
        self._stops_conn = _Worker(client_id=f"{name}-stop")
        for host, port in servers:
            self._builds_conn.addServer(host, port, **protocol.tls_options(tls))
            self._stops_conn.addServer(host, port, **protocol.tls_options(tls))
        for function in functions:
            self._builds_conn.registerFunction(function)
        self._stops_conn.registerFunction(protocol.stop_function(name))
        self._wants = threading.Semaphore(0)
        self._builds: "queue.Queue[BuildRequest | None]" = queue.Queue()
        self._running = True
        self._threads = [
            threading.Thread(target=self._pull_builds, name=f"builds-{name}", daemon=True),
            threading.Thread(target=self._pull_stops, name=f"stops-{name}", daemon=True)]
        for thread in self._threads:
            thread.start()

    def set_functions(self, functions: list[str]) -> None:
        """Replace the registered build functions (after a reconfiguration)."""
        self._builds_conn.setFunctions([gear.FunctionRecord(f.encode()) for f in functions])

    def wait_for_server(self, timeout: float | None = None) -> None:
        self._builds_conn.waitForServer(timeout)
        self._stops_conn.waitForServer(timeout)

    def get_build(self, timeout: float | None = None) -> BuildRequest | None:
        """The next build, or ``None`` after ``timeout`` seconds or at shutdown."""
        self._wants.release()
        try:
            return self._builds.get(timeout=timeout)
        except queue.Empty:
            return None

    def shutdown(self) -> None:
        self._running = False
        self._wants.release()
        self._builds_conn.shutdown()
        self._stops_conn.shutdown()
        self._builds.put(None)

    def _pull_builds(self) -> None:
        while self._running:
            self._wants.acquire()
            if not self._running:
                return
            try:
                job = self._builds_conn.getJob()
            except gear.InterruptedError:
                return
            except Exception:
                log.exception("getting a job failed")
                self._wants.release()
                continue
            try:
                self._builds.put(BuildRequest(job))
            except ValueError:
                log.error("refusing job %r: not a build function", job.name)
                job.sendWorkFail()
                self._wants.release()

    def _pull_stops(self) -> None:
        while self._running:
            try:
                job = self._stops_conn.getJob()
            except gear.InterruptedError:
                return
            except Exception:
                log.exception("getting a stop job failed")
                continue
            build_id = str(protocol.decode(job.arguments).get("build_id", ""))
            try:
                self.on_stop(build_id)
            except Exception:
                log.exception("stopping build %s failed", build_id)
            finally:
                job.sendWorkComplete(b"{}")
