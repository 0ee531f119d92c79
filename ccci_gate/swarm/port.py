"""The narrow Docker port: every call the Swarm job kinds make to a Docker Engine.

Nothing else in ``ccci_gate`` talks to Docker. Stacks are deployed with the ``docker``
CLI (``docker stack deploy`` is a CLI feature; it runs as an argv with the app's env,
never a shell string); everything else goes through the Docker SDK. Stack resources
carry the label ``com.docker.stack.namespace=<stack>``, which is how they are found.
"""
from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import docker
import docker.errors
import docker.types

from .evidence import ServiceState, TaskState

NAMESPACE = "com.docker.stack.namespace"
OWNED = "ccci-gate.owned"   # the label of every image ccci-gate makes (``import_image``)


class SwarmError(RuntimeError):
    """Docker refused or failed; the message says what and why."""


class SwarmPort:
    """A Docker Engine in swarm mode."""

    def __init__(self, client: docker.DockerClient | None = None, docker_bin: str = "docker"):
        self.client = client or docker.from_env(timeout=60)
        self.docker_bin = docker_bin
        self._healthchecks: dict[str, Mapping[str, Any]] = {}

    # --- stacks --------------------------------------------------------------------------

    def deploy(self, stack: str, compose_files: list[Path], env: Mapping[str, str],
               cwd: Path) -> str:
        argv = [self.docker_bin, "stack", "deploy", "--resolve-image", "never"]
        for path in compose_files:
            argv += ["-c", str(path.resolve())]
        argv.append(stack)
        proc = subprocess.run(argv, cwd=cwd.resolve(), env=dict(env), capture_output=True,
                              text=True, timeout=300)
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SwarmError(f"docker stack deploy {stack} failed: {output.strip()}")
        return output

    def remove_stack(self, stack: str) -> None:
        for service in self._services(stack):
            try:
                service.remove()
            except docker.errors.NotFound:
                pass

    def stacks(self) -> set[str]:
        """Every stack namespace that still has services, volumes, secrets or networks."""
        names: set[str] = set()
        for kind in (self.client.services.list, self.client.volumes.list,
                     self.client.secrets.list, self.client.networks.list, self.client.configs.list):
            for obj in kind(filters={"label": NAMESPACE}):
                names.add(_attr_labels(obj).get(NAMESPACE, ""))
        names.discard("")
        return names

    def _services(self, stack: str) -> list[Any]:
        return self.client.services.list(filters={"label": f"{NAMESPACE}={stack}"})

    def services(self, stack: str) -> list[ServiceState]:
        """Every service of ``stack``: its live and previous spec, update status, and its
        tasks with how their containers ended (exit code, OOM kill, health)."""
        return [self._state(service) for service in self._services(stack)]

    def _state(self, service: Any) -> ServiceState:
        attrs = service.attrs
        spec = attrs["Spec"]
        previous = attrs.get("PreviousSpec") or {}
        mode = spec.get("Mode", {})
        desired = mode.get("Replicated", {}).get("Replicas", 1) if "Replicated" in mode else 1
        tasks = tuple(self._task(t, spec["TaskTemplate"]) for t in sorted(
            service.tasks(), key=lambda t: t.get("CreatedAt", ""), reverse=True))
        container_spec = spec["TaskTemplate"].get("ContainerSpec", {})
        running = [t for t in tasks if t.current and t.state == "running"
                   and t.desired == "running"]
        errors = tuple(sorted({t.error for t in tasks if t.error}))
        update = attrs.get("UpdateStatus") or {}
        # the compose's healthcheck, else the one the image declares (swarm runs either)
        health = container_spec.get("Healthcheck") or self._image_healthcheck(_image(spec))
        has_check = health.get("Test") not in (None, [], ["NONE"])
        interval = health.get("Interval", 30 * 10**9) / 1e9
        mounts = tuple((m.get("Source", ""), m.get("Target", ""))
                       for m in container_spec.get("Mounts") or [] if m.get("Type") == "volume")
        limits = (spec["TaskTemplate"].get("Resources") or {}).get("Limits") or {}
        restart = spec["TaskTemplate"].get("RestartPolicy") or {}
        return ServiceState(
            spec["Name"], _image(spec), spec.get("Labels") or {}, desired, len(running),
            sum(1 for t in running if t.health in ("healthy", "")), update.get("State", ""),
            update.get("Message", ""), errors, tasks,
            previous_image=_image(previous) if previous else "",
            previous_labels=previous.get("Labels") or {}, mounts=mounts,
            monitor=(spec.get("UpdateConfig") or {}).get("Monitor", 5 * 10**9) / 1e9,
            health_window=interval * (health.get("Retries", 3) + 1) if has_check else 0.0,
            memory_limit=int(limits.get("MemoryBytes") or 0),
            restart=restart.get("Condition") or "any",
            max_attempts=int(restart.get("MaxAttempts") or 0))

    def _image_healthcheck(self, image: str) -> Mapping[str, Any]:
        if image not in self._healthchecks:
            try:
                config = self.client.images.get(image).attrs.get("Config") or {}
            except docker.errors.ImageNotFound:
                return {}       # not on this host (yet): ask again next time
            self._healthchecks[image] = config.get("Healthcheck") or {}
        return self._healthchecks[image]

    def _task(self, task: Mapping[str, Any], template: Mapping[str, Any]) -> TaskState:
        status = task.get("Status", {})
        container = status.get("ContainerStatus") or {}
        state: Mapping[str, Any] = {}
        if container.get("ContainerID"):
            try:
                state = self.client.api.inspect_container(container["ContainerID"])["State"]
            except docker.errors.NotFound:
                state = {}
        health = (state.get("Health") or {}).get("Status", "")
        task_state, error = status.get("State", ""), status.get("Err", "") or ""
        changed = False     # swarm has not yet seen the end of a container that ended
        if task_state == "running" and state and not state.get("Running", False):
            # the container ended before swarm noticed: say how it ended
            task_state = "failed" if state.get("ExitCode") else "complete"
            changed = True
            error = error or f"container exited ({state.get('ExitCode', '?')})"
        return TaskState(
            id=task["ID"], slot=int(task.get("Slot") or 0), state=task_state,
            desired=task.get("DesiredState", ""), error=error,
            exit_code=int(container.get("ExitCode") or state.get("ExitCode") or 0),
            current=_task_spec(task.get("Spec") or {}) == _task_spec(template),
            health=health, oom_killed=bool(state.get("OOMKilled")),
            age=0.0 if changed else _age(status.get("Timestamp", "")))

    def task_addresses(self, service: str) -> list[tuple[str, str]]:
        """(task, address) of each running task of ``service`` on its first network —
        where a proxy on that network sends requests; the task is ``slot N`` (or the
        node of a global service's task)."""
        svc = self.client.services.get(service)
        network = self._first_network(svc.attrs["Spec"])
        found = []
        for task in svc.tasks(filters={"desired-state": "running"}):
            if task["Status"]["State"] != "running":
                continue
            name = (f"slot {task['Slot']}" if task.get("Slot")
                    else f"node {task.get('NodeID', '')[:12]}")
            for attached in task.get("NetworksAttachments") or []:
                if attached["Network"]["ID"] == network and attached.get("Addresses"):
                    found.append((name, attached["Addresses"][0].split("/")[0]))
        return sorted(found)

    @staticmethod
    def _first_network(spec: Mapping[str, Any]) -> str | None:
        networks = [n["Target"] for n in spec["TaskTemplate"].get("Networks") or []]
        return networks[0] if networks else None

    def probe(self, stack: str, service: str, argv: list[str], image: str,
              timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` from outside the app: a one-shot task of ``image`` on the
        service's first network (as a proxy would reach it). Returns the probe's exit
        code and its output, -1 when the probe task itself could not run (busybox
        ``wget -S`` prints the status line; no ``-T``:
        Debian's static busybox wget crashes on it, seen here with exit 139)."""
        network = self._first_network(self.client.services.get(service).attrs["Spec"])
        if network is None:
            return -1, f"{service} is on no network"
        name = f"{stack}_ccci-probe"
        probe = self.client.services.create(
            image, argv, name=name,
            networks=[network], labels={NAMESPACE: stack},
            mode=docker.types.ServiceMode("replicated-job"),
            restart_policy=docker.types.RestartPolicy(condition="none"))
        try:
            deadline = time.monotonic() + timeout
            started = False
            while time.monotonic() < deadline:
                tasks = probe.tasks()
                started = started or any(t["Status"]["State"] == "running" for t in tasks)
                done = [t for t in tasks if t["Status"]["State"] in
                        ("complete", "failed", "rejected")]
                if done:
                    status = done[0]["Status"]
                    cid = (status.get("ContainerStatus") or {}).get("ContainerID")
                    output = ""
                    if cid:
                        output = self.client.api.logs(cid, stdout=True, stderr=True).decode(
                            errors="replace")
                    code = int((status.get("ContainerStatus") or {}).get("ExitCode") or 0)
                    if status["State"] == "rejected":
                        return -1, status.get("Err", "probe rejected")
                    return code, output.strip() or status.get("Err", "")
                time.sleep(0.2)
            if started:   # it ran and waited: the app accepted and never answered
                return 124, f"no answer within {timeout:.0f}s"
            return -1, f"the probe task did not start within {timeout:.0f}s"
        finally:
            _quiet(probe.remove)

    def image_exists(self, name: str) -> bool:
        try:
            self.client.images.get(name)
            return True
        except docker.errors.ImageNotFound:
            return False

    def import_image(self, name: str, rootfs_tar: bytes) -> None:
        """``docker import`` of a root filesystem tarball (no registry involved), labelled
        ``ccci-gate.owned=1`` so that ``prune_owned_images`` may remove it later."""
        proc = subprocess.run([self.docker_bin, "import", "--change", f"LABEL {OWNED}=1", "-",
                               name], input=rootfs_tar, capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise SwarmError(f"docker import {name}: {proc.stderr.decode(errors='replace')}")

    def prune_owned_images(self, keep: frozenset[str] = frozenset()) -> tuple[list[str], int]:
        """Remove the images labelled ``ccci-gate.owned`` (those ``import_image`` made),
        but not those tagged with a name in ``keep``; Docker refuses, without force, to
        remove an image a container (running or stopped) uses, and such an image stays.
        Other images, containers and volumes are never touched. Returns the names (or
        ids) removed and the bytes they held."""
        removed, freed = [], 0
        for image in self.client.images.list(filters={"label": OWNED}):
            if keep & set(image.tags):
                continue
            try:
                for name in image.tags or [image.id]:
                    self.client.images.remove(name)
            except docker.errors.NotFound:
                continue   # removed meanwhile (another sweep on this host)
            except docker.errors.APIError:
                continue   # in use (409), or the daemon said no: it stays
            removed += image.tags or [image.id]
            freed += int(image.attrs.get("Size") or 0)
        return removed, freed

    def containers(self, stack: str) -> list[str]:
        return [c.name for c in self.client.containers.list(
            all=True, filters={"label": f"{NAMESPACE}={stack}"})]

    # --- volumes, secrets, networks, configs ---------------------------------------------

    def volumes(self, stack: str) -> dict[str, Path]:
        """The stack's volumes and where their data lives on this host."""
        return {v.name: Path(v.attrs["Mountpoint"]) for v in
                self.client.volumes.list(filters={"label": f"{NAMESPACE}={stack}"})}

    def create_volume(self, name: str, stack: str) -> Path:
        volume = self.client.volumes.create(name, labels={NAMESPACE: stack})
        return Path(volume.attrs["Mountpoint"])

    def create_secret(self, name: str, data: bytes, stack: str) -> None:
        try:
            self.client.secrets.create(name=name, data=data, labels={NAMESPACE: stack})
        except docker.errors.APIError as exc:
            raise SwarmError(f"creating secret {name}: {exc.explanation or exc}") from None

    def leftovers(self, stack: str) -> dict[str, list[str]]:
        """Everything of ``stack`` still on the engine, by kind (empty: all gone)."""
        label = {"label": f"{NAMESPACE}={stack}"}
        found = {
            "services": [s.name for s in self.client.services.list(filters=label)],
            "containers": self.containers(stack),
            "volumes": [v.name for v in self.client.volumes.list(filters=label)],
            "secrets": [s.name for s in self.client.secrets.list(filters=label)],
            "configs": [c.name for c in self.client.configs.list(filters=label)],
            "networks": [n.name for n in self.client.networks.list(filters=label)],
        }
        return {kind: names for kind, names in found.items() if names}

    def purge(self, stack: str, keep_volumes: bool = False, timeout: float = 120.0,
              kill: bool = False) -> None:
        """Remove the stack and wait until its tasks are gone; then its networks,
        secrets, configs and (unless kept) volumes. Volumes can only go once no
        container uses them, so this waits for the containers first.

        ``kill``: remove the containers at once (SIGKILL) instead of letting swarm stop
        them: swarm first takes a removed service's tasks out of its load balancer and
        only stops them ~4 s later (measured here), then gives each its stop grace
        period. Only for data nobody reads again: volumes removed, or refilled from a
        snapshot before their next use. Data that is kept (a snapshot follows) needs
        the graceful stop."""
        self.remove_stack(stack)
        label = {"label": f"{NAMESPACE}={stack}"}
        if kill:
            for container in self.client.containers.list(all=True, filters=label):
                _quiet(container.remove, force=True)
        deadline = time.monotonic() + timeout
        while self.containers(stack) and time.monotonic() < deadline:
            for container in self.client.containers.list(all=True, filters=label):
                if container.status in ("exited", "dead", "created"):
                    _quiet(container.remove, force=True)
            time.sleep(0.2)
        kinds = ("networks", "secrets", "configs") + (() if keep_volumes else ("volumes",))
        while True:
            for kind in kinds:
                for obj in getattr(self.client, kind).list(filters=label):
                    try:
                        obj.remove()
                    except docker.errors.APIError:
                        pass  # gone meanwhile, or still in use for a moment: next pass
            left = self.leftovers(stack)
            if keep_volumes:
                left.pop("volumes", None)
            if not left:
                return
            if time.monotonic() > deadline:
                raise SwarmError(f"stack {stack} not fully removed: {left}")
            time.sleep(0.3)


def _image(spec: Mapping[str, Any]) -> str:
    return spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@", 1)[0]


def _task_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What makes swarm replace a task: its whole task spec (container, resources,
    restart policy, networks, log driver, force-update counter), not only the container
    spec. Placement is left out (swarm keeps a task whose node still fits), and so is
    ``Runtime``, which the API shows on the service only."""
    return {k: v for k, v in spec.items() if k not in ("Placement", "Runtime") and v}


def _age(timestamp: str) -> float:
    """Seconds since a swarm status timestamp (RFC 3339, nanoseconds); 0 if unknown."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?", timestamp or "")
    if not match:
        return 0.0
    when = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    fraction = float("0." + (match.group(2) or "0"))
    return max(0.0, time.time() - when.timestamp() - fraction)


def _attr_labels(obj: Any) -> Mapping[str, str]:
    attrs = obj.attrs
    return attrs.get("Labels") or (attrs.get("Spec") or {}).get("Labels") or {}


def _quiet(call: Any, **kw: Any) -> None:
    try:
        call(**kw)
    except docker.errors.APIError:
        pass
