"""What ``/status.json`` adds to the scheduler's published status: how long each build
will take, and the compact form the status page asks for.

Vocabulary:

- **estimate** of a job for a project: the median duration, in seconds, of the job's
  last ``SAMPLES`` successful builds for that project in the store (``Store.durations``;
  Zuul keeps the last 10 too) — one recipe's install is not another's — else of its
  last ``SAMPLES`` for any project; None before its first success.
- **remaining** of a running build: its estimate less the time it has run, never below 0
  (a build over its estimate has 0 left, not a negative time).

:meth:`Estimates.annotate` adds both to every build of a ``/status.json`` document (a
copy: the published snapshot is never changed). Estimates are read from the store at
most every ``MAX_AGE`` seconds per job, so a page refreshed by many browsers costs a few
indexed reads, not one per request.

- **compact** (``/status.json?compact=1``): the JSON is not indented (the status page
  asks for it). Each item's place in its queue is a count and the one change directly
  ahead (``core/status.py``), so the document grows with the queue, not its square.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any, Callable, Mapping

from ..store import Store

SAMPLES = 10
MAX_AGE = 10.0


class Estimates:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time,
                 max_age: float = MAX_AGE):
        self.store = store
        self.clock = clock
        self.max_age = max_age
        # (job, project) -> (read at, estimate)
        self._cache: dict[tuple[str, str | None], tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    def of(self, job: str, project: str | None = None) -> float | None:
        """The estimate of ``job`` for ``project`` (seconds), or None when it never
        succeeded."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get((job, project))
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        durations = [d for d in self.store.durations(job, project, SAMPLES)
                     if d is not None and d >= 0]
        if durations:
            value: float | None = statistics.median(durations)
        else:
            value = self.of(job) if project is not None else None
        with self._lock:
            self._cache[(job, project)] = (now, value)
        return value

    def annotate(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """``status`` (``Engine.status()`` plain data) with ``estimate`` and ``remaining``
        on each build, and ``now`` (the clock they were computed at; ``time`` is when the
        snapshot was taken); copies what it changes."""
        now = self.clock()
        pipelines = []
        for pipeline in status.get("pipelines", []):
            queues = [{**q, "items": [self._item(i, now) for i in q["items"]]}
                      for q in pipeline["queues"]]
            pipelines.append({**pipeline, "queues": queues})
        return {**status, "pipelines": pipelines, "now": now}

    def _item(self, item: Mapping[str, Any], now: float) -> dict[str, Any]:
        project = (item.get("change") or {}).get("project")
        return {**item, "jobs": [self.build(j, now, project) for j in item["jobs"]]}

    def build(self, build: Mapping[str, Any], now: float,
              project: str | None = None) -> dict[str, Any]:
        """One build summary (of an item of ``project``) with its ``estimate`` and
        ``remaining``."""
        estimate = self.of(build["name"], project)
        remaining = None
        started = build.get("started_at")
        if estimate is not None and not build.get("result"):
            ran = now - started if started is not None else 0.0
            remaining = max(0.0, estimate - ran)
        return {**build, "estimate": estimate, "remaining": remaining}


def compact_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
