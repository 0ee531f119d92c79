"""``recipe-systest``: a chaos upgrade from the last release to the head, checked honestly.

1. Deploy the **upgrade base** cold (see ``upgrade_base``) and wait until it runs
   healthy.
2. **Seed**: the recipe's own ``tests/ccci-seed`` writes data through the app; a token
   also goes into every volume.
3. **Upgrade** in place to the head (chaos, labelled with the head's short commit),
   after creating any secret the head adds (as ``abra app secret generate`` would for
   missing ones; values are never logged).
4. **Check**: every service runs the head's image, none was rolled back or paused, the
   app carries the head's version and chaos-version labels, and every volume the base
   mounted is still mounted at the same path (``swarm.evidence``); then the settle
   window, serving probed from outside the app, ``tests/ccci-verify`` (data survived,
   asked of the app) and ``tests/ccci-check``. Without ``ccci-seed``/``ccci-verify``,
   app-level data survival is reported **unverified**, never passed.
5. **Round trip**: undeploy, snapshot, wipe, restore: every volume byte-identical.

This is the **cold lane**. With ``CCCI_QUICK=1`` the **quick lane** (``quick.py``)
upgrades the recipe's warm canonical instead, when this host has one; a green cold run
may **promote** the canonical (``promote.py``). See ``doc/warm.md``.

Hooks are executables of the head's recipe, run on the worker in the recipe folder,
as argv (never a shell string), with the app's env (``DOMAIN``, ``STACK_NAME``, the
``.env.sample`` values) plus ``CCCI_HOOK_STATE`` (a folder kept from seed to verify).
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from ...git import git, out
from ...swarm import holds
from ...swarm.deploy import App, DeployError
from .. import process
from ...swarm.recipe import Recipe, RecipeError
from ...swarm.snapshot import SnapshotError, restore, snapshot
from .base import BuildContext
from .recipe import Deploying, scratch

SEED_HOOK, VERIFY_HOOK, CHECK_HOOK = "tests/ccci-seed", "tests/ccci-verify", "tests/ccci-check"
TOKEN = ".ccci-seed"


class RecipeSystest(Deploying):
    name = "recipe-systest"

    def run(self, ctx: BuildContext) -> str:
        """The quick lane when ``CCCI_QUICK=1`` and a canonical is here (``quick.py``),
        else the cold lane; a green cold run may promote the canonical (``promote.py``)."""
        from . import promote, quick
        if ctx.parameters.get("CCCI_QUICK") == "1":
            result = quick.QuickLane(self).run(ctx)
            if result is not None:
                if holds.wanted(ctx.parameters, result, ctx.stopped):
                    ctx.log("AUTOHOLD not applied: the quick lane puts its warm canonical "
                            "back; a cold run of this job can be held\n")
                return result
        else:
            ctx.log("lane: cold\n")
        result = super().run(ctx)
        if result == "SUCCESS":
            result = promote.Promotion(self).run(ctx)
        return result

    def test(self, ctx: BuildContext, app: App) -> str:
        head = app.recipe
        base_ref, base_dir, why = self.upgrade_base(ctx, head)
        base = Recipe(base_dir, head.name, domain=head.domain)
        ctx.log(f"upgrade base: {base_ref} ({base.version() or 'no version'}; {why})\n")
        app.recipe = base
        self.cold_deploy(ctx, app, out(base_dir, "rev-parse", "HEAD"))
        ctx.progress(1, 5)
        state = scratch(ctx, "hook-state")
        seeded = self.hook(ctx, app, head, SEED_HOOK, state)
        commit = ctx.parameters.get("ZUUL_COMMIT") or out(ctx.workspace, "rev-parse", "HEAD")
        self.upgrade(ctx, app, head, commit, state, seeded)
        ctx.progress(3, 5)
        self.round_trip(ctx, app)
        ctx.progress(4, 5)
        return "SUCCESS"

    def upgrade(self, ctx: BuildContext, app: App, head: Recipe, commit: str, state: Path,
                seeded: bool) -> None:
        """From the running base, seeded: a token in every volume, the chaos upgrade to
        the head, the upgrade checks, settle, probe, the tokens, the recipe's verify and
        check hooks. Raises with the true reason; the quick lane runs exactly this too."""
        tokens = self.seed_volumes(app)
        before = self.port.services(app.stack)
        app.recipe = head
        added = app.create_secrets()
        if added:
            ctx.log(f"generated {len(added)} secret(s) the head adds: {', '.join(added)}\n")
        app.deploy(commit=commit, chaos=True)
        after = app.wait_converged(self.remaining(ctx, head.timeout()), upgrading=True)
        for warning in app.check_upgrade(before, after, head, commit):
            ctx.log(f"WARNING: {warning}\n")
        ctx.log(f"upgraded in place to {head.version()} (chaos {commit[:8]}): the head runs "
                f"on every service, every volume where the base had it\n")
        self.settled_and_serving(ctx, app)
        ctx.progress(2, 5)

        self.check_tokens(app, tokens)
        verified = self.hook(ctx, app, head, VERIFY_HOOK, state)
        if seeded and verified:
            ctx.log(f"app-level data survival: verified by the recipe's {VERIFY_HOOK}\n")
        else:
            ctx.log(f"app-level data survival: UNVERIFIED (the recipe has no executable "
                    f"{SEED_HOOK} and {VERIFY_HOOK}); volume tokens intact, mounts unchanged\n")
        if not self.hook(ctx, app, head, CHECK_HOOK, state):
            ctx.log(f"the recipe has no {CHECK_HOOK} of its own\n")

    def hook(self, ctx: BuildContext, app: App, head: Recipe, name: str, state: Path) -> bool:
        """Run the head's hook ``name`` against the running app with the app's env;
        False if the recipe has none, ``DeployError`` if it fails."""
        hook = head.path / name
        if not hook.is_file() or not os.access(hook, os.X_OK):
            return False
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "DOCKER_HOST") if k in os.environ}
        env.update(app.recipe.env())
        env["CCCI_HOOK_STATE"] = str(state)
        try:   # under the reaper: nothing the hook starts outlives it or the worker
            status, output = process.run([str(hook.resolve())], head.path, env,
                                         timeout=self.remaining(ctx, 600))
        except subprocess.TimeoutExpired:
            raise DeployError(f"the recipe's own {name} timed out") from None
        ctx.log(output)
        if status != 0:
            raise DeployError(f"the recipe's own {name} failed (exit {status})")
        ctx.log(f"the recipe's own {name} passed\n")
        return True

    def upgrade_base(self, ctx: BuildContext, head: Recipe) -> tuple[str, Path, str]:
        """The base to upgrade from, checked out in a worktree, and why it was chosen:
        an explicit ``CCCI_UPGRADE_BASE`` (a job parameter in the layout), else the
        canonical's known-good version (``swarm.warm``), else the newest release tag
        reachable from the head that is neither the head's commit nor its version, else
        the target branch tip."""
        from .quick import known_good_version
        ws = ctx.workspace
        fetch_tags(ctx)
        head_sha, head_version = out(ws, "rev-parse", "HEAD"), head.version()

        def commit_of(ref: str) -> str:
            return out(ws, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)

        def usable(ref: str) -> bool:
            return bool(ref) and commit_of(ref) not in ("", head_sha) and ref != head_version

        ref, why = "", ""
        override = ctx.parameters.get("CCCI_UPGRADE_BASE", "").strip()
        if override:
            if not commit_of(override):
                raise RecipeError(f"the layout's upgrade base {override!r} is not a ref "
                                  f"of the recipe")
            ref, why = override, "the layout's explicit upgrade base"
        if not ref:
            version, commit = known_good_version(ctx)
            # its release tag when that is its commit (the log reads better), else its commit
            tag_is_it = not commit or commit_of(version) == commit_of(commit)
            for candidate in (version, commit) if tag_is_it else (commit, version):
                if version and version != head_version and usable(candidate):
                    ref, why = candidate, f"the canonical's known-good version {version}"
                    break
        if not ref:
            tags = [t for t in out(ws, "tag", "--merged", "HEAD", "--sort=-v:refname").split() if t]
            ref = next((t for t in tags if usable(t)), "")
            why = "the newest older release tag" if ref else ""
        if not ref:
            tip = git(ws, "rev-parse", "-q", "--verify", "refs/ccci/tip", check=False).returncode == 0
            ref, why = ("refs/ccci/tip" if tip else "HEAD~1"), "the target branch tip"
        dest = scratch(ctx, "base")
        dest.rmdir()
        git(ws, "worktree", "add", "-q", "--detach", str(dest), ref)
        return ref, dest, why

    def seed_volumes(self, app: App) -> dict[str, str]:
        """A random token in each volume: volume-level evidence only (a head that mounts
        the volume elsewhere keeps it), so it never stands for app-level survival."""
        tokens = {}
        for volume, mountpoint in self.port.volumes(app.stack).items():
            tokens[volume] = secrets.token_hex(16)
            (mountpoint / TOKEN).write_text(tokens[volume])
        return tokens

    def check_tokens(self, app: App, tokens: dict[str, str]) -> None:
        volumes = self.port.volumes(app.stack)
        for volume, token in tokens.items():
            path = volumes.get(volume)
            if path is None or not (path / TOKEN).is_file() or (path / TOKEN).read_text() != token:
                raise DeployError(f"volume {volume}: the token seeded before the upgrade is gone")

    def round_trip(self, ctx: BuildContext, app: App) -> None:
        """Undeploy, snapshot, wipe, restore: every volume byte-identical again."""
        self.port.purge(app.stack, keep_volumes=True)
        before = {v: _tree_digest(p) for v, p in self.port.volumes(app.stack).items()}
        root = scratch(ctx, "snapshots")
        snap = snapshot(self.port, app.stack, root, {"recipe": app.recipe.name,
                                                     "domain": app.recipe.domain,
                                                     "version": app.recipe.version()})
        for mountpoint in self.port.volumes(app.stack).values():
            for child in mountpoint.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        restore(self.port, app.stack, snap)
        after = {v: _tree_digest(p) for v, p in self.port.volumes(app.stack).items()}
        if before != after:
            raise SnapshotError("restored volumes differ from what was snapshotted")
        ctx.log(f"backup → wipe → restore round trip of {len(before)} volume(s): identical\n")


def fetch_tags(ctx: BuildContext) -> None:
    """Into the workspace, from the merger (``ZUUL_URL``): the recipe's tags and its
    target branch tip as ``refs/ccci/tip``; nothing without a ``ZUUL_URL``."""
    if not ctx.parameters.get("ZUUL_URL"):
        return
    url = f"{ctx.parameters['ZUUL_URL'].rstrip('/')}/{ctx.parameters.get('ZUUL_PROJECT', '')}"
    branch = ctx.parameters.get("ZUUL_BRANCH", "main")
    git(ctx.workspace, "fetch", "-q", "--tags", "--", url,
        f"+refs/ccci/tip/{branch}:refs/ccci/tip", timeout=300, check=False)


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()
