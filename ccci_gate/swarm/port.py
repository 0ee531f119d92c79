"""The narrow Docker port: every call the Swarm job kinds make to a Docker Engine.

Nothing else in ``ccci_gate`` talks to Docker. Stacks are deployed with the ``docker``
CLI (``docker stack deploy`` is a CLI feature; it runs as an argv with the app's env,
never a shell string); everything else goes through the Docker SDK. Stack resources
carry the label ``com.docker.stack.namespace=<stack>``, which is how they are found.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import docker
import docker.errors

NAMESPACE = "com.docker.stack.namespace"


class SwarmError(RuntimeError):
    """Docker refused or failed; the message says what and why."""


@dataclass(frozen=True)
class ServiceState:
    """What a service is doing now."""

    name: str
    image: str
    labels: Mapping[str, str]
    desired: int              # replicas wanted (replicated mode)
    running: int              # tasks running
    healthy: int              # running containers whose healthcheck passes (or has none)
    update_state: str         # "" | updating | completed | paused | rollback_started | ...
    update_message: str
    task_errors: tuple[str, ...]


class SwarmPort:
    """A Docker Engine in swarm mode."""

    def __init__(self, client: docker.DockerClient | None = None, docker_bin: str = "docker"):
        self.client = client or docker.from_env(timeout=60)
        self.docker_bin = docker_bin

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
        out = []
        for service in self._services(stack):
            attrs = service.attrs
            spec = attrs["Spec"]
            mode = spec.get("Mode", {})
            desired = mode.get("Replicated", {}).get("Replicas", 1) if "Replicated" in mode else 1
            tasks = service.tasks()
            running = [t for t in tasks if t["Status"]["State"] == "running"
                       and t.get("DesiredState") == "running"]
            errors = tuple(sorted({t["Status"].get("Err", "") for t in tasks
                                   if t["Status"].get("Err")}))
            healthy = sum(1 for t in running if self._task_healthy(t))
            update = attrs.get("UpdateStatus") or {}
            image = spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@", 1)[0]
            out.append(ServiceState(spec["Name"], image, spec.get("Labels") or {}, desired,
                                    len(running), healthy, update.get("State", ""),
                                    update.get("Message", ""), errors))
        return out

    def _task_healthy(self, task: Mapping[str, Any]) -> bool:
        cid = (task.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            return False
        try:
            state = self.client.api.inspect_container(cid)["State"]
        except docker.errors.NotFound:
            return False
        health = state.get("Health")
        return state.get("Running", False) and (health is None or health.get("Status") == "healthy")

    def probe(self, service: str, port: int, timeout: int = 5) -> str | None:
        """HTTP, else TCP, readiness of ``port`` inside a running task of ``service``
        (from within its own network namespace, so no port has to be published).
        Returns "" when it answers, the failure otherwise, None if the image has no
        probing tool (wget or nc)."""
        running = [c for c in self.client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={service}"})]
        if not running:
            return f"no running container of {service}"
        container = running[0]
        # no ``-T``: Debian's static busybox wget crashes on it (seen here, exit 139)
        attempts = (["wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}/"],
                    ["nc", "-z", "-w", str(timeout), "127.0.0.1", str(port)])
        for argv in attempts:
            code, output = container.exec_run(argv, demux=False)
            if code == 0:
                return ""
            if code not in (126, 127) and b"executable file not found" not in (output or b""):
                return f"{argv[0]} 127.0.0.1:{port} failed ({code}): {(output or b'').decode(errors='replace').strip()}"
        return None

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

    def purge(self, stack: str, keep_volumes: bool = False, timeout: float = 120.0) -> None:
        """Remove the stack and wait until its tasks are gone; then its networks,
        secrets, configs and (unless kept) volumes. Volumes can only go once no
        container uses them, so this waits for the containers first."""
        self.remove_stack(stack)
        label = {"label": f"{NAMESPACE}={stack}"}
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


def _attr_labels(obj: Any) -> Mapping[str, str]:
    attrs = obj.attrs
    return attrs.get("Labels") or (attrs.get("Spec") or {}).get("Labels") or {}


def _quiet(call: Any, **kw: Any) -> None:
    try:
        call(**kw)
    except docker.errors.APIError:
        pass
