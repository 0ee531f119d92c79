"""The worker daemon: take a build, fetch its ref, run its job kind, send the result.

Each build gets a fresh workspace checked out at ``ZUUL_REF``, fetched from
``ZUUL_URL/ZUUL_PROJECT`` over the network. The log streams to the gatekeeper in
batches (WORK_DATA) with secret parameter values redacted; a build past its timeout is
killed and reported TIMED_OUT; ``stop:<worker>`` aborts it. A workspace that cannot
be prepared is an infra failure: the build is handed back (WORK_FAIL) to be retried.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Mapping, Sequence

from ..core.layout import JobConfig
from ..gearman.worker import BuildRequest, GearmanWorker
from ..pki import TlsFiles
from .handoff import hand_over
from .kinds import BuildContext, get_kind
from .workspace import WorkspaceError, prepare_workspace

log = logging.getLogger("ccci_gate.worker")

SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY")
FLUSH_SECONDS = 0.2
FLUSH_BYTES = 4096


def functions_for(jobs: Mapping[str, JobConfig], labels: Sequence[str]) -> list[str]:
    """``build:<job>`` for unlabelled jobs, ``build:<job>:<label>`` for labels we have."""
    out = []
    for job in jobs.values():
        if job.label is None:
            out.append(job.function)
        elif job.label in labels:
            out.append(job.function)
    return sorted(out)


class LogStream:
    """Batches log text to the gatekeeper and redacts secret values."""

    def __init__(self, request: BuildRequest, secrets: Sequence[str]):
        self.request = request
        self.secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)
        self._buf: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def write(self, text: str) -> None:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        with self._lock:
            self._buf.append(text)
            self._size += len(text)
            due = self._size >= FLUSH_BYTES or time.monotonic() - self._last >= FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            text, self._buf, self._size = "".join(self._buf), [], 0
            self._last = time.monotonic()
        if text:
            self.request.log(text)


class WorkerDaemon:
    """Registers the jobs it can run and runs up to ``max_builds`` builds at once."""

    def __init__(self, servers: list[tuple[str, int]], name: str, jobs: Mapping[str, JobConfig],
                 labels: Sequence[str], workdir: Path, jobs_dir: Path, max_builds: int = 1,
                 tls: TlsFiles | None = None):
        self.name = name
        self.jobs = dict(jobs)
        self.labels = list(labels)
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir = Path(jobs_dir)
        self.max_builds = max_builds
        self._stops: dict[str, threading.Event] = {}
        self._running = True
        self.gearman = GearmanWorker(servers, name, functions_for(self.jobs, self.labels),
                                     on_stop=self.stop_build, tls=tls)

    def update_jobs(self, jobs: Mapping[str, JobConfig]) -> None:
        """New job definitions (reconfiguration); registers any new functions."""
        self.jobs = dict(jobs)
        self.gearman.set_functions(functions_for(self.jobs, self.labels))

    def run_forever(self) -> None:
        threads = [threading.Thread(target=self._loop, name=f"{self.name}-{i}", daemon=True)
                   for i in range(self.max_builds)]
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
                continue
            try:
                self.run_build(request)
            except Exception:
                if not self._running:
                    return  # shutting down: the server hands the build to another worker
                log.exception("build %s crashed the worker loop", request.build_id)
                try:
                    request.fail()
                except Exception:
                    log.exception("could not hand build %s back", request.build_id)

    def run_build(self, request: BuildRequest) -> None:
        params = request.parameters
        job = self.jobs.get(request.job_name)
        stop = threading.Event()
        self._stops[request.build_id] = stop
        stream = LogStream(request, [v for k, v in params.items()
                                     if any(w in k.upper() for w in SECRET_WORDS)])
        request.started(self.name)
        workspace = self.workdir / request.build_id
        try:
            if job is None:
                stream.write(f"worker {self.name} has no job {request.job_name!r}\n")
                result = "ERROR"
            else:
                timeout = int(params.get("CCCI_TIMEOUT") or job.timeout or 0)
                deadline = time.monotonic() + timeout if timeout else None
                stream.write(f"build {request.build_id} of {job.name} on {self.name}\n")
                try:
                    prepare_workspace(workspace, params, stream.write)
                except WorkspaceError as exc:
                    stream.write(f"cannot prepare the workspace: {exc}\n")
                    stream.flush()
                    request.fail()
                    return
                ctx = BuildContext(job, params, workspace, stream.write, request.progress,
                                   stop, deadline, self.jobs_dir)
                try:
                    result = get_kind(job.kind).run(ctx)
                except Exception:
                    stream.write(traceback.format_exc())
                    result = "ERROR"
                if stop.is_set() and result not in ("TIMED_OUT",):
                    result = "ABORTED"
            hand_over(params, request.build_id, result)   # also by HTTP (worker/handoff.py)
            stream.write(f"result: {result}\n")
            stream.flush()
            request.complete(result)
        finally:
            self._stops.pop(request.build_id, None)
            shutil.rmtree(workspace, ignore_errors=True)
