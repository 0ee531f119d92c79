"""Serial and supercedent managers, stepped with no I/O."""
from __future__ import annotations

from ccci_gate.core import actions as act
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig
from ccci_gate.core.model import Change


def engine(manager: str) -> Engine:
    return Engine(Layout(
        pipelines={"p": PipelineConfig("p", manager=manager, triggers={"admin": ()})},
        projects={"org/a": ProjectConfig("org/a", pipelines={"p": ("build",)})},
        jobs={"build": JobConfig("build")}), clock=lambda: 0.0)


def ref(sha: str) -> Change:
    return Change("org/a", "main", "refs/heads/main", sha=sha)


def drive(eng: Engine, out: list) -> list[act.StartBuild]:
    """Answer every PrepareRef; return StartBuilds seen so far."""
    started = []
    pending = list(out)
    while pending:
        a = pending.pop(0)
        if isinstance(a, act.PrepareRef):
            pending += eng.handle(ev.RefPrepared(a.buildset_id, "refs/zuul/x", a.changes[-1].sha or "x"))
        elif isinstance(a, act.StartBuild):
            started.append(a)
    return started


def test_serial_runs_one_item_at_a_time_in_order():
    eng = engine("serial")
    first = drive(eng, eng.handle(ev.EnqueueRequest("p", ref("a1"))))
    second = drive(eng, eng.handle(ev.EnqueueRequest("p", ref("a2"))))
    assert len(first) == 1 and second == []
    after = drive(eng, eng.handle(ev.BuildCompleted(first[0].build_id, "SUCCESS")))
    assert [s.parameters["ZUUL_NEWREV"] for s in after] == ["a2"]


def test_supercedent_keeps_one_running_and_only_the_newest_waiting():
    eng = engine("supercedent")
    running = drive(eng, eng.handle(ev.EnqueueRequest("p", ref("s1"))))
    for sha in ("s2", "s3", "s4"):
        assert drive(eng, eng.handle(ev.EnqueueRequest("p", ref(sha)))) == []
    items = eng.status()["pipelines"][0]["queues"][0]["items"]
    assert [i["change"]["sha"] for i in items] == ["s1", "s4"]
    after = drive(eng, eng.handle(ev.BuildCompleted(running[0].build_id, "SUCCESS")))
    assert [s.parameters["ZUUL_NEWREV"] for s in after] == ["s4"]


def test_serial_and_supercedent_queues_round_trip_mid_run():
    import json
    for manager in ("serial", "supercedent"):
        eng = engine(manager)
        running = drive(eng, eng.handle(ev.EnqueueRequest("p", ref("r1"))))
        drive(eng, eng.handle(ev.EnqueueRequest("p", ref("r2"))))
        record = json.loads(json.dumps(eng.to_record()))
        again = Engine.from_record(eng.layout, record, clock=lambda: 0.0)
        assert again.to_record() == record
        after = drive(again, again.handle(ev.BuildCompleted(running[0].build_id, "SUCCESS")))
        assert [s.parameters["ZUUL_NEWREV"] for s in after] == ["r2"], manager
