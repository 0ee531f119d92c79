"""Job definitions served by the gatekeeper, addressed by content digest.

A worker on another host must run the job the gatekeeper dispatched, not whatever its
own checkout's ``jobs/`` says (that goes stale at the first reconfigure). So the
gatekeeper publishes each job's definition and its script, and every build says which
definition it is.

Vocabulary:

- A **definition** is a job as the worker needs it: ``{"job": <core.records.job_record>,
  "scripts": {<run path>: {"sha256": ..., "executable": bool}}}`` (the values of secret
  parameters masked, ``credentials.redacted``: the build's own parameters carry them
  rendered, and definitions are served to anyone who asks), its ``run`` script
  named by content (the path is relative to the jobs directory, checked: never absolute,
  never ``..``). Its **digest** is the SHA-256 of its canonical JSON (sorted keys, no
  spaces): the bytes served are the bytes hashed.
- The **catalog** (:class:`JobCatalog`) is what the gatekeeper serves from
  ``state/jobdefs/`` (so a restarted gatekeeper still serves the definitions of builds
  queued before it stopped): ``GET /jobs.json`` the running layout's jobs by name and
  digest (workers register their functions from it), ``GET /jobs/<digest>`` a
  definition, ``GET /jobs/scripts/<sha256>`` a script. Everything but the index is
  immutable, so a worker caches it for good (``worker/jobdefs.py``).
- Each build carries ``CCCI_JOB_URL`` = ``<web>/jobs/<digest>`` of the definition of the
  job its buildset holds (``StartBuild.job``).

Why by URL and not inside the build's parameters: a worker must learn which functions
to register before any build reaches it, which the parameters cannot tell it, so it
needs the index over HTTP anyway; scripts are files that do not belong in an
environment-bound parameter map (the shell kind exports every parameter); and a digest
makes the fetch safe and cheap: the worker checks what it got against the digest that
came over the (TLS) Gearman connection, so plain HTTP cannot change what runs, and it
fetches each definition once per host however many builds use it.

Scripts are read at :meth:`JobCatalog.publish` (start and every reconfigure), so a build
runs the script the last reconfigure saw, on every host alike.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Mapping

from .core.actions import StartBuild
from .core.layout import JobConfig, Layout, safe_path
from .core.records import job_record
from .credentials import redacted
from .web.routes import Request, Response, Router

log = logging.getLogger("ccci_gate.jobdefs")

DIGEST = re.compile(r"^[0-9a-f]{64}$")
PARAMETER = "CCCI_JOB_URL"


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class JobCatalog:
    """The gatekeeper's job definitions: published at start and at each reconfigure,
    served over HTTP, named in each build's parameters."""

    def __init__(self, root: Path, jobs_dir: Path, web_url: str):
        self.root = root
        self.jobs_dir = Path(jobs_dir)
        self.web_url = web_url.rstrip("/")
        (root / "scripts").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._scripts: dict[str, dict[str, Any]] = {}   # run path -> {"sha256", "executable"}
        self._stored: set[str] = set()                  # digests written this run
        self._index: dict[str, str] = {}                # the running layout: name -> digest

    def publish(self, layout: Layout) -> dict[str, str]:
        """Read the scripts of ``layout``'s jobs and store every definition; the new index."""
        scripts = {run: self._read_script(run)
                   for run in sorted({job.run for job in layout.jobs.values() if job.run})}
        with self._lock:   # the scheduler thread's parameters() waits for no file read
            self._scripts.update(scripts)
            self._index = {name: self._store(job) for name, job in layout.jobs.items()}
            return dict(self._index)

    def parameters(self, action: StartBuild) -> Mapping[str, str]:
        """``CCCI_JOB_URL`` of the build's job (for ``HandoffDispatcher``)."""
        with self._lock:
            if action.job is not None:
                digest = self._store(action.job)
            else:   # a StartBuild made outside the engine: the running layout's job
                digest = self._index.get(str(action.parameters.get("JOB_NAME", "")), "")
        return {PARAMETER: f"{self.web_url}/jobs/{digest}"} if digest else {}

    def _read_script(self, run: str) -> dict[str, Any]:
        """The script at ``run`` (stored by content), or {} when it is not a file below
        the jobs directory (its builds then say so, as before)."""
        base = self.jobs_dir.resolve()
        path = (base / run).resolve()
        if not safe_path(run) or base not in path.parents or not path.is_file():
            log.warning("job script %r is not a file below %s: its builds will say so", run, base)
            return {}
        data = path.read_bytes()
        sha = digest_of(data)
        self._write(self.root / "scripts" / sha, data)
        return {"sha256": sha, "executable": os.access(path, os.X_OK)}

    def _store(self, job: JobConfig) -> str:
        script = self._scripts.get(job.run or "")
        scripts = {job.run: script} if job.run and script else {}
        record = job_record(job)   # served to anyone: secret parameter values masked (a
        record["parameters"] = redacted(record["parameters"])   # worker gets them rendered)
        data = canonical({"job": record, "scripts": scripts})
        digest = digest_of(data)
        if digest not in self._stored:
            self._write(self.root / f"{digest}.json", data)
            self._stored.add(digest)
        return digest

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists():
            return
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        tmp.replace(path)

    # --- HTTP ------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        router.add("GET", "/jobs.json", self.index)
        router.add("GET", "/jobs/", self.get)

    def index(self, request: Request) -> Response:
        with self._lock:
            jobs = dict(self._index)
        return Response.json({"jobs": jobs, "digest": digest_of(canonical(jobs))})

    def get(self, request: Request) -> Response:
        rest = request.path[len("/jobs/"):]
        scripts = rest.startswith("scripts/")
        name = rest[len("scripts/"):] if scripts else rest
        if not DIGEST.match(name):
            return Response.error(404, "expected /jobs/<digest> or /jobs/scripts/<sha256>")
        path = self.root / "scripts" / name if scripts else self.root / f"{name}.json"
        if not path.is_file():
            return Response.error(404, "no such job definition" if not scripts
                                  else "no such script")
        kind = "application/octet-stream" if scripts else "application/json"
        return Response(200, path.read_bytes(), {"Content-Type": kind,
                                                 "Cache-Control": "max-age=31536000, immutable"})
