"""The worker side of the protocol: take builds, report them, honour ``stop:<worker>``.

A background thread pulls jobs from Gearman: build jobs wait in a queue for
:meth:`GearmanWorker.get_build`; a stop job calls ``on_stop(build_id)`` at once and is
answered immediately. When the connection a build came on is lost, the gatekeeper
counts the build as lost and retries it: ``on_lost(build_id)`` is called so the worker
aborts it rather than run it beside its retry. Sending on a lost connection is a
logged no-op, never an exception (gear reconnects by itself).
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
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
        self.lost = False   # the connection it came on is gone: nobody hears it any more

    @property
    def connection(self) -> Any:
        return self._job.connection

    def _send(self, send: Callable[..., None], *args: Any) -> bool:
        if self.lost:
            return False
        try:
            send(*args)
            return True
        except Exception as exc:  # noqa: BLE001 - a dead socket, whatever gear raises
            self.lost = True
            log.info("build %s: the Gearman connection is gone (%s); the gatekeeper "
                     "retries it", self.build_id, exc)
            return False

    def started(self, worker_name: str, url: str = "",
                extra: dict[str, Any] | None = None) -> None:
        self._send(self._job.sendWorkData,
                   protocol.started(worker_name, self.build_id, "ccci-gate", url, extra))

    def log(self, text: str) -> None:
        if text:
            self._send(self._job.sendWorkData, protocol.log_chunk(text))

    def progress(self, numerator: int, denominator: int) -> None:
        self._send(self._job.sendWorkStatus, numerator, denominator)

    def complete(self, result: str, data: dict[str, Any] | None = None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._send(self._job.sendWorkComplete, protocol.completed(result, data))

    def fail(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._send(self._job.sendWorkFail)


class _Worker(gear.Worker):
    on_lost: Callable[[Any], None] = staticmethod(lambda conn: None)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.log.addFilter(protocol.QuietDisconnects())

    def _onConnect(self, conn):  # noqa: N802 - gear's name
        protocol.set_nodelay(conn.conn)
        super()._onConnect(conn)

    def _onActiveConnection(self, conn):  # noqa: N802
        try:
            super()._onActiveConnection(conn)
        except OSError as exc:  # the server went away again at once: already marked lost
            log.info("%s:%s went away again (%s); reconnecting", conn.host, conn.port, exc)

    def _lostConnection(self, conn):  # noqa: N802
        was_active = conn in self.active_connections
        super()._lostConnection(conn)
        if was_active:
            log.info("lost Gearman server %s:%s; reconnecting", conn.host, conn.port)
            self.on_lost(conn)

    def sendPacket(self, packet, connection):  # noqa: N802 - gear's, minus its traceback
        try:
            connection.sendPacket(packet)
        except Exception as exc:  # noqa: BLE001
            log.info("sending to %s:%s failed (%s); reconnecting", connection.host,
                     connection.port, exc)
            self._lostConnection(connection)
            raise


class GearmanWorker:
    """Registers ``functions`` and ``stop:<name>``; hands out builds.

    Builds are grabbed only when a caller waits in :meth:`get_build`, so an idle worker
    elsewhere gets the next job rather than a busy one hoarding it. Stop jobs arrive on
    a second connection that always listens, so a running build can be stopped.
    """

    def __init__(self, servers: list[tuple[str, int]], name: str, functions: list[str],
                 on_stop: Callable[[str], None] = lambda build_id: None,
                 on_lost: Callable[[str], None] | None = None,
                 tls: TlsFiles | None = None):
        self.name = name
        self.on_stop = on_stop
        self.on_lost = on_lost or on_stop
        self._taken: "weakref.WeakSet[BuildRequest]" = weakref.WeakSet()
        self._builds_conn = _Worker(client_id=name)
        self._builds_conn.on_lost = self._connection_lost
        self._stops_conn = _Worker(client_id=f"{name}-stop")
        for host, port in servers:
            self._builds_conn.addServer(host, port, **protocol.tls_options(tls))
            self._stops_conn.addServer(host, port, **protocol.tls_options(tls))
        for function in functions:
            self._builds_conn.registerFunction(function)
        self._stops_conn.registerFunction(protocol.stop_function(name))
        self._cond = threading.Condition()
        self._waiters = 0
        self._ready: list[BuildRequest] = []
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
        """The next build, or ``None`` after ``timeout`` seconds or at shutdown.

        Jobs are grabbed only while a caller waits here (never more than there are
        waiting callers), so a busy worker does not hoard builds an idle one could run.
        """
        with self._cond:
            self._waiters += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._ready or not self._running, timeout)
                return self._ready.pop(0) if self._ready else None
            finally:
                self._waiters -= 1

    def shutdown(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._builds_conn.shutdown()
        self._stops_conn.shutdown()

    def _pull_builds(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: not self._running
                                    or self._waiters > len(self._ready))
                if not self._running:
                    return
            try:
                job = self._builds_conn.getJob()
            except gear.InterruptedError:
                return
            except Exception:
                log.exception("getting a job failed")
                time.sleep(0.5)
                continue
            try:
                request = BuildRequest(job)
            except ValueError:
                log.error("refusing job %r: not a build function", job.name)
                try:
                    job.sendWorkFail()
                except Exception:  # noqa: BLE001
                    pass
                continue
            self._taken.add(request)
            with self._cond:
                self._ready.append(request)
                self._cond.notify_all()

    def _connection_lost(self, conn: Any) -> None:
        """Every build that came on ``conn`` is lost for the gatekeeper: abort it."""
        for request in list(self._taken):
            if request.connection is conn and not request._done and not request.lost:
                request.lost = True
                try:
                    self.on_lost(request.build_id)
                except Exception:
                    log.exception("aborting build %s failed", request.build_id)

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
                try:
                    job.sendWorkComplete(b"{}")
                except Exception:  # noqa: BLE001 - a lost connection; gear reconnects
                    pass
