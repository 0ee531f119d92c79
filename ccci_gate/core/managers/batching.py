"""The batching gate: test many queued changes with one run, bisect on failure.

Real-deploy jobs are long and worker hosts run one or two apps at a time, so testing
every change of a deep speculative queue wastes capacity. The batching manager runs
jobs only on **probe** items. A probe's speculative ref holds every change up to it,
so one passing probe proves the whole prefix good: those changes merge in order, each
at the tested commit that holds it (``BuildSet.steps``). When a probe fails, the
manager bisects between the longest prefix known good and the shortest known bad, in
rounds of up to ``MAX_PROBES`` prefixes tested in parallel, until the culprit is the
first change of a failing prefix whose predecessor passed; the culprit is reported with
its failing builds as evidence and the rest carries on without it. Every merged change was tested in exactly the combination
that lands.

The batch size follows the recent failure rate (an exponential average): about
``1 / rate`` changes per probe, between 2 and the pipeline's ``batch-max``.
"""
from __future__ import annotations

from ..actions import Action, MergeChange
from ..model import ChangeQueue, Item, ItemState, MergeState, Result
from .dependent import DependentManager, failing

RATE_WEIGHT = 0.2
START_RATE = 0.1
MAX_PROBES = 2   # batches tested at once, each on top of the one before


class BatchingManager(DependentManager):
    name = "batching"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failure_rate = START_RATE

    def batch_size(self) -> int:
        size = round(1.0 / max(self.failure_rate, 1e-3))
        return max(2, min(self.config.batch_max, size))

    def adopt(self, previous) -> None:
        super().adopt(previous)
        self.failure_rate = getattr(previous, "failure_rate", START_RATE)

    def _observe(self, failed: bool) -> None:
        self.failure_rate += RATE_WEIGHT * ((1.0 if failed else 0.0) - self.failure_rate)

    # --- the walk -----------------------------------------------------------------------

    def process_queue(self, queue: ChangeQueue) -> list[Action]:
        if self.paused:
            return []
        if not queue.items:
            queue.merged.clear()
            return []
        actions = self._settle(queue)
        queue.window = self.batch_size()
        items = queue.items[:queue.window]
        lo = 0
        while lo < len(items) and items[lo].proven:
            lo += 1
        hi = next((i for i in range(lo, len(items)) if items[i].probe_failed), None)
        probe = None
        probes: list[Item] = []
        running = [i for i in items if self._has_builds(i) and not i.proven and not i.probe_failed]
        if hi is None:
            if lo < len(items) and not self._has_builds(items[-1]) and len(running) < MAX_PROBES:
                probe = items[-1]
        else:
            for stale in queue.items[hi + 1:]:
                if self._has_builds(stale) and not stale.proven:
                    actions += self.reset(stale, "a shorter prefix already failed")
            if hi == lo:
                actions += self._convict(items[lo])
            else:
                probes = self._bisection_probes(items, lo, hi)
        for position, item in enumerate(list(queue.items)):
            if item not in queue.items:
                continue
            item.active = position < queue.window
            if item is probe or item in probes or self._has_builds(item):
                actions += self.process_item(item)
            elif item.proven or failing(item):
                item.state = ItemState.COMPLETE
                actions += self.maybe_report(item)
            else:
                item.state = ItemState.WAITING
        return actions

    def _bisection_probes(self, items: list[Item], lo: int, hi: int) -> list[Item]:
        """The next round of probes splitting the suspects ``items[lo:hi + 1]`` (the
        prefix up to ``hi`` failed; up to ``lo - 1`` is proven): up to ``MAX_PROBES``
        prefixes, each splitting the widest remaining gap, started together once the
        previous round has its verdicts."""
        if any(self._has_builds(items[i]) for i in range(lo, hi)):
            return []  # this round is still running
        known = {lo - 1, hi}
        running = 0
        new: list[Item] = []
        while running < MAX_PROBES:
            edges = sorted(known)
            width, left = max((b - a, a) for a, b in zip(edges, edges[1:]))
            if width < 2:
                break
            point = left + width // 2
            known.add(point)
            new.append(items[point])
            running += 1
        return new

    def process_item(self, item: Item) -> list[Action]:
        bs = item.buildset
        if (bs is not None and bs.merge_state is MergeState.CONFLICT and not item.probe_failed):
            item.probe_failed = True  # some change of this prefix conflicts: bisect
            item.failing_reason = bs.merge_message
            self.ctx.touch(item)
            return []
        return super().process_item(item)

    def launch(self, item: Item) -> list[Action]:
        if item.probe_failed:
            return []  # a failed probe runs nothing more; bisection decides its fate
        return super().launch(item) + self._read_probe(item)

    def _settle(self, queue: ChangeQueue) -> list[Action]:
        """Recompute each item's expected changes; drop what no longer holds."""
        actions: list[Action] = []
        ahead = []
        for item in list(queue.items):
            expected = (*ahead, item.change)
            self._expected[item.id] = expected
            bs = item.buildset
            assert bs is not None
            if item.proven and tuple(c for c in item.proven if c not in queue.merged) != expected:
                item.proven, item.result = (), None
            if bs.merge_state is not MergeState.PENDING and not item.merge_requested:
                held = tuple(c for c in bs.changes if c not in queue.merged)
                if held != expected:
                    actions += self.reset(item, "the items ahead changed")
            if not failing(item):
                ahead.append(item.change)
        return actions

    @staticmethod
    def _has_builds(item: Item) -> bool:
        bs = item.buildset
        return bs is not None and bs.merge_state is not MergeState.PENDING

    def _read_probe(self, probe: Item) -> list[Action]:
        """A probe with a verdict proves its prefix good, or marks a failed prefix."""
        bs = probe.buildset
        if (bs is None or probe.proven or probe.merge_requested or probe.probe_failed
                or bs.merge_state is not MergeState.READY):
            return []
        bad = [b for b in bs.builds.values() if b.voting and b.done and b.result is not Result.SUCCESS]
        if bad:
            probe.probe_failed = True
            probe.result = None
            probe.failing_reason = self.failure_reason(probe)
            self.ctx.touch(probe)
            return self.cancel_builds(probe)
        if len(bs.builds) == len(bs.graph.jobs) and all(b.done for b in bs.builds.values()):
            queue = probe.queue
            position = queue.items.index(probe)
            for index, item in enumerate(queue.items[:position + 1]):
                if not item.proven:
                    item.proven = self._expected[item.id]
                    item.proven_commit = bs.steps[index] if index < len(bs.steps) else bs.commit or ""
                    item.result = Result.SUCCESS
                    item.message = f"proven in a batch of {position + 1} up to {probe.change.describe()}"
                    self.ctx.touch(item)
        return []

    def _convict(self, culprit: Item) -> list[Action]:
        """The first change of a failing prefix whose predecessor passed."""
        if culprit.result is not None:
            return []
        bs = culprit.buildset
        conflict = bs is not None and bs.merge_state is MergeState.CONFLICT
        culprit.result = Result.MERGE_CONFLICT if conflict else Result.FAILURE
        culprit.failing_reason = ("culprit of a failed batch: the changes ahead of it passed, "
                                  "with it they failed (" + (culprit.failing_reason or "see builds") + ")")
        self._observe(True)
        self.ctx.touch(culprit)
        return []

    # --- reporting ----------------------------------------------------------------------

    def is_complete(self, item: Item) -> bool:
        if item.proven:
            return True
        if item.probe_failed:
            return item.result is not None  # convicted
        return super().is_complete(item)

    def finish(self, item: Item) -> list[Action]:
        if item.result is Result.SUCCESS and not item.merged and not item.merge_requested:
            item.merge_requested = True
            self.ctx.touch(item)
            self._observe(False)
            commit = item.proven_commit or (item.buildset.commit if item.buildset else None)
            return [MergeChange(item.id, item.change, item.change.sha, commit=commit,
                                branch=item.change.branch)]
        return super().finish(item)
