"""The engine: the whole scheduling state machine, pure and steppable.

``Engine.handle(event)`` applies one frozen event to the state (the pipelines' managers
and their items) and returns the actions the outside world must carry out. The
scheduler thread (``ccci_gate.scheduler``) feeds it events and executes the actions;
tests can drive it directly with no I/O at all.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import events as ev
from .actions import Action
from .indexes import Indexes
from .layout import Layout, PipelineConfig
from .managers import Journal, ManagerContext, PipelineManager, make_manager
from .managers.base import MERGE_RETRIES, superseded_by
from .model import BuildState, Change, ChangeQueue, Item, ItemState, MergeState, Result
from .operator import OperatorCommands
from .records import (RECORD_VERSION, Changes, Record, item_from_record, item_record,
                      queue_skeleton)
from .status import item_summary
from .triggers import pipeline_accepts

MAX_PASSES = 1000


@dataclass
class Delta:
    """What changed since the last :meth:`Engine.take_delta`, as the store keeps it."""

    items: list[tuple[dict[str, Any], Record]] = field(default_factory=list)
    """(summary, record) of each live item that changed"""
    finished: list[dict[str, Any]] = field(default_factory=list)
    """summaries of the items that left their queue"""
    queues: list[tuple[str, str, Record | None]] = field(default_factory=list)
    """(queue id, pipeline, skeleton) of each queue touched; None: the queue is gone"""
    pipelines: dict[str, Record] = field(default_factory=dict)
    """``state_record`` of each pipeline touched"""
    runs: list[tuple[str, str, Record | None]] = field(default_factory=list)
    """(pipeline, change key as JSON, item record) of last runs; None: forgotten"""

    def __bool__(self) -> bool:
        return bool(self.items or self.finished or self.queues or self.pipelines or self.runs)


def run_key(key: tuple) -> str:
    return json.dumps(list(key))


class Engine(OperatorCommands):
    """Pipelines and their items; the only writer is the scheduler thread.

    The engine owns its indexes (:class:`~.indexes.Indexes`); managers see a read-only
    context and note what they touched in the journal the engine drains.
    """

    def __init__(self, layout: Layout, clock: Callable[[], float] = time.time,
                 zuul_url: str = "", web_url: str = ""):
        self.ctx = ManagerContext(clock, zuul_url, web_url)
        self.journal = Journal()
        self.index = Indexes()
        self.layout = layout
        self.managers: dict[str, PipelineManager] = {
            name: self._manager(cfg) for name, cfg in layout.pipelines.items()}
        self.log: list[str] = []
        self._all_touched = False   # pipelines' state the store has not seen (pause, reconfigure)

    def _manager(self, config: PipelineConfig) -> PipelineManager:
        return make_manager(config, self.layout, self.ctx, self.journal)

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    # --- the one entry point ------------------------------------------------------------

    def handle(self, event: ev.Event) -> list[Action]:
        """Apply ``event``; return what must be done, after walking every queue."""
        handler = self.HANDLERS.get(type(event))
        if handler is None:
            self.note(f"ignored event {type(event).__name__}")
            return []
        actions: list[Action] = handler(self, event)
        everything = isinstance(event, (ev.ReconfigureRequest, ev.PauseRequest))
        self._all_touched |= everything
        return actions + self.process(everything=everything)

    def process(self, everything: bool = False) -> list[Action]:
        """Walk the queues of every item touched since the last walk (or every queue)
        until nothing more happens."""
        actions: list[Action] = []
        for _ in range(MAX_PASSES):
            step: list[Action] = []
            touched = self.index.absorb(self.journal)
            if everything:
                for manager in self.managers.values():
                    step += manager.process()
                everything = False
            else:
                for pipeline, queue in touched.values():
                    manager = self.managers.get(pipeline)
                    if manager is not None:
                        step += manager.process_queue(queue)
            actions += step
            if not step and not self.journal:
                return actions
        raise RuntimeError("pipelines did not settle")  # pragma: no cover - a manager bug

    def note(self, text: str) -> None:
        self.log.append(text)
        del self.log[:-200]

    # --- triggers -----------------------------------------------------------------------

    def _on_trigger(self, event: ev.TriggerEvent) -> list[Action]:
        """Enqueue the event's change in every pipeline whose filters accept it."""
        actions: list[Action] = []
        for name, manager in self.managers.items():
            if pipeline_accepts(manager.config.triggers, event):
                actions += self.enqueue(name, event.change, quick=manager.config.quick)
        return actions

    def _on_patchset(self, event: ev.PatchsetCreated) -> list[Action]:
        return self.supersede(event.change) + self._on_trigger(event)

    def _on_change_closed(self, event: ev.ChangeClosed | ev.ChangeMerged) -> list[Action]:
        """A change closed or merged at its source leaves every pipeline without a
        verdict (its start reporters hear it ended; an item the gate is merging itself
        stays: its own merge notice races this)."""
        change = event.change
        what = "merged" if isinstance(event, ev.ChangeMerged) else "closed"
        actions = self.dequeue_everywhere(change.key, f"change {what} at its source",
                                          keep_merging=True)
        self.index.forget_runs(change.key)
        return actions + self._on_trigger(event)

    def _on_branch_moved(self, event: ev.BranchMoved) -> list[Action]:
        change = event.change
        return (self.branch_moved(change.project, change.branch, change.sha or "")
                + self._on_trigger(event))

    def _on_timer(self, event: ev.TimerFired) -> list[Action]:
        """A timer fires for one pipeline only."""
        manager = self.managers.get(event.pipeline)
        if manager is None or not pipeline_accepts(manager.config.triggers, event):
            return []
        return self.enqueue(event.pipeline, event.change, quick=manager.config.quick)

    def enqueue(self, pipeline: str, change: Change, quick: bool = False) -> list[Action]:
        item, actions, why = self.managers[pipeline].enqueue(change, quick)
        self.note(f"enqueued {change.describe()} in {pipeline}" if item else f"not enqueued: {why}")
        return actions

    def supersede(self, change: Change) -> list[Action]:
        """A new patchset: drop items of older patchsets of the same change."""
        actions: list[Action] = []
        for manager in self.managers.values():
            item = manager.find(change.key)
            if item is not None and (item.change.sha, item.change.patchset) != (change.sha, change.patchset):
                actions += manager.dequeue(item, superseded_by(change))
        return actions

    def dequeue_everywhere(self, key: tuple, reason: str, pipeline: str = "",
                           keep_merging: bool = False) -> list[Action]:
        """Dequeue the change from every pipeline (or one); ``keep_merging`` spares an
        item the gate is merging itself (the source's own merge notice races it)."""
        actions: list[Action] = []
        for name, manager in self.managers.items():
            if pipeline and name != pipeline:
                continue
            item = manager.find(key)
            if item is not None and keep_merging and item.merging:
                continue
            if item is not None:
                actions += manager.dequeue(item, reason)
        return actions

    # --- merger results ---------------------------------------------------------------

    def _item_for_buildset(self, buildset_id: str) -> Item | None:
        item = self.index.buildsets.get(buildset_id)
        if item is None or item.buildset is None or item.buildset.id != buildset_id:
            return None
        return item

    def _on_RefPrepared(self, event: ev.RefPrepared) -> list[Action]:
        item = self._item_for_buildset(event.buildset_id)
        if item is not None and item.buildset.merge_state is MergeState.PREPARING:
            item.buildset.ref, item.buildset.commit = event.ref, event.commit
            item.buildset.tip = event.tip
            item.buildset.steps = tuple(event.steps)
            item.buildset.merge_state = MergeState.READY
            self.journal.touch(item)
        return []

    def _on_MergeFailed(self, event: ev.MergeFailed) -> list[Action]:
        item = self._item_for_buildset(event.buildset_id)
        if item is None or item.buildset.merge_state is not MergeState.PREPARING:
            return []
        bs = item.buildset
        bs.merge_message = event.message
        if event.conflict:
            bs.merge_state = MergeState.CONFLICT
        elif bs.merge_attempts < MERGE_RETRIES:
            bs.merge_state = MergeState.PENDING  # a merger error is not a conflict: retry
        else:
            bs.merge_state = MergeState.ERROR
        self.journal.touch(item)
        return []

    # --- build results ------------------------------------------------------------------

    def _build(self, build_id: str):
        entry = self.index.builds.get(build_id)
        return entry if entry is not None else (None, None)

    def _on_BuildStarted(self, event: ev.BuildStarted) -> list[Action]:
        item, build = self._build(event.build_id)
        if build is not None:
            build.state = BuildState.RUNNING
            build.worker = event.worker or build.worker
            build.url = event.url or build.url
            build.started_at = build.started_at or self.clock()
            self.journal.touch(item)
        return []

    def _on_BuildProgress(self, event: ev.BuildProgress) -> list[Action]:
        item, build = self._build(event.build_id)
        if build is not None:
            build.progress = (event.numerator, event.denominator)
        return []

    def _on_BuildCompleted(self, event: ev.BuildCompleted) -> list[Action]:
        item, build = self._build(event.build_id)
        if item is None:
            return []
        try:
            result = Result(event.result) if event.result is not None else None
        except ValueError:
            result = Result.FAILURE
        manager = self.managers.get(item.pipeline)
        if manager is None:
            return []
        return manager.complete_build(item, build, result, event.message, event.not_registered)

    # --- merges at the source and moving branches -----------------------------------------

    def _on_ItemMerged(self, event: ev.ItemMerged) -> list[Action]:
        item = self.index.items.get(event.item_id)
        manager = self.managers.get(item.pipeline) if item else None
        if item is None or manager is None:
            return []
        manager.merged(item)
        self.index.forget_runs(item.change.key)
        actions = self.process()
        return actions + self.branch_moved(item.change.project, item.change.branch, event.tip,
                                           exclude=item.change.key)

    def _on_MergeRefused(self, event: ev.MergeRefused) -> list[Action]:
        item = self.index.items.get(event.item_id)
        manager = self.managers.get(item.pipeline) if item else None
        if item is not None and manager is not None:
            manager.merge_refused(item, event.status, event.message)
        return []

    def branch_moved(self, project: str, branch: str, tip: str = "",
                     exclude: tuple | None = None) -> list[Action]:
        """Retest, in pipelines with ``retest-on-merge``, every change of ``project`` on
        ``branch`` whose last run was on an older tip: queued items are reset, reported
        ones enqueued again. Items whose ref is still being prepared are left alone —
        they will be built on the new tip — so merges landing together retest once."""
        actions: list[Action] = []
        for name, manager in self.managers.items():
            if not manager.config.retest_on_merge:
                continue
            for item in list(manager.items):
                change, bs = item.change, item.buildset
                if (change.project, change.branch) != (project, branch) or change.number is None:
                    continue
                if bs is not None and bs.merge_state is MergeState.READY and (not tip or bs.tip != tip):
                    actions += manager.reset(item, f"{branch} moved: retesting on the new tip")
            for (pipeline, key), old in list(self.index.last_run.items()):
                change = old.change
                if (pipeline != name or key == exclude or change.number is None
                        or (change.project, change.branch) != (project, branch)):
                    continue
                if manager.find(key) is not None or (tip and old.buildset and old.buildset.tip == tip):
                    continue
                actions += self.enqueue(name, change, old.quick)
        return actions

    # --- the handler table: every event class the engine understands ---------------------

    HANDLERS: dict[type[ev.Event], Callable[["Engine", Any], list[Action]]] = {
        ev.ChangeOpened: _on_trigger,
        ev.ChangeReopened: _on_trigger,
        ev.ChangeEdited: _on_trigger,
        ev.CommentAdded: _on_trigger,
        ev.CommentEdited: _on_trigger,
        ev.PatchsetCreated: _on_patchset,
        ev.ChangeClosed: _on_change_closed,
        ev.ChangeMerged: _on_change_closed,
        ev.BranchMoved: _on_branch_moved,
        ev.BranchCreated: _on_branch_moved,
        ev.TimerFired: _on_timer,
        ev.EnqueueRequest: OperatorCommands._on_EnqueueRequest,
        ev.DequeueRequest: OperatorCommands._on_DequeueRequest,
        ev.PromoteRequest: OperatorCommands._on_PromoteRequest,
        ev.RetriggerRequest: OperatorCommands._on_RetriggerRequest,
        ev.PauseRequest: OperatorCommands._on_PauseRequest,
        ev.ReconfigureRequest: OperatorCommands._on_ReconfigureRequest,
        ev.RefPrepared: _on_RefPrepared,
        ev.MergeFailed: _on_MergeFailed,
        ev.BuildStarted: _on_BuildStarted,
        ev.BuildProgress: _on_BuildProgress,
        ev.BuildCompleted: _on_BuildCompleted,
        ev.ItemMerged: _on_ItemMerged,
        ev.MergeRefused: _on_MergeRefused,
    }

    # --- records: the state that must survive a restart ------------------------------

    def to_record(self) -> Record:
        """Every pipeline's queues and items, and the last reported runs, as plain data."""
        return {"version": RECORD_VERSION,
                "pipelines": {name: m.to_record() for name, m in self.managers.items()},
                "last_run": [item_record(item) for item in self.index.last_run.values()]}

    @classmethod
    def from_record(cls, layout: Layout, record: Record, clock: Callable[[], float] = time.time,
                    zuul_url: str = "", web_url: str = "") -> "Engine":
        """An engine on ``layout`` carrying on from ``record`` (pipelines ``layout`` no
        longer has are dropped, and noted)."""
        if record.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {record.get('version')!r}, expected {RECORD_VERSION}")
        engine = cls(layout, clock, zuul_url, web_url)
        changes = Changes()
        for name, data in record["pipelines"].items():
            manager = engine.managers.get(name)
            if manager is None:
                engine.note(f"restore: pipeline {name} is gone; its items are dropped")
                continue
            for item in manager.restore(data, changes):
                engine.journal.touch(item)
        for data in record["last_run"]:
            engine.index.remember(item_from_record(
                data, ChangeQueue(data["pipeline"], data["queue"]), changes))
        engine.index.absorb(engine.journal)
        engine.index.take_dirty()   # the store has these already
        engine.index.take_runs()
        return engine

    def under_way(self) -> set[str]:
        """Ids of what was asked of the outside world and not answered yet: buildsets
        being prepared, builds without a result, items being merged. Taken right after
        :meth:`from_record`, it is what :meth:`resume` asks again."""
        ids: set[str] = set(self.index.builds)
        for item in self.index.items.values():
            if item.buildset is not None and item.buildset.merge_state is MergeState.PREPARING:
                ids.add(item.buildset.id)
            if item.state is ItemState.MERGING:
                ids.add(item.id)
        return ids

    def resume(self, under_way: set[str] | None = None) -> list[Action]:
        """After :meth:`from_record`: ask again what the previous incarnation had under
        way (``under_way``, by default all of it now: refs being prepared, merges,
        builds without a result — see ``PipelineManager.resume``), then walk every
        queue. The scheduler runs this once, on start, maybe after handling the events
        that arrived meanwhile (results handed over HTTP answer some of it)."""
        if under_way is None:
            under_way = self.under_way()
        actions: list[Action] = []
        for manager in self.managers.values():
            for item in list(manager.items):
                actions += manager.resume(item, under_way)
        return actions + self.process(everything=True)

    def forget_delta(self) -> None:
        """Drop what changed since the last call (nothing saves it: no store)."""
        self.index.take_dirty()
        self.index.take_runs()
        self._all_touched = False

    def take_delta(self) -> Delta:
        """What changed since the last call (or since :meth:`from_record`), as plain data:
        the store writes it in one transaction per batch of events."""
        live, finished = self.index.take_dirty()
        delta = Delta(items=[(self.summary(i), item_record(i)) for i in live],
                      finished=[self.summary(i) for i in finished])
        queues: dict[int, tuple[str, Any]] = {}
        if self._all_touched:
            self._all_touched = False
            for name, manager in self.managers.items():
                delta.pipelines[name] = manager.state_record()
                for queue in manager.queues:
                    queues[id(queue)] = (name, queue)
        for item in live + finished:
            queues[id(item.queue)] = (item.pipeline, item.queue)
        kept: dict[str, set[int]] = {}   # ids of each pipeline's queues, when needed
        for name, queue in queues.values():
            manager = self.managers.get(name)
            if manager is None:
                continue
            if name not in delta.pipelines:
                delta.pipelines[name] = manager.state_record()
            if not queue.items and name not in kept:
                kept[name] = {id(q) for q in manager.queues}
            gone = not queue.items and id(queue) not in kept[name]
            delta.queues.append((queue.id, name, None if gone else queue_skeleton(queue)))
        for (pipeline, key), item in self.index.take_runs().items():
            delta.runs.append((pipeline, run_key(key), item_record(item) if item else None))
        return delta

    # --- views --------------------------------------------------------------------------

    def take_dirty(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Summaries of the items changed since the last call: live ones, and ones that
        left their queue (plain data: the store needs nothing else)."""
        live, finished = self.index.take_dirty()
        return [self.summary(i) for i in live], [self.summary(i) for i in finished]

    def summary(self, item: Item) -> dict[str, Any]:
        manager = self.managers.get(item.pipeline)
        if manager is None:  # its pipeline went away with a reconfiguration
            return item_summary(item, self.clock(), self.ctx.web_url)
        return manager.summary(item)

    def item_status(self, item_id: str) -> dict[str, Any] | None:
        """One live item as plain data, or None."""
        item = self.index.items.get(item_id)
        return self.summary(item) if item is not None else None

    def status(self) -> dict[str, Any]:
        now = self.clock()
        pipelines = []
        for name, manager in self.managers.items():
            queues = [{"name": q.name, "window": q.window,
                       "items": [manager.summary(i) for i in q.items]}
                      for q in manager.queues if q.items]
            pipelines.append({"name": name, "manager": manager.config.manager,
                              "description": manager.config.description,
                              "paused": manager.paused, "queues": queues})
        return {"pipelines": pipelines, "time": now}
