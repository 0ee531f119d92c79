"""Deploying an app the way abra does, waiting for it honestly, and tearing it down.

- **cold deploy**: generate the recipe's secrets (``<stack>_<secret>_<version>``),
  deploy the compose files ``COMPOSE_FILE`` names with the app's env, plus a stamp
  overlay putting abra's labels on the ``app`` service: ``coop-cloud.<stack>.version``,
  ``.recipe``, ``.chaos`` and ``.chaos-version`` (the short commit).
- **converged**: every service runs its desired replicas, every running container is
  healthy, no update is in progress. Waiting ends early, with the reason, on evidence
  that waiting cannot cure (``evidence.definitive``): a missing image, a rejected or
  crash-looping task, a paused update, no node with the resources.
- **settled**: converged, and still so after the settle window (``evidence.settle_window``):
  no task of any service ended, restarted or turned unhealthy meanwhile.
- **chaos upgrade**: deploy the head over a running app. Swarm may roll a failing new
  task of *any* service back and still report success; :meth:`App.check_upgrade` reads
  every service's ``UpdateStatus``, labels, image and volume mounts and fails with the
  true reason.
- **teardown**: remove services, wait until no container is left, then networks,
  secrets, configs and volumes; prove nothing of the stack remains.

A failure of the change raises :class:`DeployError`; a fault of the host (out of memory
or resources, the daemon or a registry failing) raises :class:`InfraError`.
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

from . import evidence, probe
from .evidence import Problem, ServiceState
from .port import SwarmError, SwarmPort
from .recipe import Recipe

SETTLE_FLOOR = 30.0
POLL = 0.2      # seconds between looks while waiting to converge (a look costs ~10 ms here)


class DeployError(SwarmError):
    """The app did not deploy, converge or upgrade; the message is the true reason."""


class InfraError(SwarmError):
    """The host, not the change, failed the run (resources, the daemon, a registry)."""


def fail(problem: Problem) -> SwarmError:
    return InfraError(problem.message) if problem.infra else DeployError(problem.message)


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
            try:
                self.log(self.port.deploy(self.stack, files + [stamp_file], env, self.recipe.path))
            except SwarmError as exc:   # the daemon's fault, or the compose file's
                raise fail(Problem(str(exc), infra=bool(evidence.INFRA.search(str(exc))))) from None

    # --- waiting --------------------------------------------------------------------------

    def wait_converged(self, timeout: float, upgrading: bool = False) -> list[ServiceState]:
        """Until every service runs healthy at its desired scale (and, after an upgrade,
        its update has ended); raises with the reason as soon as it is definitive."""
        deadline = time.monotonic() + timeout
        last: list[ServiceState] = []
        while time.monotonic() < deadline and not self.stop.is_set():
            last = self.port.services(self.stack)
            rolled = [s for s in last if s.update_state in evidence.ROLLED_BACK]
            if rolled and all(s.update_state not in evidence.IN_PROGRESS for s in rolled):
                return last  # check_upgrade says what happened
            problem = evidence.definitive(last, self.stack)
            if problem:
                self._evidence(last)
                raise fail(problem)
            if last and all(s.converged for s in last):
                if not upgrading or all(s.update_state in ("", "completed") for s in last):
                    return last
            time.sleep(POLL)
        if self.stop.is_set():
            raise DeployError("stopped")
        self._evidence(last)
        host = evidence.waiting_for_host(last, self.stack, grace=0)
        if host:    # still waiting for the host's resources at the timeout
            raise fail(host)
        detail = "; ".join(f"{evidence.short(s.name, self.stack)}: {s.running}/{s.desired} "
                           f"running, {s.healthy} healthy"
                           + (f", update {s.update_state}" if s.update_state else "")
                           + (f", errors: {', '.join(s.task_errors)}" if s.task_errors else "")
                           for s in last) or "no services"
        raise DeployError(f"{self.stack} did not converge in {timeout:.0f}s: {detail}")

    def settle(self, floor: float = SETTLE_FLOOR, timeout: float | None = None) -> str:
        """Watch every service for the settle window after convergence; any task that
        ends, restarts or turns unhealthy meanwhile fails the run. Returns the window
        used and why (the recipe's ``ccci.settle`` label replaces the floor)."""
        label = self.recipe.ccci_label("settle")
        floor = float(label) if label.isdigit() else floor
        start = self.port.services(self.stack)
        lost = [s for s in start if not s.converged]
        if lost:   # something ended between convergence and this first look
            self._evidence(start)
            raise DeployError("; ".join(
                f"service {evidence.short(s.name, self.stack)} stopped running right after it "
                f"converged ({s.running}/{s.desired} running, {s.healthy} healthy"
                + (f"; {', '.join(s.task_errors)}" if s.task_errors else "") + ")" for s in lost))
        window, why = evidence.settle_window(start, floor)
        if timeout is not None and window > timeout:
            raise DeployError(f"the settle window {why} does not fit in the "
                              f"{timeout:.0f}s left to the build")
        self.log(f"settling: watching every service for {why}\n")
        began = time.monotonic()
        while not self.stop.is_set():
            elapsed = time.monotonic() - began
            now = self.port.services(self.stack)
            problem = evidence.settle_problem(start, now, self.stack, elapsed)
            if problem:
                self._evidence(now)
                raise fail(problem)
            if elapsed >= window:
                return f"stayed healthy for the settle window of {window:g}s"
            time.sleep(min(0.5, max(0.0, window - elapsed)))
        raise DeployError("stopped")

    def _evidence(self, states: list[ServiceState]) -> None:
        for line in evidence.evidence(states, self.stack):
            self.log(line + "\n")

    def probe(self) -> str:
        """Serving, probed from outside the app (see ``swarm.probe``). Returns what was
        verified, or why serving is unverified; raises ``DeployError`` if the app does not
        serve, ``InfraError`` if the probe itself could not run."""
        config, _ = self.recipe.render()
        port = self.recipe.probe_port(config)
        if port is None:
            return "serving unverified: no served port declared (traefik loadbalancer label)"
        if not self.port.image_exists(probe.IMAGE):
            if not probe.BUSYBOX.is_file():
                return (f"serving unverified: no probe image and no {probe.BUSYBOX} on this "
                        f"host to build one (apt-get install busybox-static)")
            self.port.import_image(probe.IMAGE, probe.rootfs())
        path = "/" + self.recipe.ccci_label("health-path", config).lstrip("/")
        codes = self.recipe.ccci_label("health-codes", config) or probe.DEFAULT_CODES
        # every task of the app, as Traefik's swarm provider reaches them (not the VIP)
        url = f"http://tasks.{self.stack}_app:{port}{path}"
        service = f"{self.stack}_app"
        for attempt in range(3):
            tasks = dict((address, name) for name, address in self.port.task_addresses(service))
            if not tasks:
                raise DeployError(f"serving: no running task of {service} to probe")
            exit_code, output = self.port.probe(
                self.stack, service, probe.command(port, path, list(tasks)), probe.IMAGE)
            if exit_code == -1:   # our probe task itself could not run: the host's fault
                raise InfraError(f"the serving probe could not run: {output}")
            answers = probe.answers(output)
            bad = {a: answers.get(a) for a in tasks
                   if answers.get(a) is None or not probe.accepts(codes, answers[a] or 0)}
            if not bad:
                got = ", ".join(sorted({str(c) for c in answers.values()}))
                return (f"serving: {url} answered {got} to a probe on the stack's network "
                        f"(from each of its {len(tasks)} task(s): {', '.join(sorted(tasks.values()))})")
            if any(code is not None for code in bad.values()):
                break   # a definite answer, and not an accepted one
            time.sleep(1)
        last = output.strip().splitlines()[-1] if output.strip() else f"exit {exit_code}"
        raise DeployError(f"serving: {url}: " + "; ".join(
            f"{tasks[a]} ({a}) answered " + (f"{code}, not one of {codes}" if code is not None
                                             else f"nothing a probe could read ({last})")
            for a, code in sorted(bad.items(), key=lambda kv: tasks[kv[0]])))

    # --- upgrades ---------------------------------------------------------------------------

    def check_upgrade(self, before: list[ServiceState], after: list[ServiceState],
                      head: Recipe, commit: str) -> list[str]:
        """The head is really what runs, on every service, with every volume where the
        base had it; raises with every reason it is not. Returns warnings."""
        self._evidence(after)
        config, _ = head.render()
        base_images = {evidence.short(s.name, self.stack): s.image for s in before}
        problems = evidence.rollbacks(after, self.stack)
        problems += evidence.reverted(after, head.images(config), base_images, self.stack)
        app = next((s for s in after if s.name == f"{self.stack}_app"), None)
        version = head.version(config)
        if app is not None:
            live_chaos = app.labels.get(f"coop-cloud.{self.stack}.chaos-version", "")
            live_version = app.labels.get(f"coop-cloud.{self.stack}.version", "")
            if commit and live_chaos != commit[:8]:
                problems.append(f"the app runs chaos-version {live_chaos or '(none)'}, "
                                f"not the head {commit[:8]}")
            if version and live_version != version:
                problems.append(f"the app runs version {live_version or '(none)'}, not {version}")
        problems += evidence.mount_changes(before, after, self.stack)
        if problems:
            raise DeployError("; ".join(problems))
        return (evidence.image_warnings(before, after, self.stack,
                                        f"coop-cloud.{self.stack}.version")
                + evidence.strays(after, head.images(config), self.stack))

    # --- teardown ---------------------------------------------------------------------------

    def teardown(self, keep_volumes: bool = False) -> None:
        """Remove the app; its containers are killed when its volumes go too (nothing
        reads their data again: ``SwarmPort.purge``)."""
        self.log(f"tearing down {self.stack}\n")
        self.port.purge(self.stack, keep_volumes=keep_volumes, kill=not keep_volumes)
        left = self.port.leftovers(self.stack)
        if keep_volumes:
            left.pop("volumes", None)
        if left:
            raise DeployError(f"teardown left {left}")
