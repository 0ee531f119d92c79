"""Actions: what the pure managers ask the outside world to do.

The scheduler hands each action to the port that carries it out (merger, dispatcher,
reporters, source). Actions are immutable values; results come back as events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .layout import JobConfig
from .model import Change


@dataclass(frozen=True)
class Action:
    """Base of all actions."""


@dataclass(frozen=True)
class PrepareRef(Action):
    """Build the speculative ref for a buildset: ``changes`` merged in order onto the
    tip of ``branch`` of ``project`` (a ref item: just that ref). Answered by
    ``RefPrepared`` or ``MergeFailed``."""

    buildset_id: str
    project: str
    branch: str
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class StartBuild(Action):
    """Submit a build to Gearman. Answered by ``BuildStarted``/``BuildProgress``/
    ``BuildCompleted``. ``job`` is the job as the buildset holds it (its worker runs that
    definition: ``jobdefs.py``). ``prefer``: functions to submit it as instead of
    ``function``, the first one some worker has registered (the host holding a recipe's
    canonical, ``core.layout.warm_function``); ``function`` when none has."""

    build_id: str
    function: str
    parameters: Mapping[str, str]
    precedence: str = "normal"
    timeout: int | None = None
    job: JobConfig | None = field(default=None, compare=False)
    prefer: tuple[str, ...] = ()


@dataclass(frozen=True)
class CancelBuild(Action):
    """Remove a queued build from Gearman, or stop a running one."""

    build_id: str


@dataclass(frozen=True)
class Report(Action):
    """Tell the pipeline's reporters for ``phase`` about an item.

    ``summary`` is a plain snapshot (see ``core.status.item_summary``) so reporters
    on other threads never touch scheduler state.
    """

    item_id: str
    pipeline: str
    phase: str
    reporters: Mapping[str, Mapping] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeChange(Action):
    """Merge a change at its source (dependent pipelines): ``sha`` is the tested head.
    ``triggers`` are the pipeline's trigger filters, for a source that checks, just before
    merging, that the change still meets what let it in (Gerrit's approvals)."""

    item_id: str
    change: Change
    sha: str | None
    commit: str | None = None  # the tested speculative commit (a git source pushes it)
    branch: str = ""
    triggers: Mapping[str, tuple] = field(default_factory=dict)
