"""What every pipeline manager does: enqueue, walk the queues, run the job graph, report.

``process()`` walks every item (Zuul's ``processQueue``) and returns the actions needed
to move it on: prepare its speculative ref, start ready builds, skip blocked ones,
report and dequeue it when done. Managers differ in how items share queues, which
changes a speculative ref contains, and who may report (see the subclasses). Items move
only along their lifecycle (``Item.advance``, ``model.TRANSITIONS``).

What a manager may use: its pipeline's config, the layout, a read-only context (clock,
URLs) and the journal where it notes every item it touches. It keeps its queues; the
engine keeps the indexes. Pure: no I/O.
"""
from __future__ import annotations

from typing import Collection, Iterable

from ..actions import Action, PrepareRef, Report
from ..jobgraph import JobGraph
from ..layout import Layout, PipelineConfig
from ..model import (Build, BuildSet, BuildState, Change, ChangeQueue, Item, ItemState,
                     MergeState, Result)
from ..records import Changes, Record, queue_from_record, queue_record
from ..status import item_summary
from .builds import BuildRunner
from .context import Journal, ManagerContext

MERGE_RETRIES = 3


def superseded_by(change: Change) -> str:
    """The reason an older item of a change (or ref) leaves for ``change``."""
    return f"superseded by {change.sha}" if change.sha else \
        f"superseded by patchset {change.patchset}"


class PipelineManager(BuildRunner):
    """Base manager; subclasses set ``name`` and override the policy hooks."""

    name = "base"

    def __init__(self, config: PipelineConfig, layout: Layout, ctx: ManagerContext,
                 journal: Journal):
        self.config = config
        self.layout = layout
        self.ctx = ctx
        self.journal = journal
        self.queues: list[ChangeQueue] = []
        self.paused = False

    # --- policy hooks --------------------------------------------------------------

    def queue_for(self, change: Change) -> ChangeQueue:
        """The queue a new item of ``change`` joins (independent: a new one each)."""
        queue = ChangeQueue(self.config.name, change.describe())
        self.queues.append(queue)
        return queue

    def named_queue(self, name: str, window: int) -> ChangeQueue:
        """The queue called ``name``, created (with ``window``) on first use."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        queue = ChangeQueue(self.config.name, name, window=window)
        self.queues.append(queue)
        return queue

    def speculative_changes(self, item: Item) -> tuple[Change, ...]:
        """Changes the item's speculative ref contains, in merge order."""
        return (item.change,)

    def can_report(self, item: Item) -> bool:
        """Whether a finished item may report now."""
        return True

    def is_active(self, item: Item) -> bool:
        """Whether the item may have builds now (the window, for dependent)."""
        return True

    def merged(self, item: Item) -> None:
        """The source merged ``item``'s change as asked (only gates ask)."""

    def merge_refused(self, item: Item, status: int, message: str) -> None:
        """The source refused to merge ``item``'s change (only gates ask)."""

    def promote(self, item: Item) -> bool:
        """Move ``item`` to the head of its queue; False where order means nothing."""
        return False

    def describe(self, item: Item) -> dict[str, object]:
        """What this manager adds to an item's summary (batching: set aside, proven)."""
        return {}

    def summary(self, item: Item) -> dict[str, object]:
        """The item as plain data, for reports, the store and the status."""
        return item_summary(item, self.ctx.clock(), self.ctx.web_url, self.describe(item))

    def to_record(self) -> Record:
        """This pipeline's state as plain data (see ``core/records.py``)."""
        return {**self.state_record(), "queues": [queue_record(q) for q in self.queues]}

    def state_record(self) -> Record:
        """What the pipeline keeps beside its queues (the store saves it apart from them)."""
        return {"paused": self.paused}

    def restore(self, record: Record, changes: Changes) -> list[Item]:
        """Take the state of ``to_record`` back; returns the items restored."""
        self.paused = record["paused"]
        self.queues = [queue_from_record(q, changes) for q in record["queues"]]
        return list(self.items)

    def adopt(self, previous: "PipelineManager") -> None:
        """Take over the queues of the manager this one replaces (reconfiguration)."""
        self.queues = previous.queues
        self.paused = previous.paused

    def resume(self, item: Item, under_way: Collection[str]) -> list[Action]:
        """After a restore: ask again what the previous incarnation asked and whose
        answer died with it (``under_way``: ids of the buildsets, builds and items it
        had asked for, see ``Engine.under_way``) — the speculative ref being prepared,
        the merge under way, the builds without a result. A build a worker had started
        is submitted again under its own id (gearmand merges that with the job still
        running: it runs once); one still queued gets a new id (gearmand drops a queued
        job whose client left, and would drop a resubmission merged with it too)."""
        bs = item.buildset
        actions: list[Action] = []
        if bs is None:
            return actions
        if bs.merge_state is MergeState.PREPARING and bs.id in under_way:
            actions.append(PrepareRef(bs.id, item.change.project, item.change.branch, bs.changes))
        if bs.merge_state is MergeState.READY:
            for build in [b for b in bs.running() if b.id in under_way]:
                if build.state is BuildState.QUEUED:
                    build = bs.builds[build.job] = Build(
                        build.job, bs.id, attempt=build.attempt, voting=build.voting,
                        enqueued_at=self.ctx.clock())
                actions += self.start(item, build)
        return actions

    # --- enqueue / dequeue ------------------------------------------------------------

    @property
    def items(self) -> Iterable[Item]:
        for queue in self.queues:
            yield from queue.items

    def find(self, key: tuple) -> Item | None:
        for item in self.items:
            if item.change.key == key:
                return item
        return None

    def graph_for(self, change: Change) -> JobGraph:
        return JobGraph(self.layout.jobs_for(change.project, self.config.name, change.branch,
                                             change.files))

    def enqueue(self, change: Change, quick: bool = False) -> tuple[Item | None, list[Action], str]:
        """Add ``change``; returns the item (or None), actions, and why not if refused.

        The same change at the same patchset is not enqueued twice; an older patchset
        of it is superseded (dequeued without a failure report).
        """
        actions: list[Action] = []
        for existing in [i for i in self.items if i.change.key == change.key]:
            if (existing.change.patchset, existing.change.sha) == (change.patchset, change.sha):
                return None, [], f"{change.describe()} is already in {self.config.name}"
            if change.number is not None:
                actions += self.dequeue(existing, superseded_by(change))
        graph = self.graph_for(change)
        if not graph.jobs:
            return None, actions, f"{change.project} runs no jobs in {self.config.name}"
        queue = self.queue_for(change)
        item = Item(change=change, pipeline=self.config.name, queue=queue,
                    enqueued_at=self.ctx.clock(), quick=quick or self.config.quick)
        queue.items.append(item)
        item.buildset = self.new_buildset(item, graph)
        self.journal.touch(item)
        return item, actions, ""

    def new_buildset(self, item: Item, graph: JobGraph | None = None) -> BuildSet:
        return BuildSet(item_id=item.id, graph=graph or item.buildset.graph)  # type: ignore[union-attr]

    def dequeue(self, item: Item, reason: str) -> list[Action]:
        """Remove an item, cancelling its builds; no failure report. An item whose
        start was reported gets a ``dequeue`` report to the same reporters, so what
        they marked as running (a pending commit status) ends, with ``reason``."""
        actions = self.cancel_builds(item)
        started = item.state is not ItemState.NEW
        item.advance(ItemState.DEQUEUED)
        item.message = reason
        reporters = self.config.reporters_for("start")
        if started and reporters:
            actions.append(Report(item.id, self.config.name, "dequeue", dict(reporters),
                                  self.summary(item)))
        self._remove(item)
        return actions

    def reset(self, item: Item, reason: str = "") -> list[Action]:
        """Start the item over on a new buildset (its old builds are cancelled)."""
        actions = self.cancel_builds(item)
        item.buildset = self.new_buildset(item)
        item.buildset.reason = reason
        self.hold(item)
        item.result = None
        item.failing_reason = ""
        item.message = ""   # what it said was about the old buildset
        self.journal.touch(item)
        return actions

    @staticmethod
    def hold(item: Item) -> None:
        """Hold ``item`` back with no builds (a never-started item stays NEW)."""
        if item.state is not ItemState.NEW:
            item.advance(ItemState.WAITING)

    def forget(self, item: Item) -> None:
        """Drop what the manager keeps about ``item`` beside it (it left its queue)."""

    def _remove(self, item: Item) -> None:
        queue = item.queue
        if item in queue.items:
            queue.items.remove(item)
        if not queue.items and self.config.manager == "independent" and queue in self.queues:
            self.queues.remove(queue)
        self.journal.leave(item)
        self.forget(item)

    # --- the walk ---------------------------------------------------------------------

    def process(self) -> list[Action]:
        """One pass over every item; call until it returns no actions."""
        actions: list[Action] = []
        for queue in list(self.queues):
            actions += self.process_queue(queue)
        return actions

    def process_queue(self, queue: ChangeQueue) -> list[Action]:
        """One pass over one queue (items of a queue depend on each other)."""
        actions: list[Action] = []
        for item in list(queue.items):
            if item in queue.items:
                actions += self.process_item(item)
        return actions

    def process_item(self, item: Item) -> list[Action]:
        actions: list[Action] = []
        bs = item.buildset
        assert bs is not None
        if not self.is_active(item):
            self.hold(item)
            return actions
        if self.paused and (item.state in (ItemState.NEW, ItemState.WAITING)
                            or bs.merge_state is MergeState.PENDING):
            return actions   # paused: nothing new starts; what runs finishes and reports
        if item.state in (ItemState.NEW, ItemState.WAITING):
            first = item.state is ItemState.NEW
            item.advance(ItemState.TESTING)
            if first and self.config.reporters_for("start"):
                actions.append(self.report(item, "start"))
        if bs.merge_state is MergeState.PENDING:
            bs.changes = self.speculative_changes(item)
            bs.merge_state = MergeState.PREPARING
            bs.merge_attempts += 1
            actions.append(PrepareRef(bs.id, item.change.project, item.change.branch, bs.changes))
            self.journal.touch(item)
            return actions
        if bs.merge_state is MergeState.PREPARING:
            return actions
        if bs.merge_state in (MergeState.CONFLICT, MergeState.ERROR):
            if item.result is None:
                item.result = (Result.MERGE_CONFLICT if bs.merge_state is MergeState.CONFLICT
                               else Result.ERROR)
                item.failing_reason = bs.merge_message
            return actions + self.maybe_report(item)
        actions += self.launch(item)
        return actions + self.maybe_report(item)

    def rerun(self, old: Item, job: str) -> tuple[Item | None, list[str]]:
        """Enqueue a reported item again on its old ref, re-running only ``job`` and what
        requires it."""
        bs = old.buildset
        if bs is None or bs.merge_state is not MergeState.READY or job not in bs.graph.names:
            return None, []
        queue = self.queue_for(old.change)
        item = Item(change=old.change, pipeline=self.config.name, queue=queue,
                    enqueued_at=self.ctx.clock(), quick=old.quick)
        queue.items.append(item)
        item.buildset = new = self.new_buildset(item, bs.graph)
        new.changes, new.ref, new.commit, new.tip = bs.changes, bs.ref, bs.commit, bs.tip
        new.merge_state = MergeState.READY
        again = [job, *bs.graph.descendants(job)]
        new.builds = {name: b for name, b in bs.builds.items() if name not in again}
        item.advance(ItemState.TESTING)   # its start was reported by the first run
        self.journal.touch(item)
        return item, again

    # --- results -------------------------------------------------------------------

    def is_complete(self, item: Item) -> bool:
        bs = item.buildset
        assert bs is not None
        if bs.merge_state in (MergeState.CONFLICT, MergeState.ERROR):
            return True
        if bs.merge_state is not MergeState.READY:
            return False
        return len(bs.builds) == len(bs.graph.jobs) and all(b.done for b in bs.builds.values())

    def maybe_report(self, item: Item) -> list[Action]:
        if not self.is_complete(item):
            return []
        if not item.merging:
            item.advance(ItemState.COMPLETE)
        if not self.can_report(item):
            return []
        if item.result is None:
            item.result = Result.FAILURE if item.buildset.failing() else Result.SUCCESS  # type: ignore[union-attr]
        if item.result is Result.FAILURE and item.buildset.infra_only():  # type: ignore[union-attr]
            item.result = Result.ERROR
        return self.finish(item)

    def phase_for(self, item: Item) -> str:
        if item.result is Result.SUCCESS:
            return "success"
        if item.result in (Result.MERGE_CONFLICT, Result.MERGE_FAILED):
            return "merge-failure"
        return "failure"

    def finish(self, item: Item) -> list[Action]:
        """Report the item's result and take it out of its queue."""
        phase = self.phase_for(item)
        item.advance(ItemState.REPORTED)
        actions: list[Action] = [self.report(item, phase)]
        self._remove(item)
        return actions

    def report(self, item: Item, phase: str) -> Report:
        reporters = self.config.reporters_for(phase)
        if phase == "merge-failure" and not reporters:
            reporters = self.config.reporters_for("failure")
        return Report(item.id, self.config.name, phase, dict(reporters), self.summary(item))
