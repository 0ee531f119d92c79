"""Job kinds: the ways a worker can run a build (``kind:`` of a job).

``shell`` runs a script; the Docker Swarm recipe kinds register here too.
"""
from __future__ import annotations

from .base import BuildContext, JobKind
from .recipe import RecipeBuild, RecipeInstall, RecipePublish
from .systest import RecipeSystest
from .sweep import RecipeSweep
from .shell import ShellKind

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (
    ShellKind(), RecipeBuild(), RecipePublish(), RecipeInstall(), RecipeSystest(),
    RecipeSweep())}


def get_kind(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"no job kind {name!r} on this worker (have: {', '.join(sorted(KINDS))})") from None


__all__ = ["BuildContext", "JobKind", "KINDS", "get_kind"]
