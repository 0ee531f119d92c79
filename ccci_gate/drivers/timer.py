"""The timer driver: pipelines with a ``timer`` trigger fire on a cron schedule.

Each filter ``{time: "0 3 * * *"}`` (cron syntax, parsed by croniter) makes the pipeline
enqueue every project that runs jobs in it, as a ref item on the branches the filter
names (``branch``, default ``main``), by emitting ``TimerFired`` for that pipeline.
The clock is injectable: :meth:`TimerDriver.tick` fires everything due up to ``now``,
so tests never sleep. The layout is read through a callable: the gatekeeper passes the
scheduler's published snapshot, never the engine's live state.
"""
from __future__ import annotations

import logging
import threading
import time
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


class TimerDriver:
    """Emits ``TimerFired`` when a pipeline's cron time comes."""

    def __init__(self, layout: Callable[[], Layout], emit: Emit,
                 clock: Callable[[], float] = time.time):
        self.layout = layout
        self.emit = emit
        self.clock = clock
        self._last: float = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def schedules(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(pipeline, cron, branches)`` for every timer filter of the layout."""
        out = []
        for name, pipeline in self.layout().pipelines.items():
            for flt in pipeline.triggers.get(DRIVER.name, ()):
                out.append((name, str(flt.extra["time"]), tuple(flt.extra["branches"])))
        return out

    def tick(self, now: float | None = None) -> int:
        """Fire every schedule due in ``(last tick, now]``; return how many events."""
        now = self.clock() if now is None else now
        fired = 0
        layout = self.layout()
        for pipeline, cron, branches in self.schedules():
            due = croniter(cron, self._last).get_next(float)
            if due > now:
                continue
            for project in layout.projects.values():
                if pipeline not in project.pipelines:
                    continue
                for branch in branches:
                    change = Change(project.name, branch, f"refs/heads/{branch}")
                    self.emit(TimerFired(DRIVER.name, change, pipeline=pipeline, time=due))
                    fired += 1
            log.info("timer %s (%s) fired", pipeline, cron)
        self._last = now
        return fired

    def next_due(self) -> float | None:
        times = [croniter(cron, self._last).get_next(float) for _, cron, _ in self.schedules()]
        return min(times) if times else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.next_due()
            wait = 60.0 if due is None else max(0.0, min(60.0, due - self.clock()))
            if self._stop.wait(wait):
                return
            try:
                self.tick()
            except Exception:
                log.exception("timer tick failed")
