"""The gatekeeper's open alerts: one list that ``/status.json`` (``alerts``), the status
page, ``ccci-gate status`` and ``/metrics`` (``ccci_alerts_open{kind}``) all show.

An **alert** is a condition an operator must act on for work to move: ``kind`` (one of
:data:`KINDS`), ``severity`` (``warning``: work waits; ``critical``: work cannot finish
without someone), a one-line ``message``, and ``since`` (Unix time the condition began,
None when it is not known). Kinds:

- ``pipeline_paused``: a pipeline is paused (``ccci-gate pause``): its new items wait.
- ``no_worker``: builds wait for a build function (``build:<job>[:<label>]``) that no
  worker has registered: held by the dispatcher, or queued on a Gearman server.
- ``warm_broken``: a canonical of this host's warm root whose restore failed (its
  ``record.json`` says ``broken``; see doc/warm.md); ``since`` is when it was marked.
- ``outbox_stuck``: a connection's outbox has a write waiting longer than
  ``outbox_age`` seconds (the forge is down or refuses it); ``since`` is when it was
  queued.

:func:`open_alerts` computes them from plain data (pure); :class:`Alerts` feeds it from
what the HTTP API already reads — the scheduler's published status, the worker pool's
:class:`~ccci_gate.web.snapshot.Snapshot`, one short SQLite query per outbox, and the
warm root walked on a background thread at most every ``WARM_MAX_AGE`` seconds — so
reading the alerts never waits on the scheduler thread nor on a Gearman server.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .web.snapshot import Snapshot

KINDS = ("pipeline_paused", "no_worker", "warm_broken", "outbox_stuck")
OUTBOX_AGE = 600.0      # seconds a forge write may wait before it is an alert
WARM_MAX_AGE = 60.0     # seconds: the warm root is walked at most this often
POOL_MAX_AGE = 2.0      # seconds: the pool costs two admin round trips per Gearman server


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str
    message: str
    since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_alerts(status: Mapping[str, Any], pool: Mapping[str, Any],
                outboxes: Mapping[str, tuple[int, float | None]],
                broken: Iterable[Mapping[str, Any]], now: float,
                outbox_age: float = OUTBOX_AGE) -> list[Alert]:
    """The open alerts: ``status`` is ``Engine.status()`` data, ``pool`` the dispatcher's
    pool (``functions``, ``held_functions``), ``outboxes`` each connection's
    ``(pending, oldest queued_at)``, ``broken`` the warm canonicals' records marked
    broken."""
    out = [Alert("pipeline_paused", "warning",
                 f"pipeline {p['name']} is paused: its items wait")
           for p in status.get("pipelines", ()) if p.get("paused")]
    functions = pool.get("functions") or {}
    held = pool.get("held_functions") or {}
    for name in sorted(set(functions) | set(held)):
        if not name.startswith("build:") or (functions.get(name) or {}).get("workers", 0):
            continue
        waiting = held.get(name, 0) + (functions.get(name) or {}).get("queued", 0)
        if waiting:
            out.append(Alert("no_worker", "critical",
                             f"{name}: {waiting} build(s) wait, no worker registered"))
    for record in broken:
        why = record.get("why") or "its restore failed"
        out.append(Alert("warm_broken", "warning",
                         f"warm canonical of {record.get('recipe')} is broken ({why}): "
                         f"quick runs fall back to cold", record.get("time")))
    for name, (count, oldest) in sorted(outboxes.items()):
        if count and oldest is not None and now - oldest > outbox_age:
            out.append(Alert("outbox_stuck", "warning",
                             f"connection {name}: {count} write(s) wait in the outbox, the "
                             f"oldest for {int((now - oldest) // 60)} min", oldest))
    return out


def warm_levels(root: Path | None) -> dict[str, Any]:
    """Bytes under the warm root and the records of its broken canonicals; {} when the
    host has none."""
    if root is None or not root.is_dir():
        return {}
    from .swarm import warm
    broken = [r for r in (c.record() for c in warm.canonicals(root)) if r.get("status") == "broken"]
    return {"bytes": warm.disk_usage(root), "broken": broken}


class Alerts:
    """The open alerts of one gatekeeper, from the snapshots its HTTP API reads."""

    def __init__(self, status: Callable[[], Mapping[str, Any]],
                 pool: Snapshot[Mapping[str, Any]],
                 outboxes: Callable[[], Mapping[str, Any]] = lambda: {},
                 warm_root: Path | None = None, outbox_age: float = OUTBOX_AGE):
        self.status = status
        self.pool = pool
        self.outboxes = outboxes     # connection name -> OutboxStore (``backlog()``)
        self.outbox_age = outbox_age
        self.warm = Snapshot("warm", lambda: warm_levels(warm_root), wait=0.2)

    def pool_value(self) -> dict[str, Any]:
        """The pool as last taken ({} before the first answer)."""
        taken = self.pool.get(POOL_MAX_AGE)
        return dict(taken.value) if taken is not None else {}

    def warm_value(self) -> dict[str, Any]:
        """The warm root as last walked ({} before the first walk or without one)."""
        taken = self.warm.get(WARM_MAX_AGE)
        return taken.value if taken is not None else {}

    def backlogs(self) -> dict[str, tuple[int, float | None]]:
        return {name: store.backlog() for name, store in sorted(self.outboxes().items())}

    def current(self, status: Mapping[str, Any] | None = None,
                pool: Mapping[str, Any] | None = None) -> list[Alert]:
        """The open alerts; ``status`` and ``pool`` when the caller already took them
        (so one request waits on the pool's snapshot once at most)."""
        return open_alerts(self.status() if status is None else status,
                           self.pool_value() if pool is None else pool,
                           self.backlogs(), self.warm_value().get("broken", ()), time.time(),
                           self.outbox_age)
