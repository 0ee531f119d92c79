"""The worker daemon: take a build, fetch its ref, run its job kind, send the result.

Each build gets a fresh workspace checked out at ``ZUUL_REF``, fetched from
``ZUUL_URL/ZUUL_PROJECT`` over the network. The log streams to the gatekeeper in
batches (WORK_DATA) with secret parameter values redacted (``credentials.py``), at most ``FLUSH_SECONDS``
after a line is written; a build past its timeout is killed and reported TIMED_OUT;
``stop:<worker>`` aborts it, and so does losing the Gearman connection it came on (the
gatekeeper retries it). A workspace that cannot be prepared is an infra failure: the
build is handed back (WORK_FAIL) to be retried. A job kind's ``ERROR`` is an infra
error too: it is sent as ``{"result": "ERROR", "retry": true}`` and the gatekeeper
runs the build again, up to the job's attempts.

At start the daemon reaps what a dead predecessor left in its workdir (processes and
workspaces, ``worker.process``) and registers only the jobs this host can run: the
Swarm kinds (``recipe-install``, ``recipe-systest``, ``recipe-sweep``) need a Docker
Engine in an active swarm, and without one they are left out with the reason logged.

**Which job definition runs.** A build that carries the gatekeeper's definition
(``CCCI_JOB_URL``, ``ccci_gate/jobdefs.py``) runs that one, fetched once per host by
digest (``worker/jobdefs.py``): the gatekeeper's wins over a ``jobs/`` here, which only
runs builds that carry none (a gatekeeper of an older version). What the worker
registers comes from the gatekeeper's ``/jobs.json`` when it is given ``gatekeeper``
(polled every ``jobs_poll`` seconds, so a reconfigure that adds or relabels a job
reaches it), else from ``jobs``. Both are said once, at start.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..core.layout import WARM_KINDS, JobConfig
from ..credentials import redact, secret_values
from ..jobdefs import PARAMETER as JOB_URL
from ..gearman.protocol import RETRY
from ..gearman.worker import BuildRequest, GearmanWorker
from ..pki import TlsFiles
from .handoff import hand_over
from .jobdefs import DefinitionError, Definitions
from .kinds import BuildContext, get_kind
from .process import Instance, reap_leftovers
from .warmlabels import WarmLabels
from .workspace import WorkspaceError, prepare_workspace

log = logging.getLogger("ccci_gate.worker")

FLUSH_SECONDS = 0.2
JOBS_POLL = 10.0     # seconds between two reads of the gatekeeper's /jobs.json
DEFINITION_PATIENCE = 30.0   # seconds a build waits for an unanswering gatekeeper's definition
FLUSH_BYTES = 4096


SWARM_KINDS = ("recipe-install", "recipe-systest", "recipe-sweep")   # they deploy on Swarm


def swarm_problem() -> str | None:
    """Why this host cannot run Swarm jobs (``None``: a Docker Engine in an active swarm)."""
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                             capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return "no docker command on this host"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if out.returncode != 0:
        return f"the Docker Engine does not answer: {(out.stderr or out.stdout).strip()[:200]}"
    state = out.stdout.strip()
    return None if state == "active" else f"this Docker Engine is not in an active swarm ({state})"


def functions_for(jobs: Mapping[str, JobConfig], labels: Sequence[str],
                  without_kinds: Sequence[str] = ()) -> list[str]:
    """``build:<job>`` for unlabelled jobs, ``build:<job>:<label>`` for labels we have;
    none of the kinds in ``without_kinds``."""
    out = []
    for job in jobs.values():
        if job.kind in without_kinds:
            continue
        if job.label is None:
            out.append(job.function)
        elif job.label in labels:
            out.append(job.function)
    return sorted(out)


class LogStream:
    """Batches log text to the gatekeeper and redacts secret values."""

    def __init__(self, request: BuildRequest, secrets: Sequence[str]):
        self.request = request
        self.secrets = list(secrets)   # credentials.secret_values: longest first
        self._buf: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._last = time.monotonic()
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True,
                                        name=f"log-{request.build_id[:8]}")
        self._ticker.start()

    def _tick(self) -> None:
        """Flush what waits, so a line reaches the gatekeeper even if no next one comes."""
        while not self._closed.wait(FLUSH_SECONDS):
            if self._size:
                self.flush()

    def close(self) -> None:
        self._closed.set()
        self.flush()

    def write(self, text: str) -> None:
        text = redact(text, self.secrets)
        with self._lock:
            self._buf.append(text)
            self._size += len(text)
            due = self._size >= FLUSH_BYTES or time.monotonic() - self._last >= FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        with self._send_lock:   # the ticker and a writer never send out of order
            with self._lock:
                text, self._buf, self._size = "".join(self._buf), [], 0
                self._last = time.monotonic()
            if text:
                self.request.log(text)


class WorkerDaemon:
    """Registers the jobs it can run and runs up to ``max_builds`` builds at once."""

    def __init__(self, servers: list[tuple[str, int]], name: str, jobs: Mapping[str, JobConfig],
                 labels: Sequence[str], workdir: Path, jobs_dir: Path, max_builds: int = 1,
                 swarm: Callable[[], str | None] = swarm_problem,
                 tls: TlsFiles | None = None, gatekeeper: str | None = None,
                 jobs_poll: float = JOBS_POLL, warm_root: Path | None = None):
        self.name = name
        self.local_jobs = dict(jobs)
        self.jobs = dict(jobs)
        self.labels = list(labels)
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir = Path(jobs_dir)
        self.max_builds = max_builds
        self.gatekeeper = gatekeeper.rstrip("/") if gatekeeper else None
        self.jobs_poll = jobs_poll
        self._stops: dict[str, threading.Event] = {}
        self._running = True
        reap_leftovers(self.workdir)
        self.instance = Instance.of(self.workdir)
        self.definitions = Definitions(self.workdir / ".jobdefs")
        self._index_failing = False
        self._say_which_wins()
        if self.gatekeeper:
            self.jobs = self._gatekeepers_jobs() or self.jobs
        self._swarm = swarm
        self._swarm_problem: str | None = None
        self._swarm_checked = False
        self.warm = WarmLabels(warm_root)
        self.warm.look()
        self._functions_lock = threading.Lock()
        self.gearman = GearmanWorker(servers, name, self.functions(), on_stop=self.stop_build,
                                     tls=tls)

    def _say_which_wins(self) -> None:
        """Say once where this worker's job definitions come from."""
        if self.local_jobs:
            log.info("worker %s: a build's own definition from the gatekeeper (CCCI_JOB_URL) "
                     "wins over the %d jobs of %s here, which run only builds that carry "
                     "none%s", self.name, len(self.local_jobs), self.jobs_dir,
                     "" if self.gatekeeper else " and decide which jobs this worker registers")
        if self.gatekeeper:
            log.info("worker %s: registers the jobs of %s/jobs.json (checked every %g s)",
                     self.name, self.gatekeeper, self.jobs_poll)

    def _gatekeepers_jobs(self) -> dict[str, JobConfig] | None:
        """The gatekeeper's jobs, or None (said when it starts and stops failing)."""
        try:
            jobs = self.definitions.index(self.gatekeeper or "")
        except DefinitionError as exc:
            if not self._index_failing:
                log.warning("worker %s: cannot read the gatekeeper's jobs (%s); keeping "
                            "what is registered", self.name, exc)
            self._index_failing = True
            return None
        if self._index_failing:
            log.info("worker %s: reading the gatekeeper's jobs again", self.name)
        self._index_failing = False
        return jobs

    @property
    def swarm_problem(self) -> str | None:
        """Why this host cannot run Swarm jobs (asked once, when a Swarm job first shows)."""
        if not self._swarm_checked and any(j.kind in SWARM_KINDS for j in self.jobs.values()):
            self._swarm_problem, self._swarm_checked = self._swarm(), True
        return self._swarm_problem

    def functions(self) -> list[str]:
        """The functions to register; says why Swarm jobs are left out, if they are."""
        left_out = SWARM_KINDS if self.swarm_problem else ()
        skipped = sorted(j.function for j in self.jobs.values() if j.kind in left_out)
        if skipped:
            log.warning("worker %s does not register %s: %s", self.name, ", ".join(skipped),
                        self.swarm_problem)
        functions = functions_for(self.jobs, self.labels, left_out)
        return sorted(functions + self.warm.functions(self.jobs, functions))

    def update_jobs(self, jobs: Mapping[str, JobConfig]) -> None:
        """New job definitions (reconfiguration); registers any new functions. Without a
        gatekeeper to follow, they are this worker's own jobs too."""
        self.jobs = dict(jobs)
        if not self.gatekeeper:
            self.local_jobs = dict(jobs)
        with self._functions_lock:
            self.gearman.set_functions(self.functions())

    def refresh_warm(self) -> None:
        """Register the ``warm:<recipe>`` functions of the canonicals usable now."""
        with self._functions_lock:
            if self.warm.look():
                log.info("worker %s: usable canonicals now %s", self.name,
                         ", ".join(self.warm.recipes()) or "none")
                self.gearman.set_functions(self.functions())

    def warm_report(self) -> dict:
        """The canonicals of this host, for the gatekeeper (only from a worker that
        runs canonical-using jobs)."""
        base = functions_for(self.jobs, self.labels, SWARM_KINDS if self.swarm_problem else ())
        if not any(j.kind in WARM_KINDS and j.function in base for j in self.jobs.values()):
            return {}
        return self.warm.report()

    def _poll_jobs(self) -> None:
        """Follow the gatekeeper's jobs: register what a reconfigure added or relabelled."""
        while self._running:
            time.sleep(self.jobs_poll)
            jobs = self._gatekeepers_jobs() if self._running else None
            if jobs is not None and jobs != self.jobs:
                log.info("worker %s: the gatekeeper's jobs changed; now %d", self.name,
                         len(jobs))
                self.update_jobs(jobs)

    def run_forever(self) -> None:
        threads = [threading.Thread(target=self._loop, name=f"{self.name}-{i}", daemon=True)
                   for i in range(self.max_builds)]
        if self.gatekeeper:
            threading.Thread(target=self._poll_jobs, name=f"{self.name}-jobs",
                             daemon=True).start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def shutdown(self) -> None:
        self._running = False
        for stop in list(self._stops.values()):
            stop.set()
        self.gearman.shutdown()

    def stop_build(self, build_id: str) -> None:
        stop = self._stops.get(build_id)
        if stop is not None:
            log.info("stopping build %s", build_id)
            stop.set()

    def _loop(self) -> None:
        while self._running:
            request = self.gearman.get_build(timeout=1.0)
            if request is None:
                if self.warm.due():
                    self.refresh_warm()
                continue
            try:
                self.run_build(request)
                self.refresh_warm()
            except Exception:
                if not self._running:
                    return  # shutting down: the server hands the build to another worker
                log.exception("build %s crashed the worker loop", request.build_id)
                try:
                    request.fail()
                except Exception:
                    log.exception("could not hand build %s back", request.build_id)

    def _definition(self, url: str, stop: threading.Event,
                    say: Callable[[str], None]) -> tuple[JobConfig, Path]:
        """The build's job definition; asked again every second for up to
        ``DEFINITION_PATIENCE`` while the gatekeeper does not answer (it may be restarting)."""
        deadline = time.monotonic() + DEFINITION_PATIENCE
        said = False
        while True:
            try:
                return self.definitions.for_build(url)
            except DefinitionError as exc:
                if not exc.transient or stop.is_set() or time.monotonic() >= deadline:
                    raise
                if not said:
                    say(f"the gatekeeper did not give the job's definition ({exc}); asking "
                        f"again every second for up to {DEFINITION_PATIENCE:.0f} s\n")
                    said = True
                stop.wait(1.0)

    def run_build(self, request: BuildRequest) -> None:
        params = request.parameters
        job, jobs_dir = self.local_jobs.get(request.job_name), self.jobs_dir
        stop = threading.Event()
        self._stops[request.build_id] = stop
        if request.lost:
            stop.set()
        self.instance.claim(request.build_id)
        stream = LogStream(request, secret_values(params))
        request.started(self.name, extra=self.warm_report())
        workspace = self.workdir / request.build_id
        message = ""
        report: dict = {}   # what the kind hands back beside its result (autohold)
        try:
            if params.get(JOB_URL):
                try:
                    job, jobs_dir = self._definition(params[JOB_URL], stop, stream.write)
                except DefinitionError as exc:
                    stream.write(f"cannot get the job's definition from the gatekeeper: {exc}\n")
                    stream.close()
                    request.fail()
                    return
            if job is None:
                stream.write(f"worker {self.name} has no job {request.job_name!r}\n")
                result = "ERROR"
            else:
                timeout = int(params.get("CCCI_TIMEOUT") or job.timeout or 0)
                deadline = time.monotonic() + timeout if timeout else None
                where = (f"the gatekeeper's definition {params[JOB_URL].rsplit('/', 1)[-1][:12]}"
                         if params.get(JOB_URL) else f"{self.jobs_dir} here")
                stream.write(f"build {request.build_id} of {job.name} on {self.name} "
                             f"({where})\n")
                try:
                    prepare_workspace(workspace, params, stream.write)
                except WorkspaceError as exc:
                    stream.write(f"cannot prepare the workspace: {exc}\n")
                    stream.close()
                    request.fail()
                    return
                ctx = BuildContext(job, params, workspace, stream.write, request.progress,
                                   stop, deadline, jobs_dir, warm_root=self.warm.root,
                                   report=report)
                try:
                    result = get_kind(job.kind).run(ctx)
                except Exception:
                    stream.write(traceback.format_exc())
                    result = "ERROR"
                if stop.is_set() and result not in ("TIMED_OUT",):
                    result = "ABORTED"
                message = ctx.message
            if "autohold" in report:
                report["autohold"]["worker"] = self.name
            # also by HTTP (handoff.py)
            hand_over(params, request.build_id, result, message, report)
            if result == "ERROR":
                stream.write("result: ERROR (an infrastructure error: the gatekeeper retries "
                             "the build)\n")
                stream.close()
                request.complete(result, {RETRY: True, "message": f"ERROR on {self.name}",
                                          **self.warm_report()})
            else:
                stream.write(f"result: {result}\n")
                stream.close()
                extra = {**report, **({"message": message} if message else {}),
                         **self.warm_report()}
                request.complete(result, extra or None)
        finally:
            stream.close()
            self._stops.pop(request.build_id, None)
            shutil.rmtree(workspace, ignore_errors=True)
            self.instance.release(request.build_id)
