"""A pure test harness for gate scenarios: the engine with a holding fake world.

The fake merger answers every PrepareRef at once (or with a conflict for changes told
to conflict), recording which changes each speculative ref holds. Builds are held
until a test releases them by change and job; the source merges on request unless
told to refuse. Everything is stepped: no threads, no sleeping.
"""
from __future__ import annotations

from typing import Iterable

from ccci_gate.core import actions as act
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig, WindowConfig
from ccci_gate.core.model import Change

JOBS = ("build", "test")


def gate_layout(window: WindowConfig | None = None, retest: bool = False,
                projects: Iterable[str] = ("org/a",), batch: bool = False,
                jobs: tuple[str, ...] = JOBS) -> Layout:
    return Layout(
        pipelines={
            "gate": PipelineConfig("gate", manager="dependent", triggers={"admin": ()},
                                   window=window or WindowConfig(), batch=batch,
                                   reporters={p: {"memo": {}} for p in
                                              ("success", "failure", "merge-failure")}),
            "check": PipelineConfig("check", triggers={"admin": ()}, retest_on_merge=retest,
                                    reporters={"success": {"memo": {}}, "failure": {"memo": {}}}),
        },
        projects={p: ProjectConfig(p, queue="shared", pipelines={"gate": jobs, "check": jobs})
                  for p in projects},
        jobs={"build": JobConfig("build"), "test": JobConfig("test", requires=("build",))})


def change(n: int, project: str = "org/a", sha: str | None = None) -> Change:
    return Change(project, "main", f"refs/pull/{n}/head", number=n,
                  patchset=sha or f"sha{n}", sha=sha or f"sha{n}")


class Gate:
    """Steps an engine; answers merger and source actions like a well-behaved world."""

    def __init__(self, layout: Layout | None = None):
        self.engine = Engine(layout or gate_layout(), clock=lambda: 0.0)
        self.conflicts: set[int] = set()
        self.refuse: dict[int, int] = {}
        self.hold_merges = False
        self.tip = 0
        self.prepared: list[tuple[int, ...]] = []     # changes of every speculative ref
        self.builds: dict[tuple[int, str], str] = {}  # (change, job) → live build id
        self.holds: dict[str, tuple[int, ...]] = {}   # build id → changes in its ref
        self.build_runs = 0
        self.cancelled: list[str] = []
        self.reports: list[act.Report] = []
        self.merges: list[int] = []
        self.pending_merges: list[act.MergeChange] = []
        self.pending_refs: list[act.PrepareRef] = []
        self.hold_refs = False

    # --- driving ------------------------------------------------------------------------

    def send(self, event: ev.Event) -> None:
        self._apply(self.engine.handle(event))

    def _apply(self, actions: list[act.Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, act.PrepareRef):
                if self.hold_refs:
                    self.pending_refs.append(action)
                    continue
                queue += self._prepare(action)
            elif isinstance(action, act.StartBuild):
                number = int(action.parameters["ZUUL_CHANGE"] or 0) if "ZUUL_CHANGE" in action.parameters else 0
                self.builds[(number, action.parameters["JOB_NAME"])] = action.build_id
                self.holds[action.build_id] = tuple(
                    int(part.rsplit("/", 2)[-2]) for part in action.parameters["ZUUL_CHANGES"].split("^"))
                self.build_runs += 1
            elif isinstance(action, act.CancelBuild):
                self.cancelled.append(action.build_id)
                for key in [k for k, v in self.builds.items() if v == action.build_id]:
                    del self.builds[key]
            elif isinstance(action, act.Report):
                self.reports.append(action)
            elif isinstance(action, act.MergeChange):
                if self.hold_merges:
                    self.pending_merges.append(action)
                else:
                    queue += self._merge(action)

    def _prepare(self, action: act.PrepareRef) -> list[act.Action]:
        numbers = tuple(c.number for c in action.changes)
        self.prepared.append(numbers)
        bad = [n for n in numbers if n in self.conflicts]
        if bad:
            return self.engine.handle(ev.MergeFailed(action.buildset_id, True, f"#{bad[0]} conflicts"))
        ref = "refs/zuul/main/" + "-".join(map(str, numbers))
        # each step commit names the tip it was built on and the changes it adds to it
        steps = tuple(f"tip{self.tip}:" + "-".join(map(str, numbers[:k + 1]))
                      for k in range(len(numbers)))
        return self.engine.handle(ev.RefPrepared(action.buildset_id, ref, steps[-1],
                                                 f"tip{self.tip}", steps))

    def _merge(self, action: act.MergeChange) -> list[act.Action]:
        n = action.change.number
        if n in self.refuse:
            return self.engine.handle(ev.MergeRefused(action.item_id, self.refuse[n], "head moved"))
        tested_on, _, held = (action.commit or "").partition(":")
        base = int(tested_on[3:])
        landed = tuple(self.merges[base:]) + (n,)
        already = set(self.merges[:base])  # merging what the tip holds changes nothing
        assert tuple(int(x) for x in held.split("-") if int(x) not in already) == landed, (
            f"#{n} merges at a commit tested as {action.commit}, but the branch would hold "
            f"{landed}: an untested combination")
        self.merges.append(n)
        self.tip += 1
        return self.engine.handle(ev.ItemMerged(action.item_id, f"tip{self.tip}"))

    def release_refs(self) -> None:
        pending, self.pending_refs = self.pending_refs, []
        self.hold_refs = False
        for action in pending:
            self._apply(self._prepare(action))

    def enqueue(self, *numbers: int, pipeline: str = "gate") -> None:
        for n in numbers:
            self.send(ev.EnqueueRequest(pipeline, change(n)))

    def finish(self, n: int, job: str, result: str = "SUCCESS") -> None:
        build_id = self.builds.pop((n, job))
        self.send(ev.BuildCompleted(build_id, result))

    def pass_all(self, *numbers: int) -> None:
        """Let every job of these changes succeed, in graph order."""
        for job in JOBS:
            for n in numbers:
                if (n, job) in self.builds:
                    self.finish(n, job)

    def run_until_quiet(self, fail: Iterable[tuple[int, str]] = ()) -> None:
        """Finish builds until none is left: (change, job) pairs in ``fail`` fail."""
        fail = set(fail)
        while self.builds:
            (n, job) = next(iter(self.builds))
            self.finish(n, job, "FAILURE" if (n, job) in fail else "SUCCESS")

    def run_with_culprits(self, culprits: Iterable[int]) -> None:
        """Finish builds until none is left; a build fails when its ref holds a culprit."""
        culprits = set(culprits)
        while self.builds:
            (n, job), build_id = next(iter(self.builds.items()))
            bad = culprits & set(self.holds[build_id])
            self.finish(n, job, "FAILURE" if bad else "SUCCESS")

    # --- looking ------------------------------------------------------------------------

    def queue(self, pipeline: str = "gate") -> list[int]:
        manager = self.engine.managers[pipeline]
        return [i.change.number for i in manager.items]

    def window(self, pipeline: str = "gate") -> int:
        return self.engine.managers[pipeline].queues[0].window

    def verdicts(self, pipeline: str = "gate") -> list[tuple[int, str]]:
        return [(r.summary["change"]["number"], r.summary["result"]) for r in self.reports
                if r.pipeline == pipeline]
