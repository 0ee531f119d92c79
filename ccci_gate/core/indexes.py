"""The engine's indexes over its items, kept from the managers' journal.

Managers only note what they touched (:class:`~.managers.context.Journal`); after each
step the engine hands the journal to :meth:`Indexes.absorb`, which keeps these maps
right and says which queues must be walked again:

- ``items``: every live item by id;
- ``buildsets``: the item of each current buildset, by buildset id;
- ``builds``: ``(item, build)`` of each build not finished yet, by build id (a result
  for a build not here — finished, cancelled, of an old buildset — is ignored);
- ``last_run``: the last reported item of each ``(pipeline, change key)`` (for
  retest-on-merge and retrigger), the newest ``LAST_RUNS``;
- ``dirty`` / ``finished`` / ``runs_dirty``: what the store has not seen yet.
"""
from __future__ import annotations

from .managers.context import Journal
from .model import Build, ChangeQueue, Item, ItemState

LAST_RUNS = 5000


class Indexes:
    """Lookups by id over the live items; only the engine holds one."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.buildsets: dict[str, Item] = {}
        self.builds: dict[str, tuple[Item, Build]] = {}
        self.last_run: dict[tuple, Item] = {}
        self.dirty: set[str] = set()
        self.finished: list[Item] = []
        self.runs_dirty: dict[tuple, None] = {}   # last_run keys the store has not seen, in order
        self._held: dict[str, tuple[str, list[str]]] = {}   # item id → what it is indexed by

    def absorb(self, journal: Journal) -> dict[int, tuple[str, ChangeQueue]]:
        """Take the journal's notes; return the queues to walk again (by queue identity)."""
        touched, left = journal.take()
        gone = {item.id for item in left}
        queues: dict[int, tuple[str, ChangeQueue]] = {}
        for item in touched:
            queues[id(item.queue)] = (item.pipeline, item.queue)
            if item.id not in gone:
                self.dirty.add(item.id)
                self._index(item)
        for item in left:
            self._unindex(item)
            self.items.pop(item.id, None)
            self.dirty.discard(item.id)
            self.finished.append(item)
            if item.state is ItemState.REPORTED:
                self.remember(item)
        return queues

    def _index(self, item: Item) -> None:
        self._unindex(item)
        self.items[item.id] = item
        bs = item.buildset
        if bs is None:
            return
        self.buildsets[bs.id] = item
        running = [b for b in bs.builds.values() if not b.done]
        for build in running:
            self.builds[build.id] = (item, build)
        self._held[item.id] = (bs.id, [b.id for b in running])

    def _unindex(self, item: Item) -> None:
        held = self._held.pop(item.id, None)
        if held is None:
            return
        buildset_id, build_ids = held
        if self.buildsets.get(buildset_id) is item:
            del self.buildsets[buildset_id]
        for build_id in build_ids:
            entry = self.builds.get(build_id)
            if entry is not None and entry[0] is item:
                del self.builds[build_id]

    def remember(self, item: Item) -> None:
        """Keep the last reported run of each change (for retest-on-merge, retrigger)."""
        key = (item.pipeline, item.change.key)
        self.last_run.pop(key, None)
        self.last_run[key] = item
        self._run_changed(key)
        while len(self.last_run) > LAST_RUNS:
            oldest = next(iter(self.last_run))
            del self.last_run[oldest]
            self._run_changed(oldest)

    def forget_runs(self, key: tuple) -> None:
        """A change that merged or closed needs no retest and no rerun."""
        for run in [k for k in self.last_run if k[1] == key]:
            del self.last_run[run]
            self._run_changed(run)

    def take_dirty(self) -> tuple[list[Item], list[Item]]:
        """Items changed since the last call: live ones, and ones that left a queue."""
        finished, self.finished = self.finished, []
        dirty, self.dirty = self.dirty, set()
        return [self.items[i] for i in dirty if i in self.items], finished

    def _run_changed(self, key: tuple) -> None:
        self.runs_dirty.pop(key, None)
        self.runs_dirty[key] = None

    def take_runs(self) -> dict[tuple, Item | None]:
        """``last_run`` entries changed since the last call (None: forgotten)."""
        keys, self.runs_dirty = self.runs_dirty, {}
        return {key: self.last_run.get(key) for key in keys}
