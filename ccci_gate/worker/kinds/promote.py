"""Promotion: a green cold ``recipe-systest`` re-seeds the recipe's warm canonical.

Only when all of these hold (else the log says which did not):

- the project is enrolled (``warm: true`` in the layout, ``CCCI_WARM=1``);
- the cold lane ran (never quick: ``CCCI_QUICK`` is not 1);
- the item is a branch or tag, not a change (no ``ZUUL_CHANGE``: post, periodic);
- the head is the recipe's latest release: the newest version tag points at it.

Then, holding a host slot and the canonical's lock: the canonical's stack is removed
(volumes too: a fresh first boot), its secrets generated and kept, the tested recipe
deployed at the canonical's name and waited for, ``tests/ccci-seed`` run, the app
undeployed (volumes kept), snapshotted, the snapshot swapped in atomically naming the
new good, and ``last_good.json`` written. Any failure before the swap leaves the old
known-good in place (and its unreferenced new files removed); the build is then an
ERROR with a ``PROMOTION FAILED`` line, the cold verdict itself having been green.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path

import docker.errors

from ...git import GitError, out
from ...swarm.deploy import App
from ...swarm.port import SwarmError
from ...swarm.recipe import RecipeError
from ...swarm.snapshot import snapshot
from ...swarm.warm import secret_names
from .base import BuildContext
from .bundle import StoreError, make_bundle
from .quick import base_domain, canonical_for
from .recipe import scratch
from .systest import SEED_HOOK


def why_not(ctx: BuildContext) -> str:
    """Why this green cold run does not promote ('' when it does)."""
    if ctx.parameters.get("CCCI_WARM") != "1":
        return "the project is not enrolled for a warm canonical"
    if ctx.parameters.get("CCCI_QUICK") == "1":
        return "quick runs never promote"
    if ctx.parameters.get("ZUUL_CHANGE"):
        return "a change under test (only branch runs promote)"
    tag, commit = latest_release(ctx.workspace)
    if not tag:
        return "the recipe has no release tag"
    if commit != out(ctx.workspace, "rev-parse", "HEAD"):
        return f"the head is not the latest release {tag}"
    return ""


def latest_release(ws: Path) -> tuple[str, str]:
    """The recipe's latest release: its newest version tag (git's version sort, as the
    upgrade base reads tags) and that tag's commit; ``("", "")`` without tags."""
    tags = [t for t in out(ws, "tag", "--sort=-v:refname", check=False).split() if t]
    if not tags:
        return "", ""
    return tags[0], out(ws, "rev-list", "-n1", f"refs/tags/{tags[0]}", check=False)


class Promotion:
    def __init__(self, kind):   # kind: the RecipeSystest that just ran green, cold
        self.kind = kind

    def run(self, ctx: BuildContext) -> str:
        why = why_not(ctx)
        if why:
            if ctx.parameters.get("CCCI_WARM") == "1":
                ctx.log(f"no promotion of the canonical: {why}\n")
            return "SUCCESS"
        canonical = canonical_for(ctx)
        assert canonical is not None
        old = canonical.known_good()
        try:
            with self.kind.host.slot(wait=lambda: not ctx.stopped, log=ctx.log):
                with canonical.lock(lambda: not ctx.stopped, self.kind.remaining(ctx, 600),
                                    ctx.log):
                    self.promote(ctx, canonical, old)
            return "SUCCESS"
        except (SwarmError, RecipeError, GitError, StoreError, OSError,
                docker.errors.DockerException) as exc:
            ctx.log(f"PROMOTION FAILED (infrastructure; the systest itself passed): {exc}; "
                    f"the known-good stays "
                    f"{old.get('version') if old else '(none: never seeded)'}\n")
            try:
                canonical.set_record(status=canonical.record().get("was", "unseeded"))
                canonical.prune_goods()
            except OSError:
                pass
            return "ERROR"

    def promote(self, ctx: BuildContext, canonical, old: dict | None) -> None:
        kind, port = self.kind, self.kind.port
        recipe = kind.recipe(ctx, canonical.domain(base_domain(ctx)))
        commit = ctx.parameters.get("ZUUL_COMMIT") or out(ctx.workspace, "rev-parse", "HEAD")
        was = canonical.record().get("status")
        was = was if old and was in ("ready", "broken") else "ready" if old else "unseeded"
        canonical.set_record(status="seeding", was=was, stack=recipe.stack,
                             domain=recipe.domain)
        ctx.log(f"promoting {recipe.name} {recipe.version()} (commit {commit[:8]}) to the "
                f"canonical {recipe.stack} (known-good was "
                f"{old.get('version') if old else 'none'}; status {was})\n")
        started = time.monotonic()
        app = App(port, recipe, ctx.log, ctx.stop)
        port.purge(app.stack, kill=True)   # a fresh first boot: nothing of it is kept
        try:
            values = {name: secrets.token_urlsafe(24) for name in secret_names(recipe)}
            for name, value in values.items():
                port.create_secret(name, value.encode(), app.stack)
            kind.cold_deploy(ctx, app, commit)
            state = scratch(ctx, "warm-seed-state")
            seeded = kind.hook(ctx, app, recipe, SEED_HOOK, state)
        finally:
            port.purge(app.stack, keep_volumes=True)   # data-warm; a quick run restores
        good = canonical.new_good(make_bundle(recipe), values, state)
        meta = {"recipe": recipe.name, "domain": recipe.domain, "version": recipe.version(),
                "commit": commit, "good": good, "seeded": seeded}
        snapshot(port, app.stack, canonical.snapshots, meta)      # the atomic swap
        canonical.promoted({**meta, "stack": app.stack})
        canonical.prune_goods()
        ctx.log(f"promoted: the canonical {app.stack} is now known-good at {recipe.version()} "
                f"(commit {commit[:8]}{', seeded by tests/ccci-seed' if seeded else ''}) in "
                f"{time.monotonic() - started:.1f}s\n")
