"""Running an item's job graph: start what is ready, skip what can no longer run, retry
lost attempts, cancel, and run a job again on the operator's word.

Mixed into :class:`~.base.PipelineManager` (it uses the manager's ``config``,
``layout``, ``ctx`` and ``journal``). Pure: it returns actions. An item that starts
failing is noticed by the next walk of its queue (a gate then retests those behind it
without it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from ..actions import Action, CancelBuild, StartBuild
from ..layout import WARM_KINDS, warm_function
from ..model import Build, BuildState, Item, ItemState, Result
from ..params import ParameterError, build_parameters

if TYPE_CHECKING:
    from ..layout import JobConfig, Layout, PipelineConfig
    from .context import Journal, ManagerContext


def warm_preference(job: "JobConfig", params: Mapping[str, str]) -> tuple[str, ...]:
    """Where a build should run to use its recipe's warm canonical: a build of a
    canonical-using kind (``WARM_KINDS``) of an enrolled project (``CCCI_WARM``) that
    is quick (it upgrades the canonical) or of a branch or tag (a green one may
    promote it: re-seeding the canonical where it is keeps one per recipe; the sweep
    compares with its known-good) prefers the workers labelled ``warm:<recipe>``. A
    cold check of a change does not: it needs no canonical and may run on any host."""
    if job.kind not in WARM_KINDS or params.get("CCCI_WARM") != "1":
        return ()
    if params.get("CCCI_QUICK") != "1" and params.get("ZUUL_CHANGE"):
        return ()
    recipe = params.get("RECIPE") or params.get("ZUUL_PROJECT", "").rsplit("/", 1)[-1]
    function = warm_function(job.function, recipe)
    return (function,) if function else ()


class BuildRunner:
    """Builds of the current buildset of an item."""

    config: "PipelineConfig"
    layout: "Layout"
    ctx: "ManagerContext"
    journal: "Journal"

    def launch(self, item: Item) -> list[Action]:
        """Skip what can no longer run; start what is ready (nothing new while the
        pipeline is paused: finished builds are still reported and merged)."""
        bs = item.buildset
        assert bs is not None
        now = self.ctx.clock()
        results = {j: r.value for j, r in bs.results().items()}
        actions: list[Action] = []
        for job in bs.graph.to_skip(results, bs.builds):
            bs.builds[job.name] = Build(job.name, bs.id, state=BuildState.COMPLETED,
                                        result=Result.SKIPPED, voting=job.voting,
                                        enqueued_at=now, finished_at=now)
            self.journal.touch(item)
        for job in ([] if self.paused else bs.graph.ready(results, bs.builds)):
            build = Build(job.name, bs.id, voting=job.voting, enqueued_at=now)
            bs.builds[job.name] = build
            actions += self.start(item, build)
        if item.result is None and bs.failing():
            item.result = Result.FAILURE
            item.failing_reason = bs.failure_reason()
        return actions

    def start(self, item: Item, build: Build) -> list[Action]:
        bs = item.buildset
        assert bs is not None
        job = bs.graph.job(build.job)
        build.log_url = self.ctx.log_url(build.id)
        self.journal.touch(item)
        try:
            project = self.layout.projects.get(item.change.project)
            params = build_parameters(item, bs, build, job, self.ctx.zuul_url, build.log_url,
                                      self.ctx.artifacts_url(bs.id),
                                      warm=project is not None and project.warm,
                                      enrolled=self.layout.enrolled())
        except ParameterError as exc:
            return self.complete_build(item, build, Result.ERROR, str(exc))
        return [StartBuild(build.id, job.function, params, self.config.precedence, job.timeout,
                           job=job, prefer=warm_preference(job, params))]

    def retrigger(self, item: Item, job: str) -> list[str]:
        """Forget the results of ``job`` and what requires it, so they run again.

        Returns the jobs that will run again; the other results stand.
        """
        bs = item.buildset
        assert bs is not None
        if item.merging:
            return []  # passed and being merged: nothing to run again
        again = [job, *bs.graph.descendants(job)]
        for name in again:
            build = bs.builds.get(name)
            if build is not None and not build.done:
                return []  # still running: nothing to retrigger yet
        for name in again:
            bs.builds.pop(name, None)
        item.result = None
        item.failing_reason = ""
        item.advance(ItemState.TESTING)
        self.journal.touch(item)
        return again

    def cancel_builds(self, item: Item) -> list[Action]:
        actions: list[Action] = []
        if item.buildset is None:
            return actions
        for build in item.buildset.builds.values():
            if not build.done:
                actions.append(CancelBuild(build.id))
                build.state = BuildState.COMPLETED
                build.result = Result.CANCELED
                build.finished_at = self.ctx.clock()
        self.journal.touch(item)
        return actions

    def complete_build(self, item: Item, build: Build, result: Result | None, message: str = "",
                       not_registered: bool = False) -> list[Action]:
        """Record a build's end; ``result`` None means the attempt was lost: retry.
        A build that is done already, or of an older buildset, is ignored."""
        bs = item.buildset
        if bs is None or bs.builds.get(build.job) is not build or build.done:
            return []
        self.journal.touch(item)
        build.finished_at = self.ctx.clock()
        build.message = message
        build.state = BuildState.COMPLETED
        if not_registered:
            build.result = Result.NOT_REGISTERED
            return []
        if result is None:
            job = bs.graph.job(build.job)
            if build.attempt < job.attempts:
                retry = Build(build.job, bs.id, attempt=build.attempt + 1, voting=build.voting,
                              enqueued_at=self.ctx.clock(),
                              earlier_logs=(*build.earlier_logs, build.log_url))
                bs.builds[build.job] = retry
                return self.start(item, retry)
            build.result = Result.RETRY_LIMIT
            return []
        build.result = result
        return []
