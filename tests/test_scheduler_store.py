"""The scheduler over the engine: actions reach the ports, state reaches SQLite and survives."""
from __future__ import annotations

import threading

from ccci_gate.core import actions as act
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig
from ccci_gate.core.model import Change
from ccci_gate.scheduler import Scheduler
from ccci_gate.store import Store

LAYOUT = Layout(
    pipelines={"check": PipelineConfig("check", triggers={"admin": ()},
                                       reporters={"success": {"memo": {}}, "failure": {"memo": {}}})},
    projects={"org/a": ProjectConfig("org/a", pipelines={"check": ("build", "test")})},
    jobs={"build": JobConfig("build"), "test": JobConfig("test", requires=("build",))})


class InstantMerger:
    """Answers every PrepareRef at once with a made-up ref."""

    def __init__(self, put):
        self.put = put

    def prepare(self, action: act.PrepareRef) -> None:
        self.put(ev.RefPrepared(action.buildset_id, f"refs/zuul/{action.branch}/Z{action.buildset_id}",
                                "c0ffee"))

    def url(self) -> str:
        return "http://merger/git"


class RecordingDispatcher:
    def __init__(self):
        self.started: list[act.StartBuild] = []
        self.cancelled: list[str] = []

    def start(self, action):
        self.started.append(action)

    def cancel(self, action):
        self.cancelled.append(action.build_id)

    def pool(self):
        return {}


class Memo:
    def __init__(self):
        self.reports: list[act.Report] = []

    def report(self, action):
        self.reports.append(action)


def make(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    dispatcher = RecordingDispatcher()
    memo = Memo()
    holder: dict = {}
    merger = InstantMerger(lambda e: holder["s"].put(e))
    sched = Scheduler(Engine(LAYOUT), merger, dispatcher, store, reporters={"memo": memo})
    holder["s"] = sched
    return sched, store, dispatcher, memo


CHANGE = Change("org/a", "main", "refs/pull/1/head", number=1, patchset="aaa", sha="aaa")


def test_item_runs_to_a_report_and_history_is_stored(tmp_path):
    sched, store, dispatcher, memo = make(tmp_path)
    sched.put(ev.EnqueueRequest("check", CHANGE))
    sched.run_until_idle()
    assert [a.parameters["JOB_NAME"] for a in dispatcher.started] == ["build"]
    assert len(store.open_items()) == 1
    sched.put(ev.BuildStarted(dispatcher.started[0].build_id, worker="w1"))
    sched.put(ev.BuildCompleted(dispatcher.started[0].build_id, "SUCCESS"))
    sched.run_until_idle()
    sched.put(ev.BuildCompleted(dispatcher.started[1].build_id, "SUCCESS"))
    sched.run_until_idle()
    assert [r.phase for r in memo.reports] == ["success"]
    assert store.open_items() == []
    [row] = store.history()
    assert row["result"] == "SUCCESS" and row["change_number"] == 1
    builds = store.builds_of(row["id"])
    assert [(b["job"], b["result"], b["worker"]) for b in builds] == [
        ("build", "SUCCESS", "w1"), ("test", "SUCCESS", "")]
    assert store.reports_of(row["id"])[0]["driver"] == "memo"
    store.close()
    reopened = Store(tmp_path / "state.sqlite")
    assert reopened.history()[0]["id"] == row["id"]


def test_queued_items_survive_in_the_store(tmp_path):
    sched, store, dispatcher, memo = make(tmp_path)
    sched.put(ev.EnqueueRequest("check", CHANGE))
    sched.run_until_idle()
    store.close()
    reopened = Store(tmp_path / "state.sqlite")
    [item] = reopened.open_items()
    assert item["change"]["number"] == 1 and item["state"] == "TESTING"
    # the item's full state is in the record a restart restores (tests/test_restart_store.py)
    [queue] = reopened.load_record()["pipelines"]["check"]["queues"]
    assert queue["items"][0]["buildset"]["builds"]["build"]["state"] == "QUEUED"


def test_scheduler_thread_answers_status_calls_from_other_threads(tmp_path):
    sched, store, dispatcher, memo = make(tmp_path)
    sched.start()
    try:
        sched.put(ev.EnqueueRequest("check", CHANGE))
        assert sched.sync()                       # handled and published
        results = []
        threads = [threading.Thread(target=lambda: results.append(sched.status())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 4
        final = sched.status()
        assert final["pipelines"][0]["queues"][0]["items"][0]["change"]["number"] == 1
    finally:
        sched.stop()
