"""The timer driver: pipelines with a ``timer`` trigger fire on a cron schedule.

Each filter ``{time: "0 3 * * *"}`` (cron syntax, parsed by croniter) is a **trigger**: it
makes the pipeline enqueue every project that runs jobs in it, as a ref item on the
branches the filter names (``branch``, default ``main``), by emitting ``TimerFired`` for
that pipeline. A trigger is known by its pipeline, cron expression and branches
(:func:`trigger_key`); changing any of them makes a new trigger.

**Persistent**, like systemd's ``Persistent=true``: each trigger's **since** — the time
of its last firing, or when the gatekeeper first saw it — is kept in SQLite
(:class:`TimerStore`, ``<state>/timer.sqlite``). A trigger whose next time after its
since has passed fires at the next tick, once, however many of its times passed
(:func:`due`): so a firing missed while the gatekeeper was down runs once when it starts,
not once per missed time. A trigger seen for the first time fires first at its next
time, never at once.

The clock is injectable: :meth:`TimerDriver.tick` fires everything due up to ``now``,
so tests never sleep. The layout is read through a callable: the gatekeeper passes the
scheduler's published snapshot, never the engine's live state.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import voluptuous as v
from croniter import croniter

from ..config.schema import listify
from ..core.events import TimerFired
from ..core.layout import Layout
from ..core.model import Change
from ..core.triggers import TriggerFilter
from ..ports import Emit
from .base import Driver

log = logging.getLogger("ccci_gate.timer")

COUNT_MAX = 10_000   # missed times counted for the log, at most


def cron(value: object) -> str:
    if not isinstance(value, str) or len(value.split()) != 5 or not croniter.is_valid(value):
        raise v.Invalid(f"bad cron expression {value!r} (expected 5 fields, e.g. '0 3 * * *')")
    return value


FILTER = v.Schema({
    v.Required("time"): cron,
    v.Optional("branch", default=["main"]): listify(str),
})


def filters(value: list) -> tuple[TriggerFilter, ...]:
    """A timer filter enters ``TimerFired`` events; its schedule stays the driver's."""
    return tuple(TriggerFilter(events=(TimerFired,),
                               extra={"time": f["time"], "branches": tuple(f["branch"])})
                 for f in value)


DRIVER = Driver(name="timer", description="cron schedules (`time: '0 3 * * *'`)",
                trigger_schema=[FILTER], filters=filters)


@dataclass(frozen=True)
class Due:
    """What :func:`due` found: ``missed`` times in ``(since, now]`` (0: not due; counted
    up to ``COUNT_MAX``), the ``first`` and ``last`` of them."""

    missed: int
    first: float = 0.0
    last: float = 0.0


def due(cron_expr: str, since: float, now: float) -> Due:
    """The times of ``cron_expr`` in ``(since, now]`` (pure). A trigger fires once when
    there is at least one, whatever their number."""
    it = croniter(cron_expr, since)
    first = it.get_next(float)
    if first > now:
        return Due(0)
    last, missed = first, 1
    while missed < COUNT_MAX:
        following = it.get_next(float)
        if following > now:
            break
        last, missed = following, missed + 1
    return Due(missed, first, last)


def trigger_key(pipeline: str, cron_expr: str, branches: tuple[str, ...]) -> str:
    return f"{pipeline}\t{cron_expr}\t{' '.join(branches)}"


class TimerStore:
    """Each trigger's since, in SQLite; thread-safe, each call one short transaction."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS triggers (key TEXT PRIMARY KEY, "
                         "since REAL NOT NULL, fired REAL NOT NULL DEFAULT 0)")

    def load(self) -> dict[str, float]:
        with self._lock:
            return {k: s for k, s in self._db.execute("SELECT key, since FROM triggers")}

    def save(self, key: str, since: float, fired: bool) -> None:
        """Record ``since`` for ``key``; ``fired``: it is the time of a firing."""
        with self._lock:
            self._db.execute(
                "INSERT INTO triggers (key, since, fired) VALUES (?, ?, ?) ON CONFLICT(key) "
                "DO UPDATE SET since = excluded.since, fired = CASE WHEN excluded.fired > 0 "
                "THEN excluded.fired ELSE triggers.fired END",
                (key, since, since if fired else 0.0))

    def forget(self, keys: set[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM triggers WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class TimerDriver:
    """Emits ``TimerFired`` when a pipeline's cron time comes (see the module's
    docstring for Persistent). Without a ``store`` the sinces live in memory only."""

    def __init__(self, layout: Callable[[], Layout], emit: Emit,
                 clock: Callable[[], float] = time.time, store: TimerStore | None = None):
        self.layout = layout
        self.emit = emit
        self.clock = clock
        self.store = store
        self.started = clock()
        self._last_tick = self.started   # a trigger first seen now counts from here
        self._since: dict[str, float] = store.load() if store is not None else {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def schedules(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(pipeline, cron, branches)`` for every timer filter of the layout."""
        out = []
        for name, pipeline in self.layout().pipelines.items():
            for flt in pipeline.triggers.get(DRIVER.name, ()):
                out.append((name, str(flt.extra["time"]), tuple(flt.extra["branches"])))
        return out

    def since(self, key: str) -> float:
        """The trigger's since; a trigger seen for the first time counts from the last
        tick (recorded, so a restart does not make it due at once)."""
        if key not in self._since:
            self._since[key] = self._last_tick
            if self.store is not None:
                self.store.save(key, self._last_tick, fired=False)
        return self._since[key]

    def tick(self, now: float | None = None) -> int:
        """Fire, once each, every trigger with a time in ``(its since, now]``; return
        how many events."""
        now = self.clock() if now is None else now
        fired = 0
        layout = self.layout()
        keys = set()
        for pipeline, cron_expr, branches in self.schedules():
            key = trigger_key(pipeline, cron_expr, branches)
            keys.add(key)
            found = due(cron_expr, self.since(key), now)
            if not found.missed:
                continue
            for project in layout.projects.values():
                if pipeline not in project.pipelines:
                    continue
                for branch in branches:
                    change = Change(project.name, branch, f"refs/heads/{branch}")
                    self.emit(TimerFired(DRIVER.name, change, pipeline=pipeline, time=found.last))
                    fired += 1
            self._since[key] = now
            if self.store is not None:
                self.store.save(key, now, fired=True)
            if found.first < self.started:
                log.warning("timer %s (%s): %s%d time(s) passed while the gatekeeper was down "
                            "(%s to %s UTC); it runs once now", pipeline, cron_expr,
                            "more than " if found.missed >= COUNT_MAX else "", found.missed,
                            _utc(found.first), _utc(found.last))
            else:
                log.info("timer %s (%s) fired", pipeline, cron_expr)
        gone = set(self._since) - keys
        for key in gone:
            del self._since[key]
        if gone and self.store is not None:
            self.store.forget(gone)
        self._last_tick = now
        return fired

    def next_due(self) -> float | None:
        times = [croniter(c, self.since(trigger_key(p, c, b))).get_next(float)
                 for p, c, b in self.schedules()]
        return min(times) if times else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.store is not None:
            self.store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                due_at = self.next_due()
            except Exception:
                log.exception("timer: reading the schedules failed")
                due_at = None
            wait = 60.0 if due_at is None else max(0.0, min(60.0, due_at - self.clock()))
            if self._stop.wait(wait):
                return
            try:
                self.tick()
            except Exception:
                log.exception("timer tick failed")


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(when))
