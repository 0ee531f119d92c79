"""The state the scheduler owns: changes, items, buildsets, builds and change queues.

Vocabulary:
- **change**: what is tested — a pull request head (``number`` set) or a plain ref
  (a branch tip after a push, a timer run).
- **item**: one change enqueued in one pipeline.
- **change queue**: ordered items that share a gate; independent pipelines give each
  item a queue of its own.
- **buildset**: one attempt at an item: its speculative ref and its builds. A reset
  replaces the buildset; results for an old buildset are ignored.
- **build**: one run of one job for one buildset.

Only the scheduler thread touches these objects. No I/O here.
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Iterator

from .jobgraph import JobGraph


def new_id() -> str:
    """A fresh random identifier (also the Gearman ``unique`` of a build)."""
    return uuid.uuid4().hex


class Result(str, enum.Enum):
    """Final result of a build (Zuul v2 result strings) or of an item."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"
    NOT_REGISTERED = "NOT_REGISTERED"
    RETRY_LIMIT = "RETRY_LIMIT"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"
    CANCELED = "CANCELED"
    ERROR = "ERROR"
    MERGE_CONFLICT = "MERGE_CONFLICT"
    MERGE_FAILED = "MERGE_FAILED"     # tested fine, but the source refused to merge

    @property
    def is_infra(self) -> bool:
        """The system failed, not the change: no worker, attempts lost, an error, or the
        build stopped by the gate or its worker. The one definition (reporters use it)."""
        return self in INFRA_RESULTS

    @property
    def blames_change(self) -> bool:
        """The change is at fault: it failed, timed out, never ran because what it needs
        failed, or does not merge. (``MERGE_FAILED`` is neither this nor infra: it
        passed, and the source refused.)"""
        return self in (Result.FAILURE, Result.TIMED_OUT, Result.SKIPPED, Result.MERGE_CONFLICT)


INFRA_RESULTS = frozenset({Result.NOT_REGISTERED, Result.RETRY_LIMIT, Result.ERROR,
                           Result.ABORTED, Result.CANCELED})


@dataclass(frozen=True)
class Change:
    """A change or ref under test.

    ``ref`` is what the merger fetches for the change's head (``refs/pull/2/head``),
    or the branch ref for a ref item; ``sha`` the head commit when known.
    """

    project: str
    branch: str
    ref: str
    number: int | None = None
    patchset: str | None = None
    sha: str | None = None
    oldrev: str | None = None
    url: str = ""
    title: str = ""
    author: str = ""
    files: tuple[str, ...] | None = None

    @property
    def key(self) -> tuple:
        """Identity of the change across patchsets: a PR, or a ref."""
        if self.number is not None:
            return (self.project, self.number)
        return (self.project, self.ref)

    def describe(self) -> str:
        if self.number is not None:
            return f"{self.project}#{self.number}" + (f",{self.patchset}" if self.patchset else "")
        return f"{self.project}@{self.ref}" + (f" ({self.sha[:10]})" if self.sha else "")


class BuildState(str, enum.Enum):
    QUEUED = "QUEUED"        # submitted, no worker has started it
    RUNNING = "RUNNING"      # a worker sent WORK_DATA
    COMPLETED = "COMPLETED"


@dataclass(eq=False)
class Build:
    """One run of one job for one buildset."""

    job: str
    buildset_id: str
    id: str = field(default_factory=new_id)
    attempt: int = 1
    state: BuildState = BuildState.QUEUED
    result: Result | None = None
    voting: bool = True
    worker: str = ""
    url: str = ""
    log_url: str = ""
    earlier_logs: tuple[str, ...] = ()   # log URLs of this job's earlier (lost) attempts
    progress: tuple[int, int] = (0, 0)
    enqueued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    message: str = ""

    @property
    def done(self) -> bool:
        return self.state is BuildState.COMPLETED


class MergeState(str, enum.Enum):
    PENDING = "PENDING"      # not asked yet
    PREPARING = "PREPARING"  # the merger is building the speculative ref
    READY = "READY"
    CONFLICT = "CONFLICT"
    ERROR = "ERROR"


@dataclass(eq=False)
class BuildSet:
    """One attempt at an item: the speculative ref and the builds run on it."""

    item_id: str
    graph: JobGraph
    id: str = field(default_factory=new_id)
    changes: tuple[Change, ...] = ()
    merge_state: MergeState = MergeState.PENDING
    ref: str | None = None
    commit: str | None = None
    tip: str = ""
    steps: tuple[str, ...] = ()
    merge_message: str = ""
    merge_attempts: int = 0
    reason: str = ""   # why this buildset exists (a reset's cause); empty for the first
    builds: dict[str, Build] = field(default_factory=dict)

    def results(self) -> dict[str, Result]:
        return {job: b.result for job, b in self.builds.items() if b.done and b.result}

    def running(self) -> Iterator[Build]:
        return (b for b in self.builds.values() if not b.done)

    def _bad(self) -> list[Build]:
        return [b for b in self.builds.values() if b.voting and b.done
                and b.result not in (Result.SUCCESS, Result.SKIPPED)]

    def failing(self) -> bool:
        """A voting build finished with anything but SUCCESS: the item will fail."""
        return any(b.voting and b.done and b.result is not Result.SUCCESS
                   for b in self.builds.values())

    def failure_reason(self) -> str:
        bad = [f"{b.job}: {b.result.value if b.result else '?'}" for b in self._bad()]
        return "; ".join(bad) or "a voting job did not succeed"

    def infra_only(self) -> bool:
        """Every voting failure was the system's fault (``Result.is_infra``), none the
        change's: the item's result is ERROR, not FAILURE."""
        bad = self._bad()
        return bool(bad) and all(b.result is not None and b.result.is_infra for b in bad)


class ItemState(str, enum.Enum):
    """Where an item is in its life; the allowed moves are :data:`TRANSITIONS`.

    ::

        NEW ──► TESTING ◄──► WAITING          (reset, outside the window, not a probe;
         │         │            │              a NEW item held back stays NEW)
         │         ▼            │
         └──────► COMPLETE ◄────┘             (every job has a result, or no merge;
                   │   ▲  ──► WAITING/TESTING   a reset, a retrigger)
                   ▼   │ (the source refused)
                 MERGING ──► MERGED ──► REPORTED
                   └──► WAITING                (reset: the branch moved under it)
        (any live state) ──► DEQUEUED          (superseded, closed, operator)
        COMPLETE ──► REPORTED                  (a result that is not merged)
    """

    NEW = "NEW"              # enqueued, never active: its start is not reported yet
    WAITING = "WAITING"      # held back (outside the window, or not a batch's probe)
    TESTING = "TESTING"      # its buildset is being prepared or built
    COMPLETE = "COMPLETE"    # it has its result; waits its turn to report (or merge)
    MERGING = "MERGING"      # passed at the head: the source was asked to merge it
    MERGED = "MERGED"        # the source merged it; it reports next
    REPORTED = "REPORTED"    # reported and out of its queue
    DEQUEUED = "DEQUEUED"    # out of its queue without a report


_S = ItemState
TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    _S.NEW: frozenset({_S.NEW, _S.TESTING, _S.COMPLETE, _S.DEQUEUED}),
    _S.WAITING: frozenset({_S.WAITING, _S.TESTING, _S.COMPLETE, _S.DEQUEUED}),
    _S.TESTING: frozenset({_S.TESTING, _S.WAITING, _S.COMPLETE, _S.DEQUEUED}),
    _S.COMPLETE: frozenset({_S.COMPLETE, _S.WAITING, _S.TESTING, _S.MERGING, _S.REPORTED,
                            _S.DEQUEUED}),
    _S.MERGING: frozenset({_S.MERGING, _S.MERGED, _S.COMPLETE, _S.WAITING, _S.DEQUEUED}),
    _S.MERGED: frozenset({_S.MERGED, _S.REPORTED, _S.DEQUEUED}),
    _S.REPORTED: frozenset(),
    _S.DEQUEUED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """An item was asked to move where its lifecycle does not go (a manager bug)."""


@dataclass(eq=False)
class Item:
    """A change enqueued in a pipeline; its life is ``state`` (see :class:`ItemState`)."""

    change: Change
    pipeline: str
    queue: "ChangeQueue"
    id: str = field(default_factory=new_id)
    enqueued_at: float = 0.0
    state: ItemState = ItemState.NEW
    buildset: BuildSet | None = None
    quick: bool = False
    failing_reason: str = ""
    result: Result | None = None
    message: str = ""

    def advance(self, state: ItemState) -> None:
        """Move to ``state``; raises :class:`IllegalTransition` where no arrow goes."""
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.change.describe()} in {self.pipeline}: "
                                    f"{self.state.value} → {state.value}")
        self.state = state

    @property
    def active(self) -> bool:
        """Whether it has (or had, for this buildset) builds: in the window, or a probe."""
        return self.state in (ItemState.TESTING, ItemState.COMPLETE, ItemState.MERGING,
                              ItemState.MERGED)

    @property
    def merging(self) -> bool:
        """The source was asked to merge it (it may have done so already)."""
        return self.state in (ItemState.MERGING, ItemState.MERGED)

    @property
    def is_head(self) -> bool:
        """Whether it is first in its queue (the one that may report, merge or run)."""
        return self.queue.head is self


@dataclass(eq=False)
class ChangeQueue:
    """Ordered items of a pipeline that share a gate (one per item when independent)."""

    pipeline: str
    name: str
    items: list[Item] = field(default_factory=list)
    window: int = 0
    id: str = field(default_factory=new_id)
    merged: list[Change] = field(default_factory=list)

    @property
    def head(self) -> Item | None:
        """The first item, or None when the queue is empty."""
        return self.items[0] if self.items else None

    def find(self, key: tuple) -> Item | None:
        for item in self.items:
            if item.change.key == key:
                return item
        return None
