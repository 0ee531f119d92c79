"""The serial manager: one item at a time per project (or shared ``queue``), in order.

Each item is tested alone on its change merged onto the tip (as independent), but the
next item of the same queue waits until the one ahead has reported. Used for jobs that
must not overlap, such as deployments to one place.
"""
from __future__ import annotations

from ..model import Change, ChangeQueue, Item
from .base import PipelineManager


class SerialManager(PipelineManager):
    name = "serial"

    def queue_for(self, change: Change) -> ChangeQueue:
        return self.named_queue(self.layout.shared_queue(change.project), window=1)

    def is_active(self, item: Item) -> bool:
        return item.is_head
