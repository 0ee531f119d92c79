"""The batching gate: test many queued changes with one run, bisect a failed batch aside.

Real-deploy jobs are long and worker hosts run one or two apps at a time, so testing
every change of a deep speculative queue wastes capacity. The batching manager runs
jobs only on **probe** items, at most ``MAX_PROBES`` at once.

- **The lane**: the queue's untested changes are cut into **batches** of the current
  batch size; the last item of a batch is its probe, whose speculative ref holds every
  change ahead of it that is not failing or set aside. Batches stack: the next batch is
  tested on top of the one still running. A passing probe proves every change of its ref:
  they merge in order, each at the tested commit that holds it (``BuildSet.steps``).
- **Set aside**: when a probe fails and everything ahead of its batch is proven, the
  batch's changes step aside into a **group**. The lane goes on without them (batches
  behind are retested on refs without the group), so the capacity keeps merging.
- **Bisection**: a group is bisected on its own, on the proven changes ahead of it plus a
  prefix of its members, until the **culprit** is the first member of a failing prefix
  whose predecessor passed. The culprit is reported at once, with its failing builds as
  evidence; the other members rejoin the lane behind what is being tested and are
  retested with the next batch. Every merged change was tested in exactly the
  combination that lands; a change merges once every change its proof included has.

The batch size follows the recent failure rate (an exponential average): about
``1.5 / rate`` changes per probe, between 2 and the pipeline's ``batch-max``.
"""
from __future__ import annotations

from ..actions import Action
from ..model import Change, ChangeQueue, Item, ItemState, MergeState, Result
from ..records import Changes, Record, change_record
from .base import PipelineManager
from .batches import BatchingState, Group, Marks
from .dependent import DependentManager, failing, same_changes

RATE_WEIGHT = 0.2
SIZE_FACTOR = 1.5  # changes per batch ≈ SIZE_FACTOR / failure rate (bench/gate.py tuned it)
MAX_PROBES = 2   # probes tested at once: bisection first, then the lane


class BatchingManager(DependentManager):
    name = "batching"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches = BatchingState()

    @property
    def groups(self) -> dict[str, Group]:
        return self.batches.groups

    def batch_size(self) -> int:
        size = round(SIZE_FACTOR / max(self.batches.failure_rate, 1e-3))
        return max(2, min(self.config.batch_max, size))

    def adopt(self, previous: PipelineManager) -> None:
        super().adopt(previous)
        if isinstance(previous, BatchingManager):
            self.batches = previous.batches

    def state_record(self) -> Record:
        return {**super().state_record(), "batching": self.batches.to_record(change_record)}

    def restore(self, record: Record, changes: Changes) -> list[Item]:
        items = super().restore(record, changes)
        if "batching" in record:   # (a record of a gate that did not batch has none)
            self.batches = BatchingState.from_record(record["batching"],
                                                     {i.id: i for i in items}, changes)
        return items

    def forget(self, item: Item) -> None:
        super().forget(item)
        self.batches.marks.pop(item.id, None)

    def reset(self, item: Item, reason: str = "") -> list[Action]:
        marks = self.batches.marks.get(item.id)
        if marks is not None:
            marks.probe_failed = False   # a new buildset is a new test
        return super().reset(item, reason)

    def _m(self, item: Item) -> Marks:
        """The item's batching marks (read-only use: nothing is created)."""
        return self.batches.peek(item)

    def _observe(self, failed: bool) -> None:
        self.batches.failure_rate += RATE_WEIGHT * ((1.0 if failed else 0.0) - self.batches.failure_rate)

    # --- the walk -----------------------------------------------------------------------

    def process_queue(self, queue: ChangeQueue) -> list[Action]:
        if not queue.items:
            queue.merged.clear()
            return []
        queue.window = self.batch_size()
        actions = self._settle(queue)
        regrouped = self.batches.regrouped
        self._lane_verdicts(queue)
        for group in [g for g in self.groups.values() if g.members and g.members[0].queue is queue]:
            actions += self._bisect(queue, group)
        if self.batches.regrouped != regrouped:  # items stepped aside or came back: refs change
            actions += self._settle(queue)
        probes = self._new_probes(queue)
        for item in list(queue.items):
            if item not in queue.items:
                continue
            if item in probes or self._running_probe(item):
                actions += self.process_item(item)
            elif self._m(item).proven or failing(item):
                if not item.merging:
                    item.advance(ItemState.COMPLETE)
                actions += self.maybe_report(item)
            else:
                self.hold(item)
        return actions

    def _settle(self, queue: ChangeQueue) -> list[Action]:
        """Recompute what each item's ref should hold; reset buildsets that hold other
        changes, and proofs that no longer hold."""
        actions: list[Action] = []
        ahead: list[Change] = []
        base: dict[str, list[Change]] = {}    # group id → the ref of its members so far
        for item in list(queue.items):
            marks = self._m(item)
            if marks.aside:
                held = base.setdefault(marks.aside, list(ahead))
                held.append(item.change)
                expected = tuple(held)
            else:
                expected = (*ahead, item.change)
            self._expected[item.id] = expected
            bs = item.buildset
            assert bs is not None
            if marks.proven and not item.merging and not self._proof_holds(item, expected):
                marks.proven, marks.proven_commit, item.result = (), "", None
                self.journal.touch(item)
            if (bs.merge_state is not MergeState.PENDING and not item.merging
                    and not (marks.aside and failing(item))):
                if not same_changes(bs.changes, expected, queue.merged):
                    actions += self.reset(item, "the changes ahead changed")
            if not failing(item) and not marks.aside:
                ahead.append(item.change)
        return actions

    def _proof_holds(self, item: Item, expected: tuple[Change, ...]) -> bool:
        """Its proof is its ref now, and nothing merged since that the proof lacked."""
        merged, marks = item.queue.merged, self._m(item)
        if not same_changes(marks.proven, expected, merged):
            return False
        return all(c in marks.proven for c in merged[marks.mark:])

    def _prove(self, item: Item, commit: str, message: str) -> None:
        marks = self.batches.of(item)
        marks.proven = self._expected.get(item.id, ())
        marks.proven_commit = commit
        marks.mark = len(item.queue.merged)
        item.result = Result.SUCCESS
        item.message = message
        self.journal.touch(item)

    @staticmethod
    def _has_builds(item: Item) -> bool:
        bs = item.buildset
        return bs is not None and bs.merge_state is not MergeState.PENDING

    def _running_probe(self, item: Item) -> bool:
        """A probe still waiting for its verdict (lane, or a group's current probe)."""
        marks = self._m(item)
        if not self._has_builds(item) or marks.proven or marks.probe_failed or failing(item):
            return False
        if marks.aside:
            group = self.groups.get(marks.aside)
            return group is not None and item.id in group.probes
        return True

    def _lane(self, queue: ChangeQueue) -> list[Item]:
        """Items of the lane: not set aside, not failing, not yet proven."""
        return [i for i in queue.items if not self._m(i).aside and not failing(i)
                and not self._m(i).proven and not i.merging]

    # --- the lane -------------------------------------------------------------------------

    def _lane_verdicts(self, queue: ChangeQueue) -> None:
        """When the first batch of the lane failed, set it aside. (A failure of a batch
        behind a batch still running waits: the culprit may be in the one ahead.)"""
        lane = self._lane(queue)
        first = next((n for n, i in enumerate(lane) if self._has_builds(i)), None)
        if first is None or not self._m(lane[first]).probe_failed:
            return
        probe, batch = lane[first], lane[:first + 1]
        bs = probe.buildset
        group = Group(bs.id if bs else probe.id, batch, len(batch) - 1,
                      hi_conflict=bool(bs and bs.merge_state is MergeState.CONFLICT),
                      mark=len(queue.merged))
        self.groups[group.id] = group
        self.batches.regrouped += 1
        for member in batch:
            self.batches.of(member).aside = group.id
            member.message = f"set aside: bisecting a failed batch of {len(batch)}"
            self.journal.touch(member)

    def _new_probes(self, queue: ChangeQueue) -> list[Item]:
        """Start probes while fewer than ``MAX_PROBES`` run: bisection, then the lane."""
        running = sum(1 for i in queue.items if self._running_probe(i))
        probes: list[Item] = []
        for group in self.groups.values():
            if running >= MAX_PROBES:
                return probes
            if not group.members or group.members[0].queue is not queue or group.probes:
                continue
            if group.hi > group.lo:
                index = (group.lo + group.hi - 1) // 2
                probe = group.members[index]
                group.probes[probe.id] = index
                probes.append(probe)
                running += 1
        lane = self._lane(queue)
        start = 0
        for index, item in enumerate(lane):
            if self._has_builds(item):
                start = index + 1
        size = self.batch_size()
        while running < MAX_PROBES and start < len(lane):
            end = min(len(lane), start + size) - 1
            probes.append(lane[end])
            running += 1
            start = end + 1
        return probes

    # --- bisection ------------------------------------------------------------------------

    def _bisect(self, queue: ChangeQueue, group: Group) -> list[Action]:
        if any(m not in queue.items for m in group.members):
            return self._release(queue, group, [m for m in group.members if m in queue.items])
        for item_id, index in list(group.probes.items()):
            probe = group.members[index]
            verdict = self._verdict(probe)
            if verdict is None:
                continue
            del group.probes[item_id]
            if verdict == "pass":
                group.lo = max(group.lo, index + 1)
            else:
                group.hi = min(group.hi, index)
                group.hi_conflict = verdict == "conflict"
            self.journal.touch(probe)
        if group.lo < group.hi or group.probes:
            return []
        return self._convict(queue, group)

    def _verdict(self, probe: Item) -> str | None:
        bs = probe.buildset
        if bs is None:
            return None
        if bs.merge_state is MergeState.CONFLICT:
            return "conflict"
        if bs.merge_state is not MergeState.READY:
            return None
        if bs.failing():
            return "fail"
        return "pass" if PipelineManager.is_complete(self, probe) else None

    def _convict(self, queue: ChangeQueue, group: Group) -> list[Action]:
        """The culprit is reported; the other members rejoin the lane."""
        culprit = group.members[group.hi]
        actions: list[Action] = []
        culprit.result = Result.MERGE_CONFLICT if group.hi_conflict else Result.FAILURE
        evidence = culprit.failing_reason or culprit.buildset.failure_reason()  # type: ignore[union-attr]
        culprit.failing_reason = (f"culprit of a failed batch of {len(group.members)}: the "
                                  f"changes ahead of it passed, with it they failed ({evidence})")
        self._observe(True)
        self.journal.touch(culprit)
        cleared = group.members[:group.hi]
        if cleared and self._undisturbed(queue, group):
            # nothing was tested or merged without the group meanwhile: the passing
            # bisection probe proves the members ahead of the culprit as they are
            bs = cleared[-1].buildset
            assert bs is not None
            for index, member in enumerate(cleared):
                self.batches.of(member).aside = ""
                self._expected[member.id] = tuple(bs.changes[:len(bs.changes) - len(cleared) + index + 1])
                self._prove(member, _step(bs, len(bs.changes) - len(cleared) + index),
                            f"cleared by bisection of a failed batch of {len(group.members)}")
            cleared = []
        innocents = [m for m in (*cleared, *group.members[group.hi + 1:]) if m in queue.items]
        return actions + self._release(queue, group, innocents)

    def _undisturbed(self, queue: ChangeQueue, group: Group) -> bool:
        """Nothing behind the group was tested or merged without it since it formed."""
        first = queue.items.index(group.members[0])
        return len(queue.merged) == group.mark and not any(
            self._m(i).proven or self._has_builds(i) for i in queue.items[first:]
            if self._m(i).aside != group.id)

    def _release(self, queue: ChangeQueue, group: Group, members: list[Item]) -> list[Action]:
        """Members rejoin the lane behind everything being tested (so nothing running
        is reset for them) and are retested with the next batch."""
        actions: list[Action] = []
        for member in members:
            queue.items.remove(member)
        at = max((n + 1 for n, i in enumerate(queue.items)
                  if self._m(i).aside or self._m(i).proven or self._has_builds(i)), default=0)
        queue.items[at:at] = members
        for member in members:
            self.batches.of(member).aside = ""
            actions += self.reset(member, "cleared by bisection: retested with the next batch")
        self.groups.pop(group.id, None)
        self.batches.regrouped += 1
        return actions

    # --- probes ---------------------------------------------------------------------------

    def process_item(self, item: Item) -> list[Action]:
        bs = item.buildset
        if bs is not None and bs.merge_state is MergeState.CONFLICT and not item.result:
            if not self._m(item).probe_failed:
                self.batches.of(item).probe_failed = True  # some change of this ref conflicts: bisect
                item.failing_reason = bs.merge_message
                self.journal.touch(item)
            return []
        return super().process_item(item)

    def launch(self, item: Item) -> list[Action]:
        if self._m(item).probe_failed or item.result is not None:
            return []  # a failed probe runs nothing more; bisection decides its fate
        return super().launch(item) + self._read_probe(item)

    def _read_probe(self, probe: Item) -> list[Action]:
        """A lane probe's verdict: it proves its whole ref, or marks a failed batch."""
        marks = self._m(probe)
        if marks.proven or probe.merging or marks.probe_failed:
            return []
        verdict = self._verdict(probe)
        if verdict in ("fail", "conflict"):
            self.batches.of(probe).probe_failed = True
            probe.result = None
            probe.failing_reason = probe.buildset.failure_reason()  # type: ignore[union-attr]
            self.journal.touch(probe)
            return self.cancel_builds(probe)
        if verdict == "pass" and not marks.aside:
            bs = probe.buildset
            assert bs is not None
            by_change = {id(i.change): i for i in probe.queue.items}
            for index, change in enumerate(bs.changes):
                item = by_change.get(id(change))
                if item is None or self._m(item).proven or self._m(item).aside or failing(item):
                    continue
                self._prove(item, _step(bs, index),
                            f"proven in a batch of {len(bs.changes)} up to {probe.change.describe()}")
            actions: list[Action] = []
            for other in probe.queue.items:  # probes ahead, now proven, need not finish
                if other is not probe and self._m(other).proven and other.buildset is not None and \
                        any(not b.done for b in other.buildset.builds.values()):
                    actions += self.cancel_builds(other)
            return actions
        if verdict == "pass" and marks.aside:
            self.journal.touch(probe)   # bisection reads it on the next walk
        return []

    # --- reporting ----------------------------------------------------------------------

    def is_complete(self, item: Item) -> bool:
        marks = self._m(item)
        if marks.proven:
            return True
        if marks.aside or marks.probe_failed:
            return item.result is not None  # convicted
        return super().is_complete(item)

    def can_report(self, item: Item) -> bool:
        """A culprit reports at once; a proven change once everything in its proof merged."""
        if failing(item):
            return True
        merged, proven = item.queue.merged, self._m(item).proven
        return bool(proven) and all(c in merged for c in proven[:-1])

    def merge_commit(self, item: Item) -> str | None:
        return self._m(item).proven_commit or super().merge_commit(item)

    def finish(self, item: Item) -> list[Action]:
        if item.result is Result.SUCCESS and item.state is ItemState.COMPLETE:
            self._observe(False)
            return self.request_merge(item, self.merge_commit(item))
        aside = self._m(item).aside
        if aside and aside in self.groups:
            del self.groups[aside]
        return super().finish(item)

    def describe(self, item: Item) -> dict[str, object]:
        marks = self._m(item)
        return {"aside": marks.aside, "proven": bool(marks.proven)}


def _step(bs, index: int) -> str:
    """The tested commit holding the first ``index + 1`` changes of a buildset's ref."""
    return bs.steps[index] if index < len(bs.steps) else bs.commit or ""
