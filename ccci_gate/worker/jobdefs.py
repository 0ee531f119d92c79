"""The worker's side of ``ccci_gate/jobdefs.py``: the gatekeeper's job definitions,
fetched by digest and kept on this host.

- :meth:`Definitions.for_build` gives the job a build names (``CCCI_JOB_URL``) and the
  folder holding its scripts at their paths (the shell kind's jobs directory), fetched at
  most once per host: definitions, scripts and script folders are kept under
  ``<workdir>/.jobdefs/`` by digest (the worker's reaping removes only build workspaces).
- :meth:`Definitions.index` gives the jobs of the gatekeeper's running layout (what the
  worker registers).

Every byte fetched is checked against the digest it was asked by before it is kept or
used, and a definition whose script path is absolute or climbs out (``..``) is refused.
Any failure is a :class:`DefinitionError`: an infrastructure error (the build is
handed back and retried), never the change's fault.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import requests

from ..core.layout import JobConfig, safe_path
from ..core.records import job_from_record
from ..jobdefs import DIGEST, digest_of

log = logging.getLogger("ccci_gate.worker.jobdefs")

URL = re.compile(r"^(https?://.+)/jobs/([0-9a-f]{64})$")
TIMEOUT = 30.0


class DefinitionError(RuntimeError):
    """A job definition could not be fetched or is not acceptable; ``transient`` when
    asking again may help (the gatekeeper did not answer, or answered 5xx)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class Definitions:
    """The gatekeeper's job definitions as this host keeps them, under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("scripts", "trees"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def for_build(self, url: str) -> tuple[JobConfig, Path]:
        """The job at ``url`` (a build's ``CCCI_JOB_URL``) and its scripts' folder."""
        match = URL.match(url)
        if match is None:
            raise DefinitionError(f"not a job definition URL: {url[:200]!r}")
        base, digest = match.groups()
        record = self._record(base, digest)
        tree = self.root / "trees" / digest
        if not tree.is_dir():
            self._materialise(base, record["scripts"], tree)
        return self._job(record), tree

    def index(self, gatekeeper: str) -> dict[str, JobConfig]:
        """The jobs of the gatekeeper's running layout, by name (one this worker refuses
        is left out, and said)."""
        base = gatekeeper.rstrip("/")
        try:
            reply = requests.get(f"{base}/jobs.json", timeout=TIMEOUT)
            reply.raise_for_status()
            names = reply.json()["jobs"]
            assert isinstance(names, dict)
        except (requests.RequestException, ValueError, KeyError, AssertionError) as exc:
            raise DefinitionError(f"{base}/jobs.json: {exc}") from None
        jobs = {}
        for name, digest in names.items():
            if not isinstance(digest, str) or not DIGEST.match(digest):
                raise DefinitionError(f"{base}/jobs.json: job {name!r} has no digest")
            try:
                job = self._job(self._record(base, digest))
            except DefinitionError as exc:
                log.warning("not registering job %r: %s", name, exc)
                continue
            if job.name != name:
                raise DefinitionError(f"{base}/jobs.json: {name!r} names the definition "
                                      f"of {job.name!r}")
            jobs[name] = job
        return jobs

    # --- by digest -------------------------------------------------------------------

    def _record(self, base: str, digest: str) -> dict[str, Any]:
        data = self._blob(f"{base}/jobs/{digest}", self.root / f"{digest}.json", digest)
        try:
            record = json.loads(data)
            scripts = record["scripts"]
            assert isinstance(scripts, dict) and isinstance(record["job"], dict)
        except (ValueError, KeyError, AssertionError):
            raise DefinitionError(f"job definition {digest[:12]} is not one") from None
        for path, script in scripts.items():
            if not safe_path(path) or not isinstance(script, dict) \
                    or not DIGEST.match(str(script.get("sha256", ""))):
                raise DefinitionError(f"job definition {digest[:12]}: refused script path "
                                      f"{path[:100]!r}")
        run = record["job"].get("run")
        if run is not None and not safe_path(str(run)):
            raise DefinitionError(f"job definition {digest[:12]}: refused run path {run!r}")
        return record

    @staticmethod
    def _job(record: dict[str, Any]) -> JobConfig:
        try:
            return job_from_record(record["job"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DefinitionError(f"not a job definition: {exc}") from None

    def _materialise(self, base: str, scripts: dict[str, Any], tree: Path) -> None:
        """The scripts at their paths in ``tree``, made whole elsewhere and renamed in."""
        tmp = tree.with_name(f".{tree.name}.{os.getpid()}.{threading.get_ident()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for path, script in scripts.items():
            sha = script["sha256"]
            data = self._blob(f"{base}/jobs/scripts/{sha}", self.root / "scripts" / sha, sha)
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755 if script.get("executable") else 0o644)
        try:
            tmp.rename(tree)
        except OSError:   # another build made it meanwhile: same digest, same content
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _blob(url: str, path: Path, digest: str) -> bytes:
        """The bytes of ``digest``: kept ones, or fetched from ``url`` and kept."""
        if path.is_file():
            data = path.read_bytes()
            if digest_of(data) == digest:
                return data
        try:
            reply = requests.get(url, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise DefinitionError(f"fetching {url}: {exc}", transient=True) from None
        if reply.status_code != 200:
            raise DefinitionError(f"fetching {url}: the gatekeeper answered "
                                  f"{reply.status_code}", transient=reply.status_code >= 500)
        if digest_of(reply.content) != digest:
            raise DefinitionError(f"{url}: the content does not match its digest")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(reply.content)
        tmp.replace(path)
        return reply.content
