"""The scheduler: one thread that owns the engine, fed by a queue of frozen events.

Other threads (webhooks, the Gearman client, the merger, the timer, the admin API)
only call :meth:`Scheduler.put`. The scheduler thread applies each event to the pure
:class:`~ccci_gate.core.engine.Engine`, hands the resulting actions to the ports, and
writes what changed to the store once per batch. Tests call :meth:`run_until_idle`
instead of starting the thread.

No other thread reads the engine: the scheduler publishes a :class:`Snapshot` (the
layout and the status as plain data, never changed once published) that the HTTP API
and the timer read, at most ``PUBLISH_EVERY`` seconds after a change (building one
costs a summary of every item, so a busy scheduler does not make one per batch).
:meth:`Scheduler.sync` waits for what was put before to be handled and published.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .core import actions as act
from .core.engine import Delta, Engine
from .core.events import Event
from .core.layout import Layout
from .ports import Dispatcher, Merger, Reporter, Source
from .store import Store

log = logging.getLogger("ccci_gate.scheduler")

BATCH = 256
PUBLISH_EVERY = 0.1


@dataclass(frozen=True)
class Snapshot:
    """What other threads may know of the scheduler's state: the running layout and the
    status (``Engine.status()``: pipelines, queues, item summaries). Published whole and
    never changed afterwards; copy before modifying."""

    layout: Layout
    status: Mapping[str, Any]
    items: Mapping[str, Mapping[str, Any]]   # live item summaries by item id

    @classmethod
    def of(cls, engine: Engine) -> "Snapshot":
        status = engine.status()
        items = {i["item_id"]: i for p in status["pipelines"] for q in p["queues"]
                 for i in q["items"]}
        return cls(engine.layout, status, items)


@dataclass(frozen=True)
class _Call(Event):
    """Run ``fn(engine)`` on the scheduler thread; the answer goes to ``reply``."""

    fn: Callable[[Engine], Any]
    reply: "queue.Queue[Any]" = field(default_factory=lambda: queue.Queue(1))


@dataclass(frozen=True)
class _Ask(Event):
    """An operator's command whose answer (status, text) goes back to the asker."""

    event: Event
    reply: "queue.Queue[tuple[int, str]]" = field(default_factory=lambda: queue.Queue(1))


@dataclass(frozen=True)
class _Sync(Event):
    """Publish a snapshot once everything queued before this is handled."""

    done: threading.Event = field(default_factory=threading.Event)


class Observer:
    """What the scheduler tells a watcher (``web/metrics.py``), on the scheduler thread:
    each method must return at once and never raise. The defaults do nothing."""

    def handled(self, kind: str, seconds: float) -> None:
        """An event of class ``kind`` was handled (the engine's step and its actions)."""

    def changed(self, delta: Delta) -> None:
        """What a batch changed (``Engine.take_delta``), just before the store saves it."""


class Scheduler:
    """Owns the engine; executes its actions through the ports."""

    def __init__(self, engine: Engine, merger: Merger, dispatcher: Dispatcher,
                 store: Store | None = None, reporters: Mapping[str, Reporter] | None = None,
                 sources: Mapping[str, Source] | None = None,
                 source_for: Callable[[str], str | None] = lambda project: None,
                 observer: Observer | None = None):
        self.engine = engine
        self.observer = observer or Observer()
        self.merger = merger
        self.dispatcher = dispatcher
        self.store = store
        self.reporters: dict[str, Reporter] = dict(reporters or {})
        self.sources: dict[str, Source] = dict(sources or {})
        self.source_for = source_for
        self.events: "queue.Queue[Event | None]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.snapshot = Snapshot.of(engine)
        self._published = time.monotonic()
        self._stale = False     # handled events the snapshot does not show yet
        self._restored: set[str] = set()   # items of the previous incarnation (see resume)

    # --- input (any thread) -----------------------------------------------------------

    def put(self, event: Event) -> None:
        """Queue an event; safe from any thread."""
        self.events.put(event)

    def call(self, fn: Callable[[Engine], Any], timeout: float = 10.0) -> Any:
        """Run ``fn(engine)`` on the scheduler thread (or inline when no thread runs)."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn(self.engine)
        request = _Call(fn)
        self.put(request)
        ok, value = request.reply.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def ask(self, event: Event, timeout: float = 10.0) -> tuple[int, str]:
        """Handle an operator's command in turn and return the engine's answer
        (``(202, "...")``, ``(404, "...")``...). The asker waits on its own reply queue,
        never on anything the scheduler holds; 503 if the scheduler does not answer."""
        request = _Ask(event)
        self.put(request)
        if self._thread is None:
            self.run_until_idle()
        try:
            return request.reply.get(timeout=timeout)
        except queue.Empty:
            return 503, f"the scheduler did not answer within {timeout:.0f}s; try again"

    def status(self) -> dict[str, Any]:
        """The last published status (a copy the caller may change)."""
        return dict(self.snapshot.status)

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until every event put before this call is handled and its effect is in
        the published snapshot; False on timeout."""
        if self._thread is None:
            self.run_until_idle()
            self.publish()
            return True
        request = _Sync()
        self.put(request)
        return request.done.wait(timeout)

    def publish(self) -> None:
        """Publish a new snapshot (scheduler thread only)."""
        self.snapshot = Snapshot.of(self.engine)
        self._published = time.monotonic()
        self._stale = False

    # --- the loop ---------------------------------------------------------------------

    def run_until_idle(self) -> int:
        """Handle every queued event (not waiting for more); return how many."""
        count = 0
        while True:
            batch = self._take(block=False)
            if not batch:
                if self._stale:
                    self.publish()
                return count
            count += self._handle_batch(batch)

    def resume(self, wait: Callable[[set[str]], None] = lambda functions: None) -> int:
        """After a restart (an engine made by ``Engine.from_record``), first thing on the
        scheduler thread: ask again what the previous incarnation had under way
        (``Engine.resume``). If builds were running, ``wait(functions)`` first — workers
        register again, results are handed over HTTP (``handoff.py``) — and the events
        that arrived meanwhile are handled: a build they complete is not run again.
        Reports of restored items are sent once: a driver that has one on record for the
        item and phase is skipped. Returns how many items were restored."""
        self._restored = set(self.engine.index.items)
        under_way = self.engine.under_way()
        if self.store is not None:
            closed = self.store.close_unrestored(
                self._restored, "the gatekeeper restarted and could not restore it")
            if closed:
                log.warning("%d open items in the store could not be restored", closed)
        running = dict(self.engine.index.builds)
        if running:
            wait({item.buildset.graph.job(build.job).function
                  for item, build in running.values() if item.buildset is not None})
            self._drain()
        finished = len(set(running) - set(self.engine.index.builds))
        actions = self.engine.resume(under_way)
        starts = [a for a in actions if isinstance(a, act.StartBuild)]
        same = sum(1 for a in starts if a.build_id in running)
        self.execute(actions)
        self.persist()
        self.publish()
        log.info("restored %d items; of %d builds under way, %d finished meanwhile, %d "
                 "submitted again (%d under their own id)", len(self._restored), len(running),
                 finished, len(starts), same)
        return len(self._restored)

    def _drain(self) -> None:
        """Handle what is queued now (a stop request stays queued for the loop)."""
        batch = [e for e in self._take(block=False)]
        if batch and batch[-1] is None:
            self.events.put(None)
            batch = batch[:-1]
        if batch:
            self._handle_batch(batch)

    def start(self, resume: Callable[[], Any] | None = None) -> None:
        """Start the scheduler thread; ``resume`` (e.g. ``lambda: self.resume(...)``)
        runs on it first, while events put meanwhile wait their turn."""
        self._thread = threading.Thread(target=self._run, args=(resume,), name="scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Handle what is queued, save, and end the thread (waiting ``timeout`` at most)."""
        if self._thread is not None:
            self.events.put(None)
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                log.warning("the scheduler did not stop within %.0f s", timeout)
                return
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, resume: Callable[[], Any] | None = None) -> None:
        if resume is not None:
            try:
                resume()
            except Exception:
                log.exception("resuming after the restart failed")
        while True:
            wait = None
            if self._stale:
                wait = max(0.0, PUBLISH_EVERY - (time.monotonic() - self._published))
            batch = self._take(block=True, timeout=wait)
            if not batch:
                self.publish()   # quiet for a moment: show what changed
                continue
            if batch[-1] is None:
                self._handle_batch(batch[:-1])
                return
            self._handle_batch(batch)

    def _take(self, block: bool, timeout: float | None = None) -> list[Any]:
        batch: list[Any] = []
        try:
            batch.append(self.events.get(block=block, timeout=timeout))
            while len(batch) < BATCH and batch[-1] is not None:
                batch.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _handle_batch(self, batch: list[Any]) -> int:
        for event in batch:
            if event is None:
                continue
            started = time.perf_counter()
            kind = self._handle_one(event)
            if kind:
                self.observer.handled(kind, time.perf_counter() - started)
        self.persist()
        if self._stale and time.monotonic() - self._published >= PUBLISH_EVERY:
            self.publish()
        return len(batch)

    def _handle_one(self, event: Any) -> str:
        """Handle one event; returns its kind (its class name; an operator command's own
        class), or "" for the scheduler's internal requests (sync, call)."""
        if isinstance(event, _Sync):
            self.persist()
            self.publish()
            event.done.set()
            return ""
        if isinstance(event, _Call):
            try:
                event.reply.put((True, event.fn(self.engine)))
            except Exception as exc:  # the caller gets the error
                event.reply.put((False, exc))
            return ""
        if isinstance(event, _Ask):
            try:
                actions = self.engine.handle(event.event)
            except Exception as exc:  # noqa: BLE001 - the asker gets the error
                log.exception("command %r failed; state kept", event.event)
                event.reply.put((500, f"the command failed: {exc}"))
                return type(event.event).__name__
            event.reply.put(self.engine.take_answer() or (202, "accepted"))
            self.handled += 1
            self._stale = True
            self.execute(actions)
            return type(event.event).__name__
        try:
            actions = self.engine.handle(event)
        except Exception:
            log.exception("event %r failed; state kept", event)
            return type(event).__name__
        self.handled += 1
        self._stale = True
        self.execute(actions)
        return type(event).__name__

    # --- output -----------------------------------------------------------------------

    def execute(self, actions: list[act.Action]) -> None:
        for action in actions:
            try:
                self._execute(action)
            except Exception:
                log.exception("action %r failed", action)

    def _execute(self, action: act.Action) -> None:
        if isinstance(action, act.StartBuild):
            self.dispatcher.start(action)
        elif isinstance(action, act.CancelBuild):
            self.dispatcher.cancel(action)
        elif isinstance(action, act.PrepareRef):
            self.merger.prepare(action)
        elif isinstance(action, act.Report):
            self._report(action)
        elif isinstance(action, act.MergeChange):
            name = self.source_for(action.change.project)
            source = self.sources.get(name or "")
            if source is None:
                log.error("no source can merge %s", action.change.describe())
                return
            source.merge(action)
        else:
            log.error("unknown action %r", action)

    def _report(self, action: act.Report) -> None:
        log.info("%s %s %s: %s", action.pipeline, action.phase,
                 action.summary.get("change", {}).get("id"), action.summary.get("result"))
        for driver in action.reporters:
            reporter = self.reporters.get(driver)
            if reporter is None:
                log.warning("pipeline %s reports to %r, which is not configured",
                            action.pipeline, driver)
                continue
            if (action.item_id in self._restored and self.store is not None
                    and self.store.reported(action.item_id, action.phase, driver)):
                log.info("%s %s of %s was reported before the restart; not again",
                         driver, action.phase, action.item_id)
                continue
            reporter.report(action)
            if self.store is not None:
                self.store.record_report(action.item_id, action.phase, driver)

    def persist(self) -> None:
        """Save what the engine changed (one SQLite transaction), after the batch's
        actions were carried out: a restart resumes from the last batch saved."""
        if self.store is None and type(self.observer) is Observer:
            self.engine.forget_delta()
            return
        delta = self.engine.take_delta()
        if not delta:
            return
        try:
            self.observer.changed(delta)
        except Exception:  # noqa: BLE001 - a watcher's fault never stops the scheduler
            log.exception("the scheduler's observer failed")
        if self.store is not None:
            self.store.save_delta(delta)
