"""The dependent manager: the speculative gate.

Approved changes join a **change queue** per target branch (projects naming the same
``queue`` share one). Item N is tested on a speculative ref holding the branch tip plus
every *non-failing* item ahead of it, in order, while the items ahead are still being
tested. Only the head reports; on success it is merged at the source, then the next
item becomes the head.

Every walk of a queue recomputes, for each item, the changes its ref should hold
(Zuul's nearest-non-failing-item rule). An item whose buildset holds anything else —
because an item ahead started failing, left the queue, was promoted, or was reset — is
reset onto a new buildset at once. Changes that merged while queued no longer count.

The **window** bounds how many items are active: it grows by ``increase`` with each
merge and is divided by ``decrease-factor`` (not below ``floor``) when the head fails.
"""
from __future__ import annotations

from typing import Collection

from ..actions import Action, MergeChange
from ..model import Change, ChangeQueue, Item, ItemState, MergeState, Result
from .base import PipelineManager


def failing(item: Item) -> bool:
    return item.result is not None and item.result is not Result.SUCCESS


def same_changes(a: tuple[Change, ...], b: tuple[Change, ...], merged: list[Change]) -> bool:
    """Whether two refs hold the same changes, not counting those merged meanwhile."""
    if not merged:
        return a == b
    return tuple(c for c in a if c not in merged) == tuple(c for c in b if c not in merged)


class DependentManager(PipelineManager):
    name = "dependent"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._expected: dict[str, tuple[Change, ...]] = {}

    # --- queues ---------------------------------------------------------------------

    def queue_for(self, change: Change) -> ChangeQueue:
        """One queue per shared queue (``Layout.shared_queue``) and target branch."""
        name = f"{self.layout.shared_queue(change.project)}@{change.branch}"
        return self.named_queue(name, window=self.config.window.start)

    # --- the walk -----------------------------------------------------------------------

    def process_queue(self, queue: ChangeQueue) -> list[Action]:
        actions: list[Action] = []
        if not queue.items:
            queue.merged.clear()
        ahead: list[Change] = []
        for position, item in enumerate(list(queue.items)):
            if item not in queue.items:
                continue
            expected = (*ahead, item.change)
            self._expected[item.id] = expected
            bs = item.buildset
            assert bs is not None
            if position >= queue.window:
                if bs.merge_state is not MergeState.PENDING:
                    actions += self.reset(item, "outside the window")
                self.hold(item)
                continue
            if bs.merge_state is not MergeState.PENDING and not item.merging:
                if not same_changes(bs.changes, expected, queue.merged):
                    actions += self.reset(item, "the items ahead changed")
            actions += self.process_item(item)
            if item in queue.items and not failing(item):
                ahead.append(item.change)
        return actions

    def forget(self, item: Item) -> None:
        self._expected.pop(item.id, None)

    def speculative_changes(self, item: Item) -> tuple[Change, ...]:
        return self._expected.get(item.id, (item.change,))

    def can_report(self, item: Item) -> bool:
        return item.is_head

    # --- the head: merge, then report ---------------------------------------------------

    def finish(self, item: Item) -> list[Action]:
        """A passed head is merged first (MERGING), and reports once MERGED."""
        queue = item.queue
        if item.state is ItemState.MERGING:
            return []
        if item.result is Result.SUCCESS and item.state is not ItemState.MERGED:
            bs = item.buildset
            return self.request_merge(item, bs.commit if bs else None)
        window = self.config.window
        if item.result is Result.SUCCESS:
            queue.window += window.increase
            queue.merged.append(item.change)
        elif item.result is Result.FAILURE or item.result is Result.ERROR:
            queue.window = max(window.floor, queue.window // window.decrease_factor)
        return super().finish(item)

    def request_merge(self, item: Item, commit: str | None) -> list[Action]:
        """Ask the source to merge ``item`` at the tested ``commit``."""
        item.advance(ItemState.MERGING)
        self.journal.touch(item)
        return [MergeChange(item.id, item.change, item.change.sha, commit=commit,
                            branch=item.change.branch, triggers=self.config.triggers)]

    def resume(self, item: Item, under_way: Collection[str]) -> list[Action]:
        """A merge asked for before the restart is asked again (merging a change the
        source merged already is a no-op for the git source; see doc/operating.md)."""
        actions = super().resume(item, under_way)
        if item.state is ItemState.MERGING and item.id in under_way:
            actions.append(MergeChange(item.id, item.change, item.change.sha,
                                       commit=self.merge_commit(item), branch=item.change.branch))
        return actions

    def merge_commit(self, item: Item) -> str | None:
        """The tested commit a merge of ``item`` pushes."""
        return item.buildset.commit if item.buildset else None

    def merged(self, item: Item) -> None:
        """The source merged the head's change."""
        if item.state is ItemState.MERGING:
            item.advance(ItemState.MERGED)
            self.journal.touch(item)

    def merge_refused(self, item: Item, status: int, message: str) -> None:
        """The source refused the merge: report it truthfully; items behind, built on a
        commit that never landed, are reset by the next walk."""
        if item.state is not ItemState.MERGING:
            return
        item.advance(ItemState.COMPLETE)
        item.result = Result.MERGE_FAILED
        item.failing_reason = f"the source refused the merge ({status}): {message}"
        self.journal.touch(item)

    # --- operator commands --------------------------------------------------------------

    def promote(self, item: Item) -> bool:
        """Move ``item`` to the head of its queue; what it overtakes is reset by the walk."""
        queue = item.queue
        queue.items.remove(item)
        queue.items.insert(0, item)
        for other in queue.items:
            self.journal.touch(other)
        return True
