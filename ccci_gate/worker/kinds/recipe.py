"""The Co-op Cloud recipe job kinds: ``recipe-build``, ``recipe-publish``,
``recipe-install`` (here) and ``recipe-systest`` (``systest.py``) — the default graph,
on a real Docker Swarm.

- **build**: lint the checkout (``swarm.recipe.Recipe.lint``), every problem listed.
- **publish**: store the bundle (``bundle.py``) in the gatekeeper's artifact store
  (``CCCI_ARTIFACTS``), so ``install`` and ``systest`` on any host deploy exactly that.
- **install**: cold deploy on a fresh stack, wait until converged and healthy, settle,
  probe serving from outside the app, tear down and prove nothing is left.

Each deploying run holds one of the host's ``max_tests`` slots and a lease for the
janitor (``swarm.host``). A failing run of a job an operator holds (autohold:
``CCCI_AUTOHOLD``) keeps its app deployed instead of tearing it down (``swarm.holds``).
Job parameters: ``RECIPE`` (default: the project's last path part), ``CCCI_TEST_DOMAIN``
(base domain of run apps, default ``ci.local``), ``CCCI_SETTLE_FLOOR`` (seconds, default
30; a recipe's ``ccci.settle`` label replaces it).

Verdicts: a failure of the change is ``FAILURE``; a fault of the host — out of memory
or resources, the Docker daemon, the artifact store, git — is ``ERROR``, named as such
in the log.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import docker.errors
import requests

from ...git import GitError
from ...swarm import holds
from ...swarm.deploy import SETTLE_FLOOR, App, DeployError, InfraError
from ...swarm.host import Host
from ...swarm.port import SwarmError, SwarmPort
from ...swarm.recipe import Recipe, RecipeError, run_domain
from ...swarm.snapshot import SnapshotError
from .base import BuildContext
from .bundle import StoreError, fetch, make_bundle, publish, unpack_bundle


def scratch(ctx: BuildContext, name: str) -> Path:
    """A directory for this build's own files, removed with its workspace."""
    path = ctx.workspace.resolve() / ".ccci" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_name(ctx: BuildContext) -> str:
    return ctx.parameters.get("RECIPE") or ctx.parameters.get("ZUUL_PROJECT", "app").rsplit("/", 1)[-1]


class RecipeBuild:
    name = "recipe-build"

    def run(self, ctx: BuildContext) -> str:
        recipe = Recipe(ctx.workspace, recipe_name(ctx), domain=run_domain(recipe_name(ctx)))
        problems = recipe.lint()
        for problem in problems:
            ctx.log(f"PROBLEM: {problem}\n")
        if problems:
            ctx.log(f"{len(problems)} problem(s) in {recipe.name}\n")
            return "FAILURE"
        ctx.log(f"lint ok: {recipe.name} {recipe.version()}\n")
        return "SUCCESS"


class RecipePublish:
    name = "recipe-publish"

    def run(self, ctx: BuildContext) -> str:
        try:
            data = make_bundle(Recipe(ctx.workspace, recipe_name(ctx)))
        except RecipeError as exc:
            ctx.log(f"FAILED: {exc}\n")
            return "FAILURE"
        try:
            where = publish(ctx.parameters.get("CCCI_ARTIFACTS", ""), data,
                            ctx.parameters.get("CCCI_ARTIFACTS_TOKEN", ""))
        except StoreError as exc:
            ctx.log(f"{exc}\n")
            return "ERROR"
        ctx.log(f"published {where} ({len(data)} bytes, sha256 "
                f"{hashlib.sha256(data).hexdigest()})\n")
        return "SUCCESS"


class Deploying:
    """What the deploying kinds share: a slot, a lease, the bundle, honest waiting, a
    clean teardown, and the verdict (FAILURE for the change, ERROR for the host)."""

    name = ""

    def __init__(self, port: SwarmPort | None = None, host: Host | None = None):
        self._port = port
        self._host = host

    @property
    def port(self) -> SwarmPort:
        if self._port is None:
            self._port = SwarmPort()
        return self._port

    @property
    def host(self) -> Host:
        return self._host or Host.from_env()

    def recipe(self, ctx: BuildContext, domain: str) -> Recipe:
        """The published bundle when there is one, else the checkout."""
        data = fetch(ctx.parameters.get("CCCI_ARTIFACTS", ""))
        if data is not None:
            dest = scratch(ctx, "bundle")
            unpack_bundle(data, dest)
            ctx.log(f"deploying the published bundle (sha256 "
                    f"{hashlib.sha256(data).hexdigest()[:16]})\n")
            return Recipe(dest, recipe_name(ctx), domain=domain)
        return Recipe(ctx.workspace, recipe_name(ctx), domain=domain)

    def remaining(self, ctx: BuildContext, wanted: float) -> float:
        if ctx.deadline is None:
            return wanted
        return max(1.0, min(wanted, ctx.deadline - time.monotonic()))

    def settle_floor(self, ctx: BuildContext) -> float:
        value = ctx.parameters.get("CCCI_SETTLE_FLOOR", "")
        return float(value) if value.replace(".", "", 1).isdigit() else SETTLE_FLOOR

    def run(self, ctx: BuildContext) -> str:
        domain = run_domain(recipe_name(ctx), ctx.parameters.get("CCCI_TEST_DOMAIN") or "ci.local")
        host = self.host
        try:
            with host.slot(wait=lambda: not ctx.stopped, log=ctx.log):
                app = App(self.port, self.recipe(ctx, domain), ctx.log, ctx.stop)
                host.take_lease(app.stack, ctx.parameters.get("ZUUL_UUID", ""))
                verdict = None
                try:
                    verdict = self.test(ctx, app)
                except (DeployError, SnapshotError, RecipeError) as exc:
                    ctx.log(f"FAILED: {exc}\n")
                    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                        verdict = "TIMED_OUT"
                    else:
                        verdict = "ABORTED" if ctx.stopped else "FAILURE"
                finally:
                    if not self.held(ctx, host, app, verdict):
                        app.teardown()
                        host.drop_lease(app.stack)
                        ctx.log(f"nothing of {app.stack} is left\n")
                return verdict
        except RecipeError as exc:
            ctx.log(f"FAILED: {exc}\n")
            return "FAILURE"
        except InfraError as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (not the change's fault): {exc}\n")
        except GitError as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (git): {exc}\n")
        except (SwarmError, docker.errors.DockerException, requests.RequestException) as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (Docker): {exc}\n")
        except StoreError as exc:
            ctx.log(f"INFRASTRUCTURE ERROR (artifact store): {exc}\n")
        return "ERROR"

    def test(self, ctx: BuildContext, app: App) -> str:
        raise NotImplementedError

    def held(self, ctx: BuildContext, host: Host, app: App, verdict: str | None) -> bool:
        """Keep a failing run's app deployed when an autohold asks (``swarm.holds``);
        the hold goes back with the result (``ctx.report``). False: tear it down."""
        if not holds.wanted(ctx.parameters, verdict, ctx.stopped):
            return False
        try:
            ctx.report["autohold"] = holds.hold_app(host, self.port, app.stack,
                                                    app.recipe.domain, ctx.parameters, ctx.log)
        except (OSError, SwarmError, docker.errors.DockerException) as exc:
            ctx.log(f"AUTOHOLD not applied ({exc}): tearing {app.stack} down\n")
            return False
        return True

    def cold_deploy(self, ctx: BuildContext, app: App, commit: str) -> None:
        """Deploy cold and wait until every service runs healthy."""
        app.create_secrets()
        app.deploy(commit=commit)
        states = app.wait_converged(self.remaining(ctx, app.recipe.timeout()))
        ctx.log("converged: " + ", ".join(f"{s.name} {s.running}/{s.desired} healthy"
                                          for s in states) + "\n")

    def settled_and_serving(self, ctx: BuildContext, app: App) -> None:
        """The settle window, then serving probed from outside the app."""
        ctx.log(f"settled: {app.settle(self.settle_floor(ctx), self.remaining(ctx, 3600))}\n")
        ctx.log(f"readiness: {app.probe()}\n")


class RecipeInstall(Deploying):
    name = "recipe-install"

    def test(self, ctx: BuildContext, app: App) -> str:
        started = time.monotonic()
        self.cold_deploy(ctx, app, ctx.parameters.get("ZUUL_COMMIT", ""))
        ctx.log(f"cold install of {app.recipe.name} {app.recipe.version()} converged in "
                f"{time.monotonic() - started:.1f}s\n")
        self.settled_and_serving(ctx, app)
        return "SUCCESS"
