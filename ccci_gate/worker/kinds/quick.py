"""The quick lane of ``recipe-systest`` (``CCCI_QUICK=1``): upgrade the recipe's warm
canonical (``swarm.warm``) in place to the head, once, with the cold lane's checks.

1. **Reattach** the canonical at its known-good: undeploy whatever a killed run left,
   fresh volumes refilled from the known-good snapshot, its secrets, its version
   deployed from its stored recipe files; wait converged and healthy (warm data: no
   first boot; no settle re-watch, it was watched when it was promoted).
2. **Upgrade** in place to the head: ``RecipeSystest.upgrade``, the very code of the cold
   lane (volume tokens, chaos deploy, ``App.check_upgrade``, settle, probe, the recipe's
   ``ccci-verify`` against what its ``ccci-seed`` wrote at promotion, ``ccci-check``).
3. **PASS**: undeploy (its containers killed: what the head wrote is never read again,
   the next quick run refills the volumes from the known-good first), volumes kept; the
   known-good snapshot is not touched.
   **FAIL**: undeploy and restore the known-good into the volumes, proven identical to
   what was reattached. A restore that fails is an infrastructure ERROR with an
   ``ALERT`` line, and the canonical is marked broken (quick falls back to cold).

No canonical here — the project is not enrolled (``CCCI_WARM``), it was never seeded
on this host, it is broken — means the cold lane runs, and the log says why. A canonical
held by another run is waited for (``CCCI_WARM_WAIT`` seconds, default 600), then the
cold lane runs. Quick never promotes.
"""
from __future__ import annotations

import time
from pathlib import Path

import docker.errors

from ...git import GitError
from ...swarm.deploy import App, DeployError, InfraError
from ...swarm.port import SwarmError
from ...swarm.recipe import Recipe, RecipeError
from ...swarm.snapshot import SnapshotError, restore
from ...swarm.warm import (Canonical, WarmError, default_root, restore_secrets, unpack_hook_state,
                           volumes_digest)
from .base import BuildContext
from .bundle import StoreError, unpack_bundle
from .recipe import recipe_name, scratch

ALERT = "ALERT: "


def canonical_for(ctx: BuildContext) -> Canonical | None:
    """The recipe's canonical on this host, when its project is enrolled."""
    if ctx.parameters.get("CCCI_WARM") != "1":
        return None
    return Canonical(ctx.warm_root or default_root(), recipe_name(ctx))


def known_good_version(ctx: BuildContext) -> tuple[str, str]:
    """(version, commit) of the canonical's known-good, or ("", "")."""
    canonical = canonical_for(ctx)
    good = canonical.known_good() if canonical is not None else None
    return (str(good.get("version", "")), str(good.get("commit", ""))) if good else ("", "")


def base_domain(ctx: BuildContext) -> str:
    return ctx.parameters.get("CCCI_TEST_DOMAIN") or "ci.local"


class QuickLane:
    def __init__(self, kind):   # kind: the RecipeSystest running this build
        self.kind = kind

    def run(self, ctx: BuildContext) -> str | None:
        """The quick verdict, or None when the cold lane must run (the log says why)."""
        canonical = canonical_for(ctx)
        why = ("the project is not enrolled for a warm canonical" if canonical is None
               else canonical.unusable())
        if why:
            ctx.log(f"lane: cold (quick asked for, but {why})\n")
            return None
        wait = float(ctx.parameters.get("CCCI_WARM_WAIT") or 600)
        try:
            with self.kind.host.slot(wait=lambda: not ctx.stopped, log=ctx.log):
                with canonical.lock(lambda: not ctx.stopped, self.kind.remaining(ctx, wait),
                                    ctx.log):
                    why = canonical.unusable()   # another run may have changed it meanwhile
                    if not why:
                        return self.quick(ctx, canonical)
        except WarmError as exc:
            why = str(exc)
        except (SwarmError, docker.errors.DockerException) as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (Docker): {exc}\n")
            return "ERROR"
        ctx.log(f"lane: cold (quick asked for, but {why})\n")
        return None

    def quick(self, ctx: BuildContext, canonical: Canonical) -> str:
        kind, port = self.kind, self.kind.port
        good = canonical.known_good()
        assert good is not None
        good_dir, domain = Path(good["good_dir"]), str(good["domain"])
        folder = scratch(ctx, "known-good")
        unpack_bundle((good_dir / "bundle.tar.gz").read_bytes(), folder)
        known = Recipe(folder, canonical.recipe, domain=domain)
        app = App(port, known, ctx.log, ctx.stop)
        ctx.log(f"lane: quick, on the canonical {app.stack} from its known-good "
                f"{good.get('version')} (commit {str(good.get('commit', ''))[:8]}, promoted "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(good.get('time', 0)))})\n")
        canonical.set_record(status="quick", build=ctx.parameters.get("ZUUL_UUID", ""))
        started = time.monotonic()
        try:
            reference = self.reattach(ctx, app, good)
        except (SwarmError, RecipeError, docker.errors.DockerException) as exc:
            if ctx.stopped:
                ctx.log("stopped while reattaching the canonical\n")
                return self.put_back(ctx, canonical, app, good, None, "ABORTED")
            ctx.log(f"INFRASTRUCTURE ERROR (the canonical's known-good did not come up, "
                    f"not the change's fault): {exc}\n")
            return self.put_back(ctx, canonical, app, good, None, "ERROR")
        ctx.log(f"reattached {app.stack} at {good.get('version')} in "
                f"{time.monotonic() - started:.1f}s (warm data)\n")
        ctx.progress(1, 5)
        commit = ctx.parameters.get("ZUUL_COMMIT") or ""
        verdict = "SUCCESS"
        try:
            head = kind.recipe(ctx, domain)
            state = unpack_hook_state(good_dir, scratch(ctx, "hook-state"))
            kind.upgrade(ctx, app, head, commit, state, bool(good.get("seeded")))
        except (DeployError, SnapshotError, RecipeError) as exc:
            ctx.log(f"FAILED: {exc}\n")
            verdict = ("TIMED_OUT" if ctx.deadline is not None and time.monotonic() > ctx.deadline
                       else "ABORTED" if ctx.stopped else "FAILURE")
        except InfraError as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (not the change's fault): {exc}\n")
            verdict = "ERROR"
        except (SwarmError, docker.errors.DockerException) as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (Docker): {exc}\n")
            verdict = "ERROR"
        except (StoreError, GitError) as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (artifact store or git): {exc}\n")
            verdict = "ERROR"
        if verdict != "SUCCESS":
            return self.put_back(ctx, canonical, app, good, reference, verdict)
        undeploying = time.monotonic()
        # killed, not stopped: what the head left in the volumes is never read again (the
        # next quick run refills them from the known-good snapshot before it deploys)
        port.purge(app.stack, keep_volumes=True, kill=True)
        canonical.set_record(status="ready", build="", last_quick={
            "result": verdict, "commit": commit, "version": head.version(), "time": time.time()})
        ctx.log(f"quick PASS: {app.stack} undeployed in {time.monotonic() - undeploying:.1f}s, "
                f"volumes kept; its known-good snapshot ({good.get('version')}) untouched\n")
        ctx.progress(4, 5)
        return verdict

    def reattach(self, ctx: BuildContext, app: App, good: dict) -> dict[str, str]:
        """The known-good, deployed and healthy on its own data; returns the digest of
        its volumes as restored (what a failed run must put back)."""
        port = self.kind.port
        began = time.monotonic()
        reference = self.restore(app, good)
        ctx.log(f"refilled {len(reference)} volume(s) from the known-good snapshot in "
                f"{time.monotonic() - began:.1f}s\n")
        restore_secrets(port, app.stack, Path(good["good_dir"]))
        app.create_secrets()
        app.deploy(commit=str(good.get("commit", "")))
        states = app.wait_converged(self.kind.remaining(ctx, app.recipe.timeout()))
        ctx.log("converged: " + ", ".join(f"{s.name} {s.running}/{s.desired} healthy"
                                          for s in states) + "\n")
        return reference

    def restore(self, app: App, good: dict) -> dict[str, str]:
        """Whatever is deployed removed (volumes and all), the known-good's volumes made
        afresh and refilled from its snapshot; returns their digest."""
        port = self.kind.port
        port.purge(app.stack, kill=True)   # its volumes go too: refilled from the snapshot
        for volume in good.get("volumes", []):
            port.create_volume(volume, app.stack)
        restore(port, app.stack, Path(good["snapshot"]))
        return volumes_digest(port, app.stack)

    def put_back(self, ctx: BuildContext, canonical: Canonical, app: App, good: dict,
                 reference: dict[str, str] | None, verdict: str) -> str:
        """After a failed run: the known-good restored exactly, undeployed. A failure
        here is the host's, loud, and marks the canonical broken."""
        try:
            restored = self.restore(app, good)
            if reference is not None and restored != reference:
                raise SnapshotError("the restored volumes differ from the known-good "
                                    "that was reattached")
            port_left = self.kind.port.services(app.stack)
            if port_left:
                raise SnapshotError(f"services still deployed: {[s.name for s in port_left]}")
        except (SwarmError, docker.errors.DockerException, OSError) as exc:
            ctx.log(f"{ALERT}the known-good of {app.stack} could not be restored: {exc}\n"
                    f"INFRASTRUCTURE ERROR: the canonical of {canonical.recipe} is marked "
                    f"broken; quick runs fall back to cold until a promotion re-seeds it\n")
            canonical.set_record(status="broken", build="", why=str(exc)[:500])
            return "ERROR"
        canonical.set_record(status="ready", build="", last_quick={
            "result": verdict, "commit": ctx.parameters.get("ZUUL_COMMIT", ""),
            "time": time.time()})
        ctx.log(f"restored the known-good {good.get('version')} of {app.stack} exactly "
                f"({len(restored)} volume(s) identical to the reattached ones), undeployed\n")
        return verdict
