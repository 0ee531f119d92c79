"""Deploying an app the way abra does, waiting for it honestly, and tearing it down.

- **cold deploy**: generate the recipe's secrets (``<stack>_<secret>_<version>``),
  deploy the compose files ``COMPOSE_FILE`` names with the app's env, plus a stamp
  overlay putting abra's labels on the ``app`` service: ``coop-cloud.<stack>.version``,
  ``.recipe``, ``.chaos`` and ``.chaos-version`` (the short commit).
- **converged**: every service runs its desired replicas, every running container is
  healthy, no update is in progress.
- **chaos upgrade**: deploy the head over a running app. Swarm may roll a failing new
  task back and still report success; :func:`check_upgrade` reads the live
  ``UpdateStatus``, labels and image and fails with the true reason.
- **teardown**: remove services, wait until no container is left, then networks,
  secrets, configs and volumes; prove nothing of the stack remains.
"""
from __future__ import annotations

import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .port import ServiceState, SwarmError, SwarmPort
from .recipe import Recipe

ROLLED_BACK = ("rollback_started", "rollback_paused", "rollback_completed")
IN_PROGRESS = ("updating", "rollback_started")


class DeployError(SwarmError):
    """The app did not deploy, converge or upgrade; the message is the true reason."""


@dataclass
class App:
    """One app of a recipe on a swarm, and what it needs to be deployed."""

    port: SwarmPort
    recipe: Recipe
    log: Callable[[str], None] = print
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def stack(self) -> str:
        return self.recipe.stack

    # --- deploy -------------------------------------------------------------------------

    def create_secrets(self) -> list[str]:
        """Create each external secret the compose config names, with random content."""
        config, _ = self.recipe.render()
        created = []
        existing = set(self.port.leftovers(self.stack).get("secrets", []))
        for key, spec in sorted((config.get("secrets") or {}).items()):
            spec = spec or {}
            name = spec.get("name") or f"{self.stack}_{key}"
            if not spec.get("external") or name in existing:
                continue
            if len(name) > 64:
                raise DeployError(f"secret name {name!r} is over swarm's 64 characters")
            self.port.create_secret(name, secrets.token_urlsafe(24).encode(), self.stack)
            created.append(name)
        return created

    def deploy(self, commit: str = "", chaos: bool = False) -> None:
        """``docker stack deploy`` of the recipe with abra's labels stamped on ``app``."""
        env = self.recipe.env()
        files = self.recipe.compose_files(env)
        config, problems = self.recipe.render()
        if problems:
            raise DeployError("the recipe does not render: " + "; ".join(problems))
        labels = {f"coop-cloud.{self.stack}.recipe": self.recipe.name,
                  f"coop-cloud.{self.stack}.chaos": "true" if chaos else "false"}
        version = self.recipe.version(config)
        if version:
            labels[f"coop-cloud.{self.stack}.version"] = version
        if chaos and commit:
            labels[f"coop-cloud.{self.stack}.chaos-version"] = commit[:8]
        stamp = {"version": str(config.get("version", "3.8")),
                 "services": {"app": {"deploy": {"labels": labels}}}}
        with tempfile.TemporaryDirectory(prefix="ccci-stamp-") as tmp:
            stamp_file = Path(tmp) / "compose.ccci-stamp.yml"
            stamp_file.write_text(yaml.safe_dump(stamp))
            self.log(f"deploying {self.recipe.name} {version or '(no version)'} as {self.stack}"
                     f"{' (chaos ' + commit[:8] + ')' if chaos and commit else ''}\n")
            self.log(self.port.deploy(self.stack, files + [stamp_file], env, self.recipe.path))

    # --- waiting --------------------------------------------------------------------------

    def wait_converged(self, timeout: float, upgrading: bool = False) -> list[ServiceState]:
        """Until every service runs healthy at its desired scale (and, after an upgrade,
        its update has ended); raises ``DeployError`` with the reason otherwise."""
        deadline = time.monotonic() + timeout
        last: list[ServiceState] = []
        while time.monotonic() < deadline and not self.stop.is_set():
            last = self.port.services(self.stack)
            rolled = [s for s in last if s.update_state in ROLLED_BACK]
            if rolled and all(s.update_state not in IN_PROGRESS for s in rolled):
                return last  # check_upgrade says what happened
            if last and all(s.running >= s.desired and s.healthy >= s.desired
                            and s.update_state not in IN_PROGRESS for s in last):
                if not upgrading or all(s.update_state in ("", "completed") for s in last):
                    return last
            time.sleep(0.5)
        if self.stop.is_set():
            raise DeployError("stopped")
        detail = "; ".join(f"{s.name}: {s.running}/{s.desired} running, {s.healthy} healthy"
                           + (f", update {s.update_state}" if s.update_state else "")
                           + (f", errors: {', '.join(s.task_errors)}" if s.task_errors else "")
                           for s in last) or "no services"
        raise DeployError(f"{self.stack} did not converge in {timeout:.0f}s: {detail}")

    def probe(self) -> str:
        """Readiness probe of the app's served port; raises ``DeployError`` if it fails."""
        port = self.recipe.probe_port()
        if port is None:
            return "no served port declared (traefik loadbalancer label): probe skipped"
        problem = self.port.probe(f"{self.stack}_app", port)
        if problem is None:
            return f"no wget or nc in the app image: probe of port {port} skipped"
        if problem:
            raise DeployError(f"readiness probe failed: {problem}")
        return f"app answers on port {port}"

    # --- upgrades ---------------------------------------------------------------------------

    def check_upgrade(self, states: list[ServiceState], version: str, commit: str,
                      image: str = "") -> None:
        """The head is really what runs, or the true reason it is not."""
        app = next((s for s in states if s.name == f"{self.stack}_app"), None)
        if app is None:
            raise DeployError("no app service after the upgrade")
        if app.update_state in ROLLED_BACK or app.update_state.endswith("paused"):
            why = "; ".join(app.task_errors)
            raise DeployError(f"head applied, then swarm rolled back: "
                              f"{app.update_message or app.update_state}"
                              + (f" (new task: {why})" if why else ""))
        live_chaos = app.labels.get(f"coop-cloud.{self.stack}.chaos-version", "")
        live_version = app.labels.get(f"coop-cloud.{self.stack}.version", "")
        if commit and live_chaos != commit[:8]:
            raise DeployError(f"the app runs chaos-version {live_chaos or '(none)'}, "
                              f"not the head {commit[:8]}")
        if version and live_version != version:
            raise DeployError(f"the app runs version {live_version or '(none)'}, not {version}")
        if image and app.image != image:
            raise DeployError(f"the app runs image {app.image}, not the head's {image}")

    # --- teardown ---------------------------------------------------------------------------

    def teardown(self, keep_volumes: bool = False) -> None:
        self.log(f"tearing down {self.stack}\n")
        self.port.purge(self.stack, keep_volumes=keep_volumes)
        left = self.port.leftovers(self.stack)
        if keep_volumes:
            left.pop("volumes", None)
        if left:
            raise DeployError(f"teardown left {left}")
