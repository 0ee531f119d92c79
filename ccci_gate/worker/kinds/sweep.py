"""``recipe-sweep``: the nightly sweep of one enrolled recipe on a worker host (the job
``sweep`` of the shipped ``periodic`` pipeline; see ``doc/warm.md``).

1. **Prune** this host: the canonicals of recipes the layout no longer enrols
   (``swarm.warm.prune``, the code of ``ccci-gate warm prune``; the layout's enrolled
   projects come in the job parameter ``CCCI_ENROLLED``), then the images ccci-gate
   imported that no container uses, except the current probe image
   (``SwarmPort.prune_owned_images``). Volumes other than de-enrolled canonicals' are
   never touched, nor images ccci-gate did not make.
2. **Decide**: the recipe's latest release (its newest version tag) runs only when it
   is **newer** than the known-good of its canonical on this host (:func:`newer`: the
   order ``git tag --sort=v:refname`` gives, which the upgrade base reads tags by). A
   recipe with no canonical on this host yet, or a broken one, counts as newer.
   Otherwise the build passes at once and says so in its message — ``up to date: ...``
   — which the item's summary shows beside the job.
3. **Run** the release cold, checked out at its tag: linted (``recipe-build``), then
   ``recipe-systest``'s cold lane from its upgrade base (the canonical's known-good,
   else the newest older tag). Green promotes it (``promote.py``, the same path as any
   green cold branch run at the latest release); red keeps the old known-good.

Every deploy holds one of the host's ``max_tests`` slots (``swarm.host``), so however
many sweep builds a worker runs at once, at most ``max_tests`` apps are up.
"""
from __future__ import annotations

import dataclasses
import re

import docker.errors

from ...git import GitError, git
from ...swarm import probe, warm
from ...swarm.port import SwarmError
from .base import BuildContext
from .promote import latest_release
from .quick import canonical_for
from .recipe import RecipeBuild, recipe_name
from .systest import RecipeSystest, fetch_tags

_PARTS = re.compile(r"\d+|\D+")


def version_key(version: str) -> tuple[tuple[str, int, str], ...]:
    """A sort key ordering versions as ``git tag --sort=v:refname`` orders the tags
    recipes use (``1.13.0+1.31.1``): runs of digits compare as numbers, other runs as
    text, and where a digit meets other text it compares as the character it is."""
    return tuple(("0", int(part), "") if part.isdigit() else (part[0], 0, part)
                 for part in _PARTS.findall(version))


def newer(release: str, known_good: str) -> bool:
    """Whether ``release`` comes after ``known_good`` in version order (pure)."""
    return version_key(release) > version_key(known_good)


def decide(canonical: warm.Canonical | None, tag: str, commit: str) -> tuple[bool, str]:
    """(run it?, why) for the latest release ``tag`` (at ``commit``) against the
    canonical's known-good: a known-good at that very commit is up to date, whatever
    its version says."""
    if canonical is None:
        return False, "the project is not enrolled for a warm canonical: nothing to sweep"
    good = canonical.known_good()
    if good is None:
        return True, f"no canonical of {canonical.recipe} on this host yet"
    version = str(good.get("version", ""))
    if canonical.record().get("status") == "broken":
        return True, (f"the canonical of {canonical.recipe} is broken "
                      f"({canonical.record().get('why', '')}); re-seeding it")
    if good.get("commit") != commit and newer(tag, version):
        return True, f"the latest release {tag} is newer than the known-good {version}"
    return False, (f"up to date: the latest release {tag} is not newer than the "
                   f"canonical's known-good {version}")


class RecipeSweep(RecipeSystest):
    name = "recipe-sweep"

    def run(self, ctx: BuildContext) -> str:
        recipe = recipe_name(ctx)
        ctx.log(f"sweep of {recipe} on this host\n")
        pruned = self.prune(ctx)
        canonical = canonical_for(ctx)
        tag, commit = "", ""
        if canonical is not None:
            try:
                fetch_tags(ctx)
                tag, commit = latest_release(ctx.workspace)
            except GitError as exc:
                ctx.log(f"INFRASTRUCTURE ERROR (git): {exc}\n")
                return "ERROR"
            if not tag:
                return self.said(ctx, "SUCCESS", f"{recipe} has no release tag: nothing to "
                                 f"sweep", pruned)
        go, why = decide(canonical, tag, commit)
        if not go:
            return self.said(ctx, "SUCCESS", why, pruned)
        assert canonical is not None
        old = (canonical.known_good() or {}).get("version") or "none"
        ctx.log(f"sweep: {why}; running {tag} (commit {commit[:8]}) cold\n")
        try:
            git(ctx.workspace, "checkout", "-q", "--detach", commit)
        except GitError as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (git): {exc}\n")
            return "ERROR"
        release = dataclasses.replace(ctx, parameters={
            **ctx.parameters, "ZUUL_COMMIT": commit, "CCCI_QUICK": "0", "CCCI_ARTIFACTS": ""})
        result = RecipeBuild().run(release)
        if result == "SUCCESS":
            result = super().run(release)     # the cold lane, then the promotion
        good = canonical.known_good() or {}
        if result == "SUCCESS" and good.get("commit") == commit:
            return self.said(ctx, result, f"promoted {tag} (commit {commit[:8]}): the "
                             f"canonical's known-good was {old}", pruned)
        if result == "SUCCESS":
            return self.said(ctx, result, f"{tag} passed cold but was not promoted (see the "
                             f"log); the known-good stays {old}", pruned)
        red = "is red" if result in ("FAILURE", "TIMED_OUT") else "did not finish"
        return self.said(ctx, result, f"{tag} {red} ({result}): the canonical keeps its "
                         f"known-good {old}", pruned)

    def said(self, ctx: BuildContext, result: str, message: str, pruned: str) -> str:
        ctx.message = message + (f"; {pruned}" if pruned else "")
        ctx.log(f"sweep: {ctx.message}\n")
        return result

    def prune(self, ctx: BuildContext) -> str:
        """Prune this host (warm data of de-enrolled recipes, then our unused images);
        returns what to add to the build's message ('' when nothing was freed)."""
        said = []
        enrolled_param = ctx.parameters.get("CCCI_ENROLLED")
        enrolled = warm.recipes_of((enrolled_param or "").split())
        try:
            if enrolled_param is None:
                ctx.log("prune: warm data not pruned: the job gives no CCCI_ENROLLED\n")
            elif ctx.parameters.get("CCCI_WARM") == "1" and recipe_name(ctx) not in enrolled:
                ctx.log(f"prune: warm data not pruned: CCCI_ENROLLED ({enrolled_param!r}) "
                        f"does not name {recipe_name(ctx)}, which is enrolled\n")
            else:
                dropped = warm.prune(self.port, warm.default_root(), enrolled, log=ctx.log)
                if dropped:
                    said.append(f"pruned the canonicals of {', '.join(dropped)}")
            images, freed = self.port.prune_owned_images(keep=frozenset({probe.IMAGE}))
            ctx.log(f"prune: {len(images)} image(s) ccci-gate imported and no container uses "
                    f"removed ({freed} bytes){': ' + ', '.join(images) if images else ''}\n")
            if images:
                said.append(f"pruned {len(images)} image(s)")
        except (SwarmError, docker.errors.DockerException, OSError) as exc:
            ctx.log(f"PRUNE FAILED (infrastructure; the sweep goes on): {exc}\n")
            said.append(f"prune failed: {exc}")
        return "; ".join(said)
