"""The Co-op Cloud recipe job kinds: ``recipe-build``, ``recipe-publish``,
``recipe-install``, ``recipe-systest`` — the default graph, on a real Docker Swarm.

- **build**: lint the checkout (``swarm.recipe.Recipe.lint``), every problem listed.
- **publish**: bundle what build checked — the compose files ``COMPOSE_FILE`` names,
  ``.env.sample``, ``abra.sh``, ``release/`` — with a ``SHA256SUMS`` manifest, and
  store it in the gatekeeper's artifact store (``CCCI_ARTIFACTS``), so ``install`` and
  ``systest`` on any host deploy exactly that.
- **install**: cold deploy on a fresh stack, wait until converged and healthy, tear
  down and prove nothing is left.
- **systest**: cold deploy of the upgrade base (the newest release tag before the head,
  else the target branch tip), seed data, chaos-upgrade to the head, assert the head
  runs and the data survived, run the recipe's own ``tests/ccci-check`` if it has one,
  snapshot → wipe → restore round trip, tear down.

Each deploying run holds one of the host's ``max_tests`` slots and a lease for the
janitor (``swarm.host``). Job parameters: ``RECIPE`` (default: the project's last path
part), ``CCCI_TEST_DOMAIN`` (base domain of run apps, default ``ci.local``).
"""
from __future__ import annotations

import hashlib
import io
import os
import secrets
import subprocess
import shutil
import tarfile
import time
from pathlib import Path

import requests

from ...merger.git import GitError, git, out
from ...swarm.deploy import App, DeployError
from ...swarm.host import Host
from ...swarm.port import SwarmError, SwarmPort
from ...swarm.recipe import Recipe, RecipeError, run_domain
from ...swarm.snapshot import SnapshotError, restore, snapshot
from .base import BuildContext

BUNDLE = "recipe-bundle.tar.gz"
CHECK = "tests/ccci-check"
SEED = ".ccci-seed"


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


def bundle_files(recipe: Recipe) -> list[Path]:
    files = [p for p in recipe.compose_files() if p.exists()]
    for extra in (".env.sample", "abra.sh"):
        if (recipe.path / extra).exists():
            files.append(recipe.path / extra)
    for folder in ("release", "tests"):
        if (recipe.path / folder).is_dir():
            files += sorted(p for p in (recipe.path / folder).rglob("*") if p.is_file())
    return files


def make_bundle(recipe: Recipe) -> bytes:
    """A reproducible tar.gz of the recipe's deployable files plus ``SHA256SUMS``."""
    files = bundle_files(recipe)
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(recipe.path)}\n"
                   for p in files)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            _add(tar, str(path.relative_to(recipe.path)), path.read_bytes(),
                 executable=os.access(path, os.X_OK))
        _add(tar, "SHA256SUMS", sums.encode())
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o755 if executable else 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def unpack_bundle(data: bytes, dest: Path) -> None:
    """Extract a bundle and check every file against its ``SHA256SUMS``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    for line in (dest / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        if hashlib.sha256((dest / name).read_bytes()).hexdigest() != digest:
            raise RecipeError(f"bundle file {name} does not match its checksum")


class RecipePublish:
    name = "recipe-publish"

    def run(self, ctx: BuildContext) -> str:
        recipe = Recipe(ctx.workspace, recipe_name(ctx))
        data = make_bundle(recipe)
        url = ctx.parameters.get("CCCI_ARTIFACTS", "")
        digest = hashlib.sha256(data).hexdigest()
        if not url.startswith(("http://", "https://")):
            ctx.log("no artifact store (CCCI_ARTIFACTS) to publish to\n")
            return "ERROR"
        try:
            reply = requests.put(f"{url}/{BUNDLE}", data=data, timeout=60)
        except requests.RequestException as exc:
            ctx.log(f"publishing failed: {exc}\n")
            return "ERROR"
        if reply.status_code not in (201, 409):
            ctx.log(f"the artifact store answered {reply.status_code}: {reply.text[:200]}\n")
            return "ERROR"
        ctx.log(f"published {url}/{BUNDLE} ({len(data)} bytes, sha256 {digest})\n")
        return "SUCCESS"


class _Deploying:
    """What the deploying kinds share: a slot, a lease, the bundle, a clean teardown."""

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
        name = recipe_name(ctx)
        url = ctx.parameters.get("CCCI_ARTIFACTS", "")
        if url.startswith(("http://", "https://")):
            reply = requests.get(f"{url}/{BUNDLE}", timeout=60)
            if reply.status_code == 200:
                dest = scratch(ctx, "bundle")
                unpack_bundle(reply.content, dest)
                ctx.log(f"deploying the published bundle (sha256 "
                        f"{hashlib.sha256(reply.content).hexdigest()[:16]})\n")
                return Recipe(dest, name, domain=domain)
        return Recipe(ctx.workspace, name, domain=domain)

    def remaining(self, ctx: BuildContext, wanted: float) -> float:
        if ctx.deadline is None:
            return wanted
        return max(1.0, min(wanted, ctx.deadline - time.monotonic()))

    def run(self, ctx: BuildContext) -> str:
        domain = run_domain(recipe_name(ctx), ctx.parameters.get("CCCI_TEST_DOMAIN") or "ci.local")
        host = self.host
        try:
            with host.slot(wait=lambda: not ctx.stopped, log=ctx.log):
                app = App(self.port, self.recipe(ctx, domain), ctx.log, ctx.stop)
                host.take_lease(app.stack, ctx.parameters.get("ZUUL_UUID", ""))
                try:
                    return self.test(ctx, app)
                except GitError as exc:
                    ctx.log(f"git failed (an infrastructure error): {exc}\n")
                    return "ERROR"
                except (DeployError, SnapshotError, RecipeError) as exc:
                    ctx.log(f"FAILED: {exc}\n")
                    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                        return "TIMED_OUT"
                    return "ABORTED" if ctx.stopped else "FAILURE"
                finally:
                    app.teardown()
                    host.drop_lease(app.stack)
                    ctx.log(f"nothing of {app.stack} is left\n")
        except SwarmError as exc:
            ctx.log(f"swarm error: {exc}\n")
            return "ERROR"

    def test(self, ctx: BuildContext, app: App) -> str:
        raise NotImplementedError

    def cold_deploy(self, ctx: BuildContext, app: App, commit: str) -> None:
        app.create_secrets()
        app.deploy(commit=commit)
        timeout = self.remaining(ctx, app.recipe.timeout())
        states = app.wait_converged(timeout)
        ctx.log("converged: " + ", ".join(f"{s.name} {s.running}/{s.desired} healthy"
                                          for s in states) + "\n")
        ctx.log(f"readiness: {app.probe()}\n")


class RecipeInstall(_Deploying):
    name = "recipe-install"

    def test(self, ctx: BuildContext, app: App) -> str:
        started = time.monotonic()
        self.cold_deploy(ctx, app, ctx.parameters.get("ZUUL_COMMIT", ""))
        ctx.log(f"cold install of {app.recipe.name} {app.recipe.version()} took "
                f"{time.monotonic() - started:.1f}s\n")
        return "SUCCESS"


class RecipeSystest(_Deploying):
    name = "recipe-systest"

    def test(self, ctx: BuildContext, app: App) -> str:
        head = app.recipe
        base_ref, base_dir = self.upgrade_base(ctx)
        base = Recipe(base_dir, head.name, domain=head.domain)
        base_commit = out(base_dir, "rev-parse", "HEAD")
        ctx.log(f"upgrade base: {base_ref} ({base.version() or 'no version'})\n")
        app.recipe = base
        self.cold_deploy(ctx, app, base_commit)
        ctx.progress(1, 5)
        seeds = self.seed(app)
        ctx.log(f"seeded {len(seeds)} volume(s)\n")
        app.recipe = head
        commit = ctx.parameters.get("ZUUL_COMMIT") or out(ctx.workspace, "rev-parse", "HEAD")
        app.deploy(commit=commit, chaos=True)
        states = app.wait_converged(self.remaining(ctx, head.timeout()), upgrading=True)
        app.check_upgrade(states, head.version(), commit, _app_image(head))
        ctx.log(f"upgraded in place to {head.version()} (chaos {commit[:8]}): "
                f"the head runs; readiness: {app.probe()}\n")
        ctx.progress(2, 5)
        for volume, token in seeds.items():
            if (self.port.volumes(app.stack)[volume] / SEED).read_text() != token:
                raise DeployError(f"data seeded in {volume} before the upgrade is gone")
        ctx.log("seeded data survived the upgrade\n")
        self.recipe_checks(ctx, app)
        ctx.progress(3, 5)
        self.round_trip(ctx, app)
        ctx.progress(4, 5)
        return "SUCCESS"

    def recipe_checks(self, ctx: BuildContext, app: App) -> None:
        """The recipe's own check, if it has one: an executable ``tests/ccci-check``, run
        against the upgraded app with the app's env (argv only, in the recipe folder)."""
        check = app.recipe.path / CHECK
        if not check.is_file() or not os.access(check, os.X_OK):
            ctx.log(f"the recipe has no {CHECK} of its own\n")
            return
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "DOCKER_HOST") if k in os.environ}
        env.update(app.recipe.env())
        try:
            proc = subprocess.run([str(check)], cwd=app.recipe.path, env=env,
                                  timeout=self.remaining(ctx, 600), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            raise DeployError(f"the recipe's own {CHECK} timed out") from None
        ctx.log(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise DeployError(f"the recipe's own {CHECK} failed (exit {proc.returncode})")
        ctx.log(f"the recipe's own {CHECK} passed\n")

    def upgrade_base(self, ctx: BuildContext) -> tuple[str, Path]:
        """The newest release tag that is an ancestor of the head (not the head itself),
        else the target branch tip; checked out in a worktree."""
        ws = ctx.workspace
        url = f"{ctx.parameters.get('ZUUL_URL', '').rstrip('/')}/{ctx.parameters.get('ZUUL_PROJECT', '')}"
        branch = ctx.parameters.get("ZUUL_BRANCH", "main")
        if ctx.parameters.get("ZUUL_URL"):
            git(ws, "fetch", "-q", "--tags", "--", url,
                f"+refs/ccci/tip/{branch}:refs/ccci/tip", timeout=300, check=False)
        head = out(ws, "rev-parse", "HEAD")
        tags = [t for t in out(ws, "tag", "--merged", "HEAD", "--sort=-v:refname").split() if t]
        base = next((t for t in tags if out(ws, "rev-list", "-n1", t) != head), None)
        ref = base or ("refs/ccci/tip" if git(ws, "rev-parse", "-q", "--verify", "refs/ccci/tip",
                                                  check=False).returncode == 0 else "HEAD~1")
        dest = scratch(ctx, "base")
        dest.rmdir()
        git(ws, "worktree", "add", "-q", "--detach", str(dest), ref)
        return ref, dest

    def seed(self, app: App) -> dict[str, str]:
        """A random token in each volume, to find after the upgrade."""
        seeds = {}
        for volume, mountpoint in self.port.volumes(app.stack).items():
            token = secrets.token_hex(16)
            (mountpoint / SEED).write_text(token)
            seeds[volume] = token
        return seeds

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


def _app_image(recipe: Recipe) -> str:
    config, _ = recipe.render()
    return str(((config.get("services") or {}).get("app") or {}).get("image", ""))


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()
