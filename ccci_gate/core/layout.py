"""The layout as the core sees it: frozen, validated configuration values.

Vocabulary:
- **layout**: pipelines, projects and jobs read from ``layouts/`` and ``jobs/``
  (see :mod:`ccci_gate.config` for the YAML and its schema).
- **job**: one unit of work a worker runs (``build:<job>`` on Gearman), with its place in
  the job graph (``requires``), its retry budget (``attempts``) and its filters.
- **pipeline**: trigger → manager → reporters; ``manager`` orders its items.
- **project**: a repository and, per pipeline, the jobs it runs there.

Nothing here does I/O: these are the values the loader builds and the managers read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from .triggers import TriggerFilter

MANAGERS = ("independent", "dependent", "serial", "supercedent")
PRECEDENCES = ("high", "normal", "low")
REPORT_PHASES = ("start", "success", "failure", "merge-failure")

_EMPTY: Mapping = MappingProxyType({})


def build_function(job: str, label: str | None = None) -> str:
    """The Gearman function that runs ``job`` (Zuul v2): ``build:<job>`` or, for a job
    that needs a labelled worker, ``build:<job>:<label>``. The one definition:
    ``gearman.protocol`` uses this one."""
    return f"build:{job}:{label}" if label else f"build:{job}"


def safe_path(path: str) -> bool:
    """Whether ``path`` is a plain relative path that cannot leave the folder it is read
    under: a job's ``run`` (checked by the layout schema, and again by a worker for a
    definition it fetched, ``worker/jobdefs.py``)."""
    return bool(path) and "\\" not in path and not path.startswith("/") \
        and all(part not in ("", ".", "..") for part in path.split("/"))


# job kinds that use a recipe's warm canonical: quick runs upgrade it, green cold runs
# promote it, the sweep compares the latest release with its known-good
WARM_KINDS = ("recipe-systest", "recipe-sweep")
_WARM_RECIPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def warm_label(recipe: str) -> str | None:
    """``warm:<recipe>``: the label a worker registers automatically for each usable
    canonical its host holds (``swarm.warm``); None for a recipe name that cannot be
    part of a Gearman function name."""
    return f"warm:{recipe}" if _WARM_RECIPE.match(recipe or "") else None


def warm_function(function: str, recipe: str) -> str | None:
    """The function of a job's build on the host holding ``recipe``'s canonical:
    ``<function>:warm:<recipe>`` (e.g. ``build:systest:warm:hello``), or None."""
    label = warm_label(recipe)
    return f"{function}:{label}" if label else None


@dataclass(frozen=True)
class JobConfig:
    """A job: what runs (``kind``/``run``), where it sits in the graph and how it retries."""

    name: str
    kind: str = "shell"
    run: str | None = None
    requires: tuple[str, ...] = ()
    voting: bool = True
    attempts: int = 3
    timeout: int | None = None
    label: str | None = None
    branches: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def function(self) -> str:
        """The Gearman function a worker registers for this job."""
        return build_function(self.name, self.label)

    def matches(self, branch: str, files: tuple[str, ...] | None) -> bool:
        """Whether the job applies to a change on ``branch`` touching ``files``.

        ``files`` is ``None`` when unknown (a ref item): file filters then match.
        """
        if self.branches and not any(re.fullmatch(b, branch) for b in self.branches):
            return False
        if self.files and files is not None:
            return any(re.search(p, f) for p in self.files for f in files)
        return True


@dataclass(frozen=True)
class WindowConfig:
    """Adaptive window of a dependent pipeline (Zuul's defaults)."""

    start: int = 20
    floor: int = 3
    increase: int = 1
    decrease_factor: int = 2


@dataclass(frozen=True)
class PipelineConfig:
    """A pipeline: which events enter it, how items are ordered, who hears the results.

    ``triggers`` maps a driver name (``gitea``, ``timer``, ``admin``...) to its filters,
    already translated by that driver into core :class:`~.triggers.TriggerFilter`
    values. ``reporters`` maps a phase (``start``, ``success``, ``failure``,
    ``merge-failure``) to ``{driver: options}``.
    """

    name: str
    manager: str = "independent"
    description: str = ""
    precedence: str = "normal"
    triggers: Mapping[str, tuple["TriggerFilter", ...]] = field(default_factory=dict)
    reporters: Mapping[str, Mapping[str, Mapping]] = field(default_factory=dict)
    window: WindowConfig = field(default_factory=WindowConfig)
    retest_on_merge: bool = False
    quick: bool = False
    batch: bool = False
    batch_max: int = 8

    def reporters_for(self, phase: str) -> Mapping[str, Mapping]:
        return self.reporters.get(phase, _EMPTY)


@dataclass(frozen=True)
class ProjectConfig:
    """A project: its connection and, per pipeline, the names of the jobs it runs."""

    name: str
    connection: str | None = None
    queue: str | None = None
    pipelines: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    warm: bool = False      # enrolled for a warm canonical (doc/warm.md)


@dataclass(frozen=True)
class Layout:
    """The whole validated configuration the scheduler runs on."""

    pipelines: Mapping[str, PipelineConfig] = field(default_factory=dict)
    projects: Mapping[str, ProjectConfig] = field(default_factory=dict)
    jobs: Mapping[str, JobConfig] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def enrolled(self) -> tuple[str, ...]:
        """The projects enrolled for a warm canonical (``warm: true``), sorted."""
        return tuple(sorted(name for name, project in self.projects.items() if project.warm))

    def shared_queue(self, project: str) -> str:
        """The name of the queue ``project`` shares with others (its ``queue``), or its
        own name: the one definition serial and dependent pipelines use."""
        proj = self.projects.get(project)
        return proj.queue if proj is not None and proj.queue else project

    def jobs_for(self, project: str, pipeline: str, branch: str,
                 files: tuple[str, ...] | None = None) -> tuple[JobConfig, ...]:
        """The jobs ``project`` runs in ``pipeline`` for a change on ``branch``.

        A job whose filters exclude the change is dropped, and so is every job that
        requires it (it could never start).
        """
        proj = self.projects.get(project)
        if proj is None:
            return ()
        names = proj.pipelines.get(pipeline, ())
        kept: dict[str, JobConfig] = {}
        for name in names:
            job = self.jobs[name]
            if job.matches(branch, files):
                kept[name] = job
        changed = True
        while changed:
            changed = False
            for name, job in list(kept.items()):
                if any(r not in kept for r in job.requires):
                    del kept[name]
                    changed = True
        return tuple(kept.values())
