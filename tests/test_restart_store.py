"""What the scheduler saves per batch (``Engine.take_delta`` → ``Store.save_delta``) is
the whole engine: a store read back (``Store.load_record``) restores an engine equal to
the live one, mid-run, and the restored engine carries on as if nothing happened."""
from __future__ import annotations

import json

from ccci_gate.core import actions as act
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.model import Change, ItemState
from ccci_gate.store import Store

from gate_harness import Gate, change, gate_layout


class SavingGate(Gate):
    """A gate whose every step is saved the way the scheduler saves a batch."""

    def __init__(self, store: Store, *args, **kw):
        self.store = store
        super().__init__(*args, **kw)

    def send(self, event: ev.Event) -> None:
        super().send(event)
        self.store.save_delta(self.engine.take_delta())


def mid_run(store: Store) -> SavingGate:
    g = SavingGate(store, gate_layout(batch=True, jobs=("build",), retest=True))
    g.send(ev.EnqueueRequest("check", change(50)))
    g.finish(50, "build")                 # a reported check run: a last run
    g.send(ev.EnqueueRequest("check", change(51)))
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(*range(1, 17))
    g.send(ev.PauseRequest("gate", False))
    g.finish(8, "build", "FAILURE")
    g.finish(4, "build", "SUCCESS")       # bisecting a failed batch
    return g


def restored(store: Store, g: Gate) -> Engine:
    record = store.load_record()
    assert record is not None
    return Engine.from_record(g.engine.layout, json.loads(json.dumps(record)), clock=lambda: 0.0)


def test_the_saved_deltas_restore_the_whole_engine(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    g = mid_run(store)
    store.close()
    engine = restored(Store(tmp_path / "s.sqlite"), g)
    assert engine.to_record() == g.engine.to_record()
    assert engine.status() == g.engine.status()


def test_a_restored_gate_carries_on_like_one_never_stopped(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    g, twin = mid_run(store), mid_run(Store(tmp_path / "twin.sqlite"))
    g.engine = restored(store, g)
    g.run_with_culprits({6})
    twin.run_with_culprits({6})
    assert g.merges == twin.merges and sorted(g.merges) == [n for n in range(1, 17) if n != 6]
    assert g.verdicts() == twin.verdicts() and g.verdicts("check") == twin.verdicts("check")
    # and what the store holds after the run is the end state again
    assert restored(store, g).to_record() == g.engine.to_record()


def test_pause_and_the_retest_on_merge_memory_survive(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    g = SavingGate(store, gate_layout(jobs=("build",), retest=True))
    g.send(ev.EnqueueRequest("check", change(50)))
    g.finish(50, "build")
    g.send(ev.PauseRequest("gate", True))
    engine = restored(store, g)
    assert engine.managers["gate"].paused
    assert list(engine.index.last_run) == list(g.engine.index.last_run) != []
    g.engine = engine                     # a merge now retests the reported check run
    g.send(ev.BranchMoved("gitea", Change("org/a", "main", "refs/heads/main", sha="new")))
    assert [i.change.number for i in g.engine.managers["check"].items] == [50]


def test_resume_asks_again_what_was_under_way(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    g = SavingGate(store, gate_layout(jobs=("build", "test"), retest=True))
    g.enqueue(1, 2)
    g.finish(1, "build")                  # 1's test and 2's build under way...
    started = g.builds[(1, "test")]
    g.send(ev.BuildStarted(started, worker="w1"))   # ... and 1's test taken by a worker
    g.hold_refs = True
    g.enqueue(3)                          # 3's ref being prepared
    engine = restored(store, g)
    actions = engine.resume()
    starts = {a.build_id for a in actions if isinstance(a, act.StartBuild)}
    assert started in starts              # the same id: gearmand merges it with the running job
    assert g.builds[(2, "build")] not in starts and len(starts) == 2   # a queued one: a new id
    assert [a.changes[-1].number for a in actions if isinstance(a, act.PrepareRef)] == [3]
    assert not [a for a in actions if isinstance(a, (act.Report, act.CancelBuild))]
    states = {i.change.number: i.state for i in engine.managers["gate"].items}
    assert states == {1: ItemState.TESTING, 2: ItemState.TESTING, 3: ItemState.TESTING}


def test_store_rows_of_items_that_cannot_be_restored_are_closed(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    g = SavingGate(store, gate_layout(jobs=("build",)))
    g.enqueue(1, 2)
    ids = [i.id for i in g.engine.managers["gate"].items]
    assert store.close_unrestored(ids[:1], "gone") == 1
    assert [i["item_id"] for i in store.open_items()] == ids[:1]
