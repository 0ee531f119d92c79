"""The composition root: builds the gatekeeper's parts and wires them by constructor.

``Gatekeeper(settings)`` owns, in start order: the store, the Gearman server (embedded
unless external servers are given), the dispatcher, the merger, the engine and its
scheduler thread, the HTTP listener, the timer, the source drivers, and the local
worker. Nothing else reaches from one part into another.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from .autohold import api as autohold_api
from .autohold.service import Autohold
from .autohold.store import HoldStore
from .config.loader import LayoutError, load_layout
from .core.engine import Engine
from .core.events import ReconfigureRequest
from .core.layout import Layout
from .credentials import Signer
from .drivers.registry import build_connections
from .gearman.dispatcher import GearmanDispatcher
from .gearman.server import EmbeddedServer
from .buildparams import RecordingDispatcher
from .handoff import HANDOFF_GRACE, HandoffDispatcher, ResultHandoff
from .jobdefs import JobCatalog
from .logstore import LogStore
from .merger import GitMerger, GitSource, git_http_handler
from .retention import Janitor
from .scheduler import Scheduler
from .settings import Settings
from .store import Store
from .drivers.gitpush import BranchWatcher
from .drivers.timer import TimerDriver, TimerStore
from .web.api import GatekeeperAPI
from .web.artifacts import ArtifactStore
from .web.metrics import GateMetrics
from .web.pages import Pages
from .web.statsd import Statsd
from .web.logs import LogRoutes
from .web.routes import Router
from .web.server import ListenerError, WebServer
from .worker.daemon import WorkerDaemon

log = logging.getLogger("ccci_gate")

RESUME_WAIT = 30.0   # seconds a restarted gatekeeper waits for workers before resubmitting
STOP_PART = 5.0      # seconds each part gets to stop (the scheduler gets its own 10)


def read_admin_token(settings: Settings) -> str:
    """The admin API token, created (mode 0600) on first use."""
    path = settings.admin_token_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(24) + "\n")
    return path.read_text().strip()


class Gatekeeper:
    """The running gatekeeper: ``start()``, ``reconfigure()``, ``stop()``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        state = settings.state_dir
        for sub in ("logs", "git", "workspaces"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        self.log_dir = state / "logs"
        self.logs = LogStore(self.log_dir)
        self.layout: Layout = load_layout(settings.layout)
        self.store = Store(state / "ccci-gate.sqlite")
        self.admin_token = read_admin_token(settings)
        self.gearman_server: EmbeddedServer | None = None
        self.servers = list(settings.gearman)
        tls = settings.gearman_tls
        if settings.embedded_gearman:
            host, port = settings.gearman_listen
            if tls is None and host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("Gearman listens on %s:%s without TLS: anyone who can reach it can "
                            "take builds or submit jobs (see workers/README.md)", host, port)
            try:
                self.gearman_server = EmbeddedServer(host, port, tls=tls)
            except Exception as exc:  # gear raises a bare Exception("Could not open socket")
                raise ListenerError(f"embedded Gearman server on {host}:{port}: {exc}") from None
            self.servers = [(host if host not in ("0.0.0.0", "") else "127.0.0.1",
                             self.gearman_server.port)]
        self.router = Router()
        try:
            self.web = WebServer(self.router, *settings.listen)
        except ListenerError:
            if self.gearman_server is not None:
                self.gearman_server.shutdown()
            raise
        web_url = settings.public_url.rstrip("/") or self.web.url
        self.web_url = web_url
        self.engine, self.restored = self._restore(f"{web_url}/git", web_url)
        self.scheduler_ref: Scheduler | None = None
        self.metrics = GateMetrics(Statsd(*settings.statsd) if settings.statsd else None)
        self.dispatcher = GearmanDispatcher(self.servers, self._emit, self.log_dir, tls=tls,
                                            grace=settings.gearman_grace, logs=self.logs,
                                            on_taken=self.metrics.taken)
        self.recorder = RecordingDispatcher(self.dispatcher, self.store)
        self.merger = GitMerger(state / "git", settings.source_url, self._emit,
                                f"{web_url}/git")
        self.connections = build_connections(settings.connections, self._emit, state)
        self.reporters = {**self.connections.reporters, "log": _LogReporter()}
        self._unconfigured_said: set[str] = set()
        _quiet_per_report_warnings()
        signer = Signer(self.admin_token)   # build credentials (credentials.py)
        self.autohold = Autohold(HoldStore(state / "autohold.sqlite"), web_url,
                                 lambda: self.scheduler.snapshot.layout)
        self.handoff = ResultHandoff(signer, web_url, self._emit, self.autohold.take)
        self.artifacts = ArtifactStore(state / "artifacts", signer)
        self.jobdefs = JobCatalog(state / "jobdefs", settings.jobs_dir, web_url)
        self.jobdefs.publish(self.layout)
        self.scheduler = Scheduler(
            self.engine, self.merger,
            HandoffDispatcher(self.recorder, self.handoff,
                              (self.artifacts.parameters, self.jobdefs.parameters,
                               self.autohold.parameters)),
            self.store,
            reporters=self.reporters,
            sources={"git": GitSource(self.merger, self._emit), **self.connections.sources},
            source_for=lambda project: self._connection_of(project), observer=self.metrics)
        self.timer = TimerDriver(lambda: self.scheduler.snapshot.layout, self.scheduler.put,
                                 store=TimerStore(state / "timer.sqlite"))   # Persistent
        self.watcher = BranchWatcher(self._git_projects, settings.source_url, self.scheduler.put,
                                     interval=settings.git_poll_interval)
        self.api = GatekeeperAPI(
            self.scheduler, self.store, self.log_dir, self.admin_token,
            reconfigure=self.reconfigure, pool=self.dispatcher.pool,
            change_ref=lambda project, n: settings.change_ref.format(change=n, project=project),
            resolve_change=self._resolve_change,
            notify_push=self._pushed, web_url=web_url,
            logs=LogRoutes(self.logs, self.store, lambda: self.scheduler.snapshot.layout.jobs,
                           web_url),
            disk=lambda: self.janitor.disk)
        self.janitor = Janitor(settings.retention, self.logs, self.store, state / "artifacts", {
            "logs": lambda: self.log_dir, "artifacts": lambda: state / "artifacts",
            "git": lambda: state / "git",
            "state_db": lambda: [Path(f"{self.store.path}{x}") for x in ("", "-wal", "-shm")],
            "warm_root": _local_warm_root})
        self.api.register(self.router)
        self._watch_metrics()
        self.artifacts.register(self.router)
        self.jobdefs.register(self.router)
        self.pages = Pages(self.api)
        self.pages.register(self.router)
        autohold_api.register(self.router, self.autohold, self.api.admin)
        self.router.add("GET", "/git/", git_http_handler(state / "git"))
        self.router.add("POST", "/git/", git_http_handler(state / "git"))
        self.connections.register_routes(self.router)
        self.handoff.register(self.router)
        self.worker: WorkerDaemon | None = None
        if settings.worker_enabled:
            self.worker = WorkerDaemon(
                self.servers, settings.worker_name or "local", self.layout.jobs,
                settings.worker_labels, state / "workspaces", settings.jobs_dir,
                max_builds=settings.worker_max_builds, tls=tls)
        self._threads: list[threading.Thread] = []

    def _watch_metrics(self) -> None:
        """``GET /metrics`` (``web/metrics.py``): levels read from the snapshots the
        status API reads, the connections' outboxes and this host's warm root, which are
        also what the API's open alerts (``alerts.py``) are computed from."""
        from .alerts import Alerts
        from .drivers.outbox import OutboxStore
        from .swarm.warm import default_root
        self.metrics.known(self.scheduler.snapshot.items)
        outboxes = {name: conn.store for name, conn in self.connections.items.items()
                    if isinstance(conn.store, OutboxStore)}
        self.api.alerts = Alerts(self.scheduler.status, self.api.pool_status,
                                 lambda: outboxes, default_root())
        self.metrics.watch(self.scheduler.status, self.scheduler.events.qsize, self.api.alerts)
        self.metrics.register(self.router)

    def _restore(self, zuul_url: str, web_url: str) -> tuple[Engine, bool]:
        """The engine the previous incarnation saved (a fresh one on first start)."""
        record = self.store.load_record()
        if record is not None:
            try:
                engine = Engine.from_record(self.layout, record, zuul_url=zuul_url,
                                            web_url=web_url)
                log.info("restoring %d items from %s", len(engine.index.items), self.store.path)
                return engine, True
            except Exception:
                log.exception("the saved state cannot be restored; starting with empty queues")
        closed = self.store.close_unrestored((), "the gatekeeper restarted and could not restore it")
        if closed:
            log.warning("%d open items in the store could not be restored", closed)
        return Engine(self.layout, zuul_url=zuul_url, web_url=web_url), False

    def _resume(self) -> None:
        self.scheduler.resume(wait=self._wait_for_workers)

    def _wait_for_workers(self, functions: set[str], timeout: float = RESUME_WAIT) -> None:
        """Before resubmitting the builds of the previous incarnation: give workers up to
        ``timeout`` seconds to (re-)register ``functions``, and at least
        ``HANDOFF_GRACE`` to hand over the results of builds that ended meanwhile."""
        start = time.monotonic()
        missing = functions
        while time.monotonic() - start < timeout:
            known: dict[str, int] = {}
            for server in self.servers:
                for name, count in registered_workers(server, self.settings.gearman_tls).items():
                    known[name] = known.get(name, 0) + count
            missing = {f for f in functions if known.get(f, 0) < 1}
            if not missing and time.monotonic() - start >= HANDOFF_GRACE:
                return
            time.sleep(0.2)
        if missing:
            log.warning("resuming without a worker for %s", ", ".join(sorted(missing)))

    def _emit(self, event: Any) -> None:
        self.scheduler.put(event)

    def _connection_of(self, project: str) -> str | None:
        proj = self.scheduler.snapshot.layout.projects.get(project)
        if proj is not None and proj.connection:
            return proj.connection
        return next(iter(self.connections.sources), "git")

    def _resolve_change(self, project: str, number: int, patchset: str | None) -> Any:
        """What the project's connection says ``--change number`` is (None: its ref is
        the settings' ``change-ref`` pattern)."""
        conn = self.connections.items.get(self._connection_of(project) or "")
        return conn.resolve_change(project, number, patchset) if conn is not None else None

    def _git_projects(self) -> list[str]:
        """Projects of the running layout that the plain git source serves."""
        return [p for p in self.scheduler.snapshot.layout.projects
                if self._connection_of(p) == "git"]

    def _pushed(self, project: str) -> bool:
        if project not in self._git_projects():
            return False
        self.watcher.poke(project)
        return True

    def start(self) -> None:
        self.scheduler.start(resume=self._resume if self.restored else None)
        self.web.start()
        self.janitor.start()
        self.timer.start()
        self.watcher.start()
        self.connections.start()
        self.autohold.start()
        if self.worker is not None:
            thread = threading.Thread(target=self.worker.run_forever, name="local-worker",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("gatekeeper up: web %s, gearman %s, %d pipelines", self.web_url,
                 ", ".join(f"{h}:{p}" for h, p in self.servers), len(self.layout.pipelines))
        self._say_unconfigured_reporters(self.layout)

    def _say_unconfigured_reporters(self, layout: Layout) -> None:
        """Warn once per reporter a pipeline names that no connection provides (at start,
        and at a reconfigure that names a new one), instead of once per report."""
        missing: dict[str, list[str]] = {}
        for name, pipeline in layout.pipelines.items():
            for driver in {d for phase in pipeline.reporters.values() for d in phase}:
                if driver not in self.reporters:
                    missing.setdefault(driver, []).append(name)
        for driver, pipelines in sorted(missing.items()):
            if driver not in self._unconfigured_said:
                self._unconfigured_said.add(driver)
                log.warning("pipelines %s report to %r, which is not configured: their results "
                            "are only logged", ", ".join(sorted(pipelines)), driver)

    def reconfigure(self) -> list[str]:
        """Reload layouts and jobs; on any error keep the running layout and return them."""
        try:
            layout = load_layout(self.settings.layout)
        except LayoutError as exc:
            log.error("reconfiguration rejected, the running layout stays:\n%s", exc)
            return str(exc).splitlines()
        self.layout = layout
        self.jobdefs.publish(layout)   # before any build of the new layout is dispatched
        self.scheduler.put(ReconfigureRequest(layout))
        self._say_unconfigured_reporters(layout)
        if self.worker is not None:
            self.worker.update_jobs(layout.jobs) if hasattr(self.worker, "update_jobs") else None
        log.info("reconfigured: %d pipelines, %d projects, %d jobs", len(layout.pipelines),
                 len(layout.projects), len(layout.jobs))
        return []

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: self.reconfigure())

    def stop(self) -> None:
        """Stop in order, each part given at most ``STOP_PART`` seconds (SIGTERM ends in a
        bounded time): first what feeds the scheduler, then the scheduler — it handles
        what is queued and saves the engine — then what it reports to."""
        self.pages.close()   # live logs end, so the listener's threads stop at once
        for part in (self.web, self.timer, self.watcher, self.worker, self.janitor):
            self._stop_part(part)
        self.scheduler.stop()
        for part in (self.connections, self.dispatcher, self.gearman_server, self.recorder,
                     self.autohold):
            self._stop_part(part)
        self.logs.drain(STOP_PART)
        if not self.scheduler.running:
            self.store.close()
        if self.metrics.statsd is not None:
            self.metrics.statsd.close()   # a late send on it is a lost datagram, no more

    @staticmethod
    def _stop_part(part: Any, seconds: float = 0.0) -> None:
        if part is None:
            return

        def stop() -> None:
            try:
                part.shutdown() if hasattr(part, "shutdown") else part.stop()
            except Exception:
                log.exception("stopping %r", part)
        thread = threading.Thread(target=stop, name=f"stop-{type(part).__name__}", daemon=True)
        thread.start()
        thread.join(seconds or STOP_PART)
        if thread.is_alive():
            log.warning("%s did not stop within %.0f s; leaving it", type(part).__name__,
                        seconds or STOP_PART)


def _local_warm_root() -> Path | None:
    """This host's warm root, when it has one (its disk use is in ``/status.json``)."""
    from .swarm.warm import default_root
    root = default_root()
    return root if root.is_dir() else None


class _NotConfiguredOnce(logging.Filter):
    """Drops the scheduler's per-report "reports to X, which is not configured" warning:
    the gatekeeper says it once per reporter (``_say_unconfigured_reporters``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "which is not configured" not in str(record.msg)


def _quiet_per_report_warnings() -> None:
    scheduler_log = logging.getLogger("ccci_gate.scheduler")
    if not any(isinstance(f, _NotConfiguredOnce) for f in scheduler_log.filters):
        scheduler_log.addFilter(_NotConfiguredOnce())


def registered_workers(server: tuple[str, int], tls: Any = None,
                       timeout: float = 2.0) -> dict[str, int]:
    """Workers per function on one Gearman server, asked over a connection of its own
    (the text admin protocol's ``status``; TLS with the gatekeeper's ``pki.TlsFiles``
    when the pool uses it), so no gear client's admin requests cross."""
    try:
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(socket.create_connection(server, timeout=timeout))
            if tls is not None:
                context = ssl.create_default_context(cafile=str(tls.ca))
                context.check_hostname = False
                context.load_cert_chain(str(tls.cert), str(tls.key))
                conn = stack.enter_context(context.wrap_socket(conn))
            conn.sendall(b"status\n")
            data = b""
            while not data.endswith(b".\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, ssl.SSLError):
        return {}
    out: dict[str, int] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[3].isdigit():
            out[parts[0]] = int(parts[3])
    return out


class _LogReporter:
    """The ``log`` reporter: results in the gatekeeper's log (always available)."""

    def report(self, action: Any) -> None:
        summary = action.summary
        jobs = ", ".join(f"{j['name']}={j['result']}" for j in summary.get("jobs", []))
        log.info("[%s] %s %s: %s (%s) %s", action.pipeline, action.phase,
                 summary.get("change", {}).get("id"), summary.get("result"), jobs,
                 summary.get("status_url", ""))
