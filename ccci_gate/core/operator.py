"""Operator commands (CLI and admin API): enqueue, dequeue, promote, retrigger, pause,
and reconfiguration. Mixed into :class:`~.engine.Engine`, whose handler table routes
the requests here; they use the engine's managers, indexes and ``enqueue``.
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

    def _on_EnqueueRequest(self, event: ev.EnqueueRequest) -> list[Action]:
        if event.pipeline not in self.managers:
            self.note(f"enqueue refused: no pipeline {event.pipeline!r}")
            return []
        return self.enqueue(event.pipeline, event.change, event.quick)  # type: ignore[attr-defined]

    def _managed_item(self, pipeline: str, key: tuple) -> tuple[PipelineManager | None, Item | None]:
        manager = self.managers.get(pipeline)
        if manager is None:
            self.note(f"no pipeline {pipeline!r}")
            return None, None
        return manager, manager.find(tuple(key))

    def _on_PromoteRequest(self, event: ev.PromoteRequest) -> list[Action]:
        manager, item = self._managed_item(event.pipeline, event.change_key)
        if item is None or manager is None or not manager.promote(item):
            self.note(f"cannot promote {event.change_key} in {event.pipeline}")
        return []

    def _on_RetriggerRequest(self, event: ev.RetriggerRequest) -> list[Action]:
        manager, item = self._managed_item(event.pipeline, event.change_key)
        if manager is None:
            return []
        if item is not None:
            again = manager.retrigger(item, event.job)
        else:
            old = self.index.last_run.get((event.pipeline, tuple(event.change_key)))
            again = manager.rerun(old, event.job)[1] if old is not None else []
        self.note(f"retrigger {event.job} of {event.change_key}: "
                  + (", ".join(again) if again else "nothing to run"))
        return []

    def _on_PauseRequest(self, event: ev.PauseRequest) -> list[Action]:
        manager = self.managers.get(event.pipeline)
        if manager is not None:
            manager.paused = event.paused
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
        return self.dequeue_everywhere(tuple(event.change_key), event.reason, event.pipeline)

