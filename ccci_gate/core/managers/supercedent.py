"""The supercedent manager: per ref, at most one running item and one waiting item.

A newer item for the same project and branch replaces the waiting one (dequeued without
a report): only the latest state of a branch is worth testing once the running item is
done. Used for post-merge pipelines where every intermediate tip does not matter.
"""
from __future__ import annotations

from ..actions import Action
from ..model import Change, ChangeQueue, Item
from .base import PipelineManager, superseded_by


class SupercedentManager(PipelineManager):
    name = "supercedent"

    def queue_for(self, change: Change) -> ChangeQueue:
        return self.named_queue(f"{change.project}@{change.branch}", window=1)

    def enqueue(self, change: Change, quick: bool = False) -> tuple[Item | None, list[Action], str]:
        item, actions, why = super().enqueue(change, quick)
        if item is not None:
            for older in item.queue.items[1:-1]:  # waiting items, not the running head
                actions += self.dequeue(older, superseded_by(change))
        return item, actions, why

    def is_active(self, item: Item) -> bool:
        return item.is_head
