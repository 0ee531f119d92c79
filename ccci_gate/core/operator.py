"""Operator commands (CLI and admin API): enqueue, dequeue, promote, retrigger, pause,
and reconfiguration. Mixed into :class:`~.engine.Engine`, whose handler table routes
the requests here; they use the engine's managers, indexes and ``enqueue``.

Each command leaves an **answer** — an HTTP-like status and a sentence — in
``engine.answer``: 202 when it was done, 404 when what it names does not exist (no such
pipeline, change or job), 409 when it cannot be done now (already enqueued, the job is
still running, nothing to promote). The scheduler hands it back to the operator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import events as ev
from .actions import Action
from .layout import Layout
from .managers import PipelineManager
from .model import Item

if TYPE_CHECKING:
    from .indexes import Indexes


class OperatorCommands:
    """What an operator may ask of the engine (the engine provides ``note``,
    ``enqueue``, ``dequeue_everywhere`` and ``_manager``)."""

    managers: dict[str, PipelineManager]
    layout: Layout
    index: "Indexes"
    answer: tuple[int, str] | None = None

    def reply(self, status: int, text: str) -> None:
        """The answer to the operator's command being handled (also noted in the log)."""
        self.answer = (status, text)
        self.note(text)  # type: ignore[attr-defined]

    def take_answer(self) -> tuple[int, str] | None:
        answer, self.answer = self.answer, None
        return answer

    def _on_EnqueueRequest(self, event: ev.EnqueueRequest) -> list[Action]:
        if event.pipeline not in self.managers:
            self.reply(404, f"no pipeline {event.pipeline!r}")
            return []
        item, actions, why = self.managers[event.pipeline].enqueue(event.change, event.quick)
        if item is None:
            self.reply(409, f"not enqueued: {why}")
        else:
            self.reply(202, f"enqueued {event.change.describe()} in {event.pipeline}")
        return actions

    def _managed_item(self, pipeline: str, key: tuple) -> tuple[PipelineManager | None, Item | None]:
        manager = self.managers.get(pipeline)
        if manager is None:
            self.reply(404, f"no pipeline {pipeline!r}")
            return None, None
        return manager, manager.find(tuple(key))

    def _on_PromoteRequest(self, event: ev.PromoteRequest) -> list[Action]:
        manager, item = self._managed_item(event.pipeline, event.change_key)
        if manager is None:
            return []
        if item is None:
            self.reply(404, f"{_describe(event.change_key)} is not in {event.pipeline}")
        elif not manager.promote(item):
            self.reply(409, f"cannot promote {_describe(event.change_key)} in {event.pipeline} "
                            f"(a {manager.config.manager} pipeline, or it leads already)")
        else:
            self.reply(202, f"promoted {_describe(event.change_key)} to the head of its queue")
        return []

    def _on_RetriggerRequest(self, event: ev.RetriggerRequest) -> list[Action]:
        manager, item = self._managed_item(event.pipeline, event.change_key)
        if manager is None:
            return []
        old = self.index.last_run.get((event.pipeline, tuple(event.change_key)))
        known = item or old
        if known is None:
            self.reply(404, f"{_describe(event.change_key)} has not run in {event.pipeline}")
            return []
        graph = known.buildset.graph if known.buildset is not None else None
        if graph is None or event.job not in graph.names:
            self.reply(404, f"{_describe(event.change_key)} runs no job {event.job!r} in "
                            f"{event.pipeline}")
            return []
        if item is not None:
            again = manager.retrigger(item, event.job)
        else:
            again = manager.rerun(old, event.job)[1] if old is not None else []
        if again:
            self.reply(202, f"retrigger {event.job} of {_describe(event.change_key)}: "
                            f"{', '.join(again)} will run again")
        else:
            self.reply(409, f"cannot retrigger {event.job} of {_describe(event.change_key)} now: "
                            f"it (or a job after it) is still running, or the item is merging")
        return []

    def _on_PauseRequest(self, event: ev.PauseRequest) -> list[Action]:
        manager = self.managers.get(event.pipeline)
        if manager is None:
            self.reply(404, f"no pipeline {event.pipeline!r}")
            return []
        manager.paused = event.paused
        self.reply(202, f"{event.pipeline} {'paused: no new builds start' if event.paused else 'resumed'}")
        return []

    def _on_ReconfigureRequest(self, event: ev.ReconfigureRequest) -> list[Action]:
        return self.reconfigure(event.layout)

    def reconfigure(self, layout: Layout) -> list[Action]:
        """Swap in ``layout``; items and builds in flight are re-homed where their
        pipeline still exists, and dequeued (builds cancelled) where it does not."""
        actions: list[Action] = []
        old = self.managers
        self.layout = layout
        self.managers = {}
        for name, cfg in layout.pipelines.items():
            manager = self._manager(cfg)
            previous = old.get(name)
            if previous is not None:
                manager.adopt(previous)
            self.managers[name] = manager
        for name, manager in old.items():
            if name not in self.managers:
                for item in list(manager.items):
                    actions += manager.dequeue(item, f"pipeline {name} removed by reconfiguration")
        self.note(f"reconfigured: {len(layout.pipelines)} pipelines")
        return actions

    def _on_DequeueRequest(self, event: ev.DequeueRequest) -> list[Action]:
        key = tuple(event.change_key)
        if event.pipeline and event.pipeline not in self.managers:
            self.reply(404, f"no pipeline {event.pipeline!r}")
            return []
        where = [name for name, m in self.managers.items()
                 if (not event.pipeline or name == event.pipeline) and m.find(key) is not None]
        if not where:
            self.reply(404, f"{_describe(key)} is not queued"
                            + (f" in {event.pipeline}" if event.pipeline else " anywhere"))
            return []
        self.reply(202, f"dequeued {_describe(key)} from {', '.join(where)}")
        return self.dequeue_everywhere(key, event.reason, event.pipeline)  # type: ignore[attr-defined]



def _describe(key: tuple) -> str:
    """A change key as an operator wrote it: ``org/app#3`` or ``org/app refs/heads/main``."""
    project, what = (tuple(key) + ("", ""))[:2]
    return f"{project}#{what}" if isinstance(what, int) else f"{project} {what}".strip()
