"""The dispatcher: the gatekeeper's Gearman client (the ``Dispatcher`` port).

It submits builds, turns what workers send back into frozen events, writes the log
chunks workers stream into ``log_dir/<build-id>.log``, and cancels builds. Outcomes are
the same on gear.Server and gearmand: a worker lost mid-build gives WORK_FAIL on the
former (→ ``BuildCompleted(result=None)``, the scheduler retries with a new build id)
and a requeue to another worker on the latter (→ a second ``BuildStarted``).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import gear

from ..core.actions import CancelBuild, StartBuild
from ..core.events import BuildCompleted, BuildProgress, BuildStarted, Event
from ..pki import TlsFiles
from . import protocol

log = logging.getLogger("ccci_gate.dispatcher")

REGISTRY_TTL = 2.0


class _Client(gear.Client):
    """gear's client with TCP_NODELAY and callbacks into the dispatcher."""

    def __init__(self, owner: "GearmanDispatcher", client_id: str):
        super().__init__(client_id=client_id)
        self.owner = owner

    def _onConnect(self, conn):  # noqa: N802 - gear's names below too
        protocol.set_nodelay(conn.conn)
        super()._onConnect(conn)

    def handleWorkData(self, packet):
        job = super().handleWorkData(packet)
        self.owner._on_data(job, packet.getArgument(1, True))

    def handleWorkStatus(self, packet):
        job = super().handleWorkStatus(packet)
        self.owner._on_status(job)

    def handleWorkComplete(self, packet):
        job = super().handleWorkComplete(packet)
        self.owner._on_complete(job, packet.getArgument(1, True))

    def handleWorkFail(self, packet):
        job = super().handleWorkFail(packet)
        self.owner._on_lost(job, "WORK_FAIL: the worker failed or was lost")

    def handleWorkException(self, packet):
        job = super().handleWorkException(packet)
        self.owner._on_lost(job, f"WORK_EXCEPTION: {job.exception!r}")

    def handleDisconnect(self, job):
        self.owner._on_lost(job, "lost the connection to the Gearman server")
        return job


class GearmanDispatcher:
    """Runs builds on Gearman workers and reports back through ``emit``."""

    def __init__(self, servers: list[tuple[str, int]], emit: Callable[[Event], None],
                 log_dir: Path, client_id: str = "ccci-gate", connect_timeout: float = 10.0,
                 tls: TlsFiles | None = None):
        self.emit = emit
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.client = _Client(self, client_id)
        for host, port in servers:
            self.client.addServer(host, port, **protocol.tls_options(tls))
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._jobs: dict[str, gear.Job] = {}
        self._registry: dict[str, int] = {}
        self._registry_at = 0.0

    # --- the port -----------------------------------------------------------------------

    def start(self, action: StartBuild) -> None:
        if not self._registered(action.function):
            self.emit(BuildCompleted(action.build_id, None, not_registered=True,
                                     message=f"no worker registered for {action.function}"))
            return
        job = gear.Job(action.function.encode(), protocol.encode_parameters(action.parameters),
                       unique=action.build_id.encode())
        job.build_id = action.build_id
        job.worker_name = ""
        job.finished = False
        with self._lock:
            self._jobs[action.build_id] = job
        try:
            self.client.submitJob(job, precedence=protocol.PRECEDENCE[action.precedence],
                                  timeout=self.connect_timeout)
        except gear.GearmanError as exc:
            self._on_lost(job, f"could not submit: {exc}")

    def cancel(self, action: CancelBuild) -> None:
        with self._lock:
            job = self._jobs.pop(action.build_id, None)
        if job is None or job.finished:
            return
        job.finished = True
        if not job.worker_name and job.handle and job.connection is not None:
            request = gear.CancelJobAdminRequest(job.handle)
            try:
                job.connection.sendAdminRequest(request, timeout=5)
                if request.response.startswith(b"OK"):
                    log.info("build %s removed from the Gearman queue", action.build_id)
                    return
            except Exception as exc:  # the server may not support it: stop it instead
                log.debug("cancel job failed: %s", exc)
        if job.worker_name:
            self._stop(job)
        else:
            # assigned between our look and the cancel: stop it once it says who runs it
            job.stop_when_started = True

    def pool(self) -> dict[str, Any]:
        """Functions (queued, running, workers) and workers, over every server."""
        functions: dict[str, dict[str, int]] = {}
        workers: list[dict[str, Any]] = []
        servers = []
        for conn in list(self.client.active_connections):
            servers.append(f"{conn.host}:{conn.port}")
            for name, total, running, count in self._status(conn):
                entry = functions.setdefault(name, {"queued": 0, "running": 0, "workers": 0})
                entry["queued"] += max(0, total - running)
                entry["running"] += running
                entry["workers"] += count
            workers += self._workers(conn)
        return {"servers": servers, "functions": functions, "workers": workers}

    def wait_for_server(self, timeout: float = 10.0) -> None:
        self.client.waitForServer(timeout)

    def shutdown(self) -> None:
        self.client.shutdown()

    # --- worker registry ----------------------------------------------------------------

    def _registered(self, function: str) -> bool:
        """At least one worker can run ``function`` (gear.Server lists count 0 too)."""
        now = time.monotonic()
        if now - self._registry_at > REGISTRY_TTL or self._registry.get(function, 0) < 1:
            if not self.client.active_connections:
                try:
                    self.client.waitForServer(self.connect_timeout)
                except Exception:
                    return True  # let the submit fail and be retried, not NOT_REGISTERED
            registry: dict[str, int] = {}
            for conn in list(self.client.active_connections):
                for name, _total, _running, count in self._status(conn):
                    registry[name] = registry.get(name, 0) + count
            self._registry, self._registry_at = registry, now
        return self._registry.get(function, 0) >= 1

    @staticmethod
    def _status(conn) -> list[tuple[str, int, int, int]]:
        request = gear.StatusAdminRequest()
        try:
            conn.sendAdminRequest(request, timeout=5)
        except Exception as exc:
            log.warning("status from %s failed: %s", conn, exc)
            return []
        out = []
        for line in request.response.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and parts[1].isdigit():
                out.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
        return out

    @staticmethod
    def _workers(conn) -> list[dict[str, Any]]:
        request = gear.WorkersAdminRequest()
        try:
            conn.sendAdminRequest(request, timeout=5)
        except Exception:
            return []
        out = []
        for line in request.response.decode("utf-8", "replace").splitlines():
            head, _, funcs = line.partition(" : ")
            parts = head.split()
            functions = funcs.split()
            if len(parts) >= 3 and functions:
                out.append({"name": parts[2], "address": parts[1], "functions": functions})
        return out

    # --- callbacks from gear's thread ---------------------------------------------------

    def _on_data(self, job: gear.Job, data: bytes) -> None:
        build_id = getattr(job, "build_id", None)
        if build_id is None:
            return
        message = protocol.decode(data)
        if "name" in message:
            job.worker_name = str(message.get("name") or "")
            if getattr(job, "stop_when_started", False):
                job.stop_when_started = False
                self._stop(job)
            if not job.finished:
                self.emit(BuildStarted(build_id, job.worker_name, str(message.get("url") or "")))
        elif "log" in message:
            with open(self.log_dir / f"{build_id}.log", "a", encoding="utf-8") as fh:
                fh.write(str(message["log"]))

    def _on_status(self, job: gear.Job) -> None:
        build_id = getattr(job, "build_id", None)
        if build_id is None or job.finished:
            return
        try:
            self.emit(BuildProgress(build_id, int(job.numerator), int(job.denominator)))
        except (TypeError, ValueError):
            pass

    def _on_complete(self, job: gear.Job, data: bytes) -> None:
        result = protocol.decode(data).get("result")
        if not isinstance(result, str) or not result:
            self._on_lost(job, "WORK_COMPLETE without a result")
            return
        self._finish(job, BuildCompleted(job.build_id, result))

    def _on_lost(self, job: gear.Job, why: str) -> None:
        if getattr(job, "build_id", None) is None:
            return
        self._finish(job, BuildCompleted(job.build_id, None, message=why))

    def _finish(self, job: gear.Job, event: BuildCompleted) -> None:
        with self._lock:
            known = self._jobs.pop(job.build_id, None) is job
        if not known or job.finished:
            return
        job.finished = True
        self.emit(event)

    def _stop(self, job: gear.Job) -> None:
        stop = gear.Job(protocol.stop_function(job.worker_name).encode(),
                        protocol.encode({"build_id": job.build_id}),
                        unique=f"stop-{job.build_id}".encode())
        try:
            self.client.submitJob(stop, background=True, precedence=gear.PRECEDENCE_HIGH,
                                  timeout=self.connect_timeout)
        except gear.GearmanError as exc:
            log.warning("could not stop build %s on %s: %s", job.build_id, job.worker_name, exc)
