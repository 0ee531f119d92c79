"""The pure engine stepped event by event, with no I/O: job graph, retries, reporting."""
from __future__ import annotations

import pytest

from ccci_gate.core import actions as act
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig
from ccci_gate.core.model import Change
from ccci_gate.core.triggers import TriggerFilter

GRAPH = ("build", "publish", "install", "systest", "lint")


def layout(**job_overrides) -> Layout:
    jobs = {
        "build": JobConfig("build"),
        "publish": JobConfig("publish", requires=("build",)),
        "install": JobConfig("install", requires=("publish",)),
        "systest": JobConfig("systest", requires=("install",)),
        "lint": JobConfig("lint", voting=False),
    }
    jobs.update({k: v for k, v in job_overrides.items()})
    return Layout(
        pipelines={"check": PipelineConfig("check", triggers={"admin": ()},
                                           reporters={"success": {"log": {}}, "failure": {"log": {}},
                                                      "start": {"log": {}}})},
        projects={"org/recipe": ProjectConfig("org/recipe", pipelines={"check": GRAPH})},
        jobs=jobs)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CHANGE = Change("org/recipe", "main", "refs/pull/7/head", number=7, patchset="abc", sha="abc")


class Harness:
    """Feeds events to an engine and remembers every action it asked for."""

    def __init__(self, lay: Layout | None = None) -> None:
        self.engine = Engine(lay or layout(), clock=Clock(), zuul_url="http://gk/git")
        self.actions: list[act.Action] = []

    def send(self, event: ev.Event) -> list[act.Action]:
        out = self.engine.handle(event)
        self.actions += out
        return out

    def started(self) -> dict[str, act.StartBuild]:
        return {a.parameters["JOB_NAME"]: a for a in self.actions if isinstance(a, act.StartBuild)}

    def finish(self, job: str, result: str | None) -> list[act.Action]:
        build_id = [a for a in self.actions if isinstance(a, act.StartBuild)
                    and a.parameters["JOB_NAME"] == job][-1].build_id
        return self.send(ev.BuildCompleted(build_id, result))

    def reports(self) -> list[act.Report]:
        return [a for a in self.actions if isinstance(a, act.Report)]

    def ready(self) -> None:
        self.send(ev.EnqueueRequest("check", CHANGE))
        prep = [a for a in self.actions if isinstance(a, act.PrepareRef)][-1]
        self.send(ev.RefPrepared(prep.buildset_id, "refs/zuul/main/Zx", "deadbeef"))


def test_enqueue_asks_for_a_speculative_ref_then_starts_roots_in_parallel():
    h = Harness()
    out = h.send(ev.EnqueueRequest("check", CHANGE))
    assert [type(a) for a in out] == [act.Report, act.PrepareRef]
    assert out[1].changes == (CHANGE,)
    h.send(ev.RefPrepared(out[1].buildset_id, "refs/zuul/main/Zx", "deadbeef"))
    assert set(h.started()) == {"build", "lint"}
    params = h.started()["build"].parameters
    assert params["ZUUL_REF"] == "refs/zuul/main/Zx"
    assert params["ZUUL_URL"] == "http://gk/git"
    assert params["ZUUL_CHANGE"] == "7" and params["ZUUL_PROJECT"] == "org/recipe"


def test_graph_runs_in_order_and_item_succeeds():
    h = Harness()
    h.ready()
    for job in ("build", "publish", "install", "systest"):
        h.finish(job, "SUCCESS")
    assert not h.reports()[1:]  # lint still running
    h.finish("lint", "FAILURE")  # non-voting
    final = h.reports()[-1]
    assert final.phase == "success"
    assert final.summary["result"] == "SUCCESS"
    assert {j["name"]: j["result"] for j in final.summary["jobs"]}["lint"] == "FAILURE"


def test_failed_parent_skips_descendants_which_are_never_dispatched():
    h = Harness()
    h.ready()
    h.finish("build", "SUCCESS")
    h.finish("lint", "SUCCESS")
    h.finish("publish", "SUCCESS")
    h.finish("install", "FAILURE")
    assert "systest" not in h.started()
    final = h.reports()[-1]
    assert final.phase == "failure"
    results = {j["name"]: j["result"] for j in final.summary["jobs"]}
    assert results == {"build": "SUCCESS", "publish": "SUCCESS", "install": "FAILURE",
                       "systest": "SKIPPED", "lint": "SUCCESS"}


def test_lost_attempts_are_retried_then_retry_limit_is_an_infra_error():
    h = Harness(layout(build=JobConfig("build", attempts=2)))
    h.ready()
    h.finish("lint", "SUCCESS")
    first = h.started()["build"].build_id
    h.finish("build", None)
    second = h.started()["build"]
    assert second.build_id != first and second.parameters["BUILD_ATTEMPT"] == "2"
    h.finish("build", None)
    final = h.reports()[-1]
    assert final.summary["result"] == "ERROR"
    assert {j["name"]: j["result"] for j in final.summary["jobs"]}["build"] == "RETRY_LIMIT"


def test_not_registered_is_reported_at_once_as_infra_error():
    h = Harness()
    h.ready()
    build_id = h.started()["build"].build_id
    h.send(ev.BuildCompleted(build_id, None, not_registered=True))
    h.finish("lint", "SUCCESS")
    final = h.reports()[-1]
    assert {j["name"]: j["result"] for j in final.summary["jobs"]}["build"] == "NOT_REGISTERED"
    assert final.summary["result"] == "ERROR"


def test_results_for_a_stale_buildset_are_ignored():
    h = Harness()
    h.ready()
    old = h.started()["build"].build_id
    h.send(ev.EnqueueRequest("check", Change("org/recipe", "main", "refs/pull/7/head",
                                             number=7, patchset="def", sha="def")))
    cancels = [a for a in h.actions if isinstance(a, act.CancelBuild)]
    assert old in {c.build_id for c in cancels}
    assert h.send(ev.BuildCompleted(old, "SUCCESS")) == []


def test_merge_conflict_reports_merge_failure_without_jobs():
    h = Harness()
    h.send(ev.EnqueueRequest("check", CHANGE))
    prep = [a for a in h.actions if isinstance(a, act.PrepareRef)][-1]
    h.send(ev.MergeFailed(prep.buildset_id, conflict=True, message="conflict in compose.yml"))
    assert not h.started()
    assert h.reports()[-1].phase == "merge-failure"
    assert h.reports()[-1].summary["failing_reason"] == "conflict in compose.yml"


def test_merger_error_is_retried_not_a_conflict():
    h = Harness()
    h.send(ev.EnqueueRequest("check", CHANGE))
    prep = [a for a in h.actions if isinstance(a, act.PrepareRef)][-1]
    out = h.send(ev.MergeFailed(prep.buildset_id, conflict=False, message="fetch failed"))
    assert [type(a) for a in out] == [act.PrepareRef]


def test_dequeue_cancels_builds_and_ends_the_start_report_without_a_verdict():
    h = Harness()
    h.ready()
    out = h.send(ev.DequeueRequest(CHANGE.key))
    assert {type(a) for a in out} == {act.CancelBuild, act.Report}
    assert [r.phase for r in h.reports()] == ["start", "dequeue"]
    summary = h.reports()[-1].summary
    assert (summary["state"], summary["result"]) == ("DEQUEUED", None)
    assert summary["message"] == "dequeued by an operator"
    assert h.reports()[-1].reporters == h.reports()[0].reporters


def test_an_item_never_started_leaves_without_any_report():
    h = Harness()
    h.engine.managers["check"].paused = True   # held: never active, its start unreported
    h.send(ev.EnqueueRequest("check", CHANGE))
    h.send(ev.DequeueRequest(CHANGE.key))
    assert h.reports() == []


def test_reconfigure_keeps_builds_in_flight():
    h = Harness()
    h.ready()
    running = {a.build_id for a in h.started().values()}
    old = layout()
    new = Layout(pipelines={"check": PipelineConfig("check", description="reloaded",
                                                    triggers={"admin": ()},
                                                    reporters=old.pipelines["check"].reporters)},
                 projects={"org/recipe": ProjectConfig("org/recipe", pipelines={"check": ("lint",)})},
                 jobs=old.jobs)
    out = h.send(ev.ReconfigureRequest(new))
    assert not any(isinstance(a, act.CancelBuild) for a in out)
    assert h.engine.layout is new and h.engine.status()["pipelines"][0]["description"] == "reloaded"
    for job in ("build", "publish", "install", "systest", "lint"):
        h.finish(job, "SUCCESS")           # the item in flight keeps its own job graph
    assert h.reports()[-1].phase == "success"
    assert running <= {a.build_id for a in h.actions if isinstance(a, act.StartBuild)}
    other = Change("org/recipe", "main", "refs/pull/8/head", number=8, patchset="def", sha="def")
    h.send(ev.EnqueueRequest("check", other))   # a new item runs what the new layout says
    prep = [a for a in h.actions if isinstance(a, act.PrepareRef)][-1]
    out = h.send(ev.RefPrepared(prep.buildset_id, "refs/zuul/main/Zy", "cafe"))
    assert [a.parameters["JOB_NAME"] for a in out if isinstance(a, act.StartBuild)] == ["lint"]


@pytest.mark.parametrize("text,expected", [("!testme", True), ("!testmexyz", False),
                                           ("!testme --quick", False)])
def test_comment_trigger_filters(text, expected):
    lay = layout()
    lay = Layout(pipelines={"check": PipelineConfig(
        "check", triggers={"gitea": (TriggerFilter((ev.CommentAdded,), comment=(r"^!testme\s*$",)),)})},
        projects=lay.projects, jobs=lay.jobs)
    h = Harness(lay)
    h.send(ev.CommentAdded("gitea", CHANGE, authorized=True, comment=text))
    assert any(isinstance(a, act.PrepareRef) for a in h.actions) is expected


def test_unauthorized_comment_never_runs():
    lay = layout()
    lay = Layout(pipelines={"check": PipelineConfig(
        "check", triggers={"gitea": (TriggerFilter((ev.CommentAdded,), comment=(r"^!testme\s*$",)),)})},
        projects=lay.projects, jobs=lay.jobs)
    h = Harness(lay)
    h.send(ev.CommentAdded("gitea", CHANGE, comment="!testme", authorized=False))
    assert h.actions == []


def test_an_item_moves_only_along_its_lifecycle():
    from ccci_gate.core.model import IllegalTransition, Item, ItemState

    h = Harness()
    h.ready()
    [item] = [i for m in h.engine.managers.values() for i in m.items]
    assert item.state is ItemState.TESTING and item.active
    with pytest.raises(IllegalTransition):
        item.advance(ItemState.MERGED)                # only a merge request leads there
    for job in GRAPH:
        h.finish(job, "SUCCESS")
    assert item.state is ItemState.REPORTED
    with pytest.raises(IllegalTransition):
        item.advance(ItemState.TESTING)               # reported is final
    assert Item.__dataclass_fields__.keys() >= {"state", "result"}
    assert not {"active", "reported_start", "dequeued", "live", "merge_requested", "merged",
                "proven", "aside", "probe_failed"} & Item.__dataclass_fields__.keys()


def test_every_event_class_has_its_handler_and_nothing_else_is_handled():
    import inspect
    classes = {c for c in vars(ev).values() if inspect.isclass(c) and issubclass(c, ev.Event)
               and c not in (ev.Event, ev.TriggerEvent)}
    assert classes == set(Engine.HANDLERS)
    assert set(ev.TRIGGER_EVENTS) <= classes

    class Stranger(ev.Event):
        pass

    h = Harness()
    assert h.send(Stranger()) == [] and h.engine.log[-1] == "ignored event Stranger"


def test_a_closed_change_leaves_every_pipeline_without_a_verdict():
    h = Harness()
    h.ready()
    out = h.send(ev.ChangeClosed("gitea", CHANGE))
    assert {type(a) for a in out} == {act.CancelBuild, act.Report}
    assert [r.phase for r in h.reports()] == ["start", "dequeue"]
    assert h.reports()[-1].summary["message"] == "change closed at its source"
    assert h.engine.status()["pipelines"][0]["queues"] == []
