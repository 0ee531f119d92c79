"""What swarm says about a stack, as plain values, and what it means for a verdict.

``port.py`` reads a stack into these values; the rules below turn them into the true
reason a deploy or an upgrade is not what it claims to be. No Docker here: tests build
the values by hand and step the rules.

- a **task** is one attempt of swarm to run a service slot; it is **current** when it
  runs the service's current container spec (after a rollback, the base's spec is
  current again).
- a **problem** is a reason to fail a run. It is the change's **FAILURE** unless
  ``infra`` says the host is at fault (out of memory or resources, the Docker daemon or
  a registry failing): then the build ends in ERROR and is retried, never blamed on the
  change.
- the **settle window** is how long every service must stay healthy after convergence:
  at least the longest update monitor (the only window in which swarm itself reacts to a
  failing task), the longest healthcheck ``interval × (retries + 1)`` (a task that turns
  sick just after a passing check is unhealthy ``retries`` intervals later), and a floor.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

ROLLED_BACK = ("rollback_started", "rollback_paused", "rollback_completed")
IN_PROGRESS = ("updating", "rollback_started")
PAUSED = ("paused", "rollback_paused")
FAILED_TASK = ("failed", "rejected", "shutdown", "complete", "orphaned", "remove")
ALIVE = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
         "starting", "running")
CRASH_LOOP = 3          # failed starts of the current spec, none running: it never starts
PENDING_GRACE = 5.0     # seconds a task must wait for resources before the host is blamed
REJECTED_TWICE = 2      # rejections of the current spec with one error: it never will

# Task errors that name the host, not the change.
INFRA = re.compile(r"insufficient resources|no suitable node|no space left on device|"
                   r"cannot allocate memory|pull access denied|toomanyrequests|"
                   r"dial tcp|i/o timeout|TLS handshake|connection refused|"
                   r"Cannot connect to the Docker daemon|context deadline exceeded|"
                   r"not a swarm manager|swarm does not have a leader|"
                   r"rpc error: code = (?:Unavailable|DeadlineExceeded|ResourceExhausted)|"
                   r"update out of sequence", re.I)


@dataclass(frozen=True)
class TaskState:
    """One task of a service, with what its container said when it ended."""

    id: str
    slot: int
    state: str                 # new | pending | ... | running | complete | failed | rejected | shutdown
    desired: str               # running | shutdown | ...
    error: str = ""
    exit_code: int = 0
    current: bool = True       # runs the service's current task spec (what swarm compares)
    health: str = ""           # healthy | unhealthy | starting | "" (no healthcheck / no container)
    oom_killed: bool = False
    age: float = 0.0           # seconds since its state last changed


@dataclass(frozen=True)
class ServiceState:
    """What a service is doing now, and the spec it replaced."""

    name: str
    image: str
    labels: Mapping[str, str]
    desired: int               # replicas wanted (replicated mode)
    running: int               # current tasks running
    healthy: int               # running tasks whose healthcheck passes (or that have none)
    update_state: str          # "" | updating | completed | paused | rollback_started | ...
    update_message: str
    task_errors: tuple[str, ...]
    tasks: tuple[TaskState, ...] = ()
    previous_image: str = ""
    previous_labels: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[tuple[str, str], ...] = ()   # (volume, path in the container)
    monitor: float = 5.0       # UpdateConfig.Monitor, seconds (swarm's default 5 s)
    health_window: float = 0.0  # healthcheck interval × (retries + 1), seconds
    memory_limit: int = 0      # bytes, 0 = none declared
    restart: str = "any"       # RestartPolicy.Condition: any | on-failure | none
    max_attempts: int = 0      # RestartPolicy.MaxAttempts, 0 = unlimited

    @property
    def done(self) -> int:
        """Slots whose task of the current spec exited 0 and, by the service's restart
        policy (``none`` or ``on-failure``), is not to run again: a finished one-shot."""
        if self.restart not in ("none", "on-failure"):
            return 0
        newest: dict[int, TaskState] = {}
        for task in self.tasks:                 # newest first
            if task.current:
                newest.setdefault(task.slot, task)
        return sum(1 for t in newest.values() if t.state == "complete" and not t.exit_code)

    @property
    def converged(self) -> bool:
        return (self.running + self.done >= self.desired
                and self.healthy + self.done >= self.desired
                and self.update_state not in IN_PROGRESS)


@dataclass(frozen=True)
class Problem:
    """A reason to fail the run: the change's FAILURE, or the host's (``infra``)."""

    message: str
    infra: bool = False


def short(name: str, stack: str) -> str:
    """``hell-1a2b3c_ci_local_app`` → ``app``."""
    return name[len(stack) + 1:] if name.startswith(stack + "_") else name


def mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


# --- how a task ended --------------------------------------------------------------------

def task_end(task: TaskState, service: ServiceState, stack: str) -> Problem:
    """Why a task stopped, told honestly: its own memory limit is the change's fault, the
    host's OOM killer or resources are the host's."""
    name = short(service.name, stack)
    if task.oom_killed:
        if service.memory_limit:
            return Problem(f"service {name}: task {task.id[:12]} was killed at the memory limit "
                           f"its recipe declares ({mib(service.memory_limit)}; exit "
                           f"{task.exit_code}, OOM-killed)")
        return Problem(f"service {name}: task {task.id[:12]} was taken by the host's OOM killer "
                       f"with no memory limit of its own (exit {task.exit_code}): the host ran "
                       f"out of memory", infra=True)
    detail = task.error or f"state {task.state}"
    if INFRA.search(detail):
        return Problem(f"service {name}: {detail}", infra=True)
    code = f" (exit code {task.exit_code})" if task.exit_code else ""
    return Problem(f"service {name}: task {task.id[:12]} {task.state}{code}: {detail}")


# --- while waiting for convergence -----------------------------------------------------------

def definitive(services: Iterable[ServiceState], stack: str) -> Problem | None:
    """A problem that waiting longer cannot cure, seen now; None while hope is rational.

    - a task pending for want of a node or resources for ``PENDING_GRACE`` seconds while
      no task of the stack is on its way down (freeing them): the host's fault;
    - ``No such image``: the recipe names an image this host does not have (deploys use
      ``--resolve-image never``);
    - a paused update, a rejected spec (twice the same error), a task killed by OOM,
      a spec that failed ``CRASH_LOOP`` starts in one slot with nothing running there
      (one replica of several looping is enough: swarm's ``max_failure_ratio`` may let
      the update complete around it)."""
    services = list(services)
    host = waiting_for_host(services, stack)
    if host:
        return host
    for service in services:
        name = short(service.name, stack)
        if service.update_state in PAUSED:
            return Problem(f"service {name}: update {service.update_state.replace('_', ' ')}: "
                           f"{service.update_message or 'swarm paused it'}")
        current = [t for t in service.tasks if t.current]
        for task in current:
            if "No such image" in task.error:
                return Problem(f"service {name}: {task.error} (the image is not on this host; "
                               f"deploys never pull)")
            if task.oom_killed:
                return task_end(task, service, stack)
        rejected: dict[str, int] = {}
        for task in current:
            if task.state == "rejected":
                rejected[task.error] = rejected.get(task.error, 0) + 1
        for error, count in rejected.items():
            if count >= REJECTED_TWICE:
                return Problem(f"service {name}: task rejected {count} times: {error}",
                               infra=bool(INFRA.search(error)))
        given_up = abandoned(service)
        if given_up is not None:
            problem = task_end(given_up, service, stack)
            return Problem(f"{problem.message} — swarm will not start it again (restart "
                           f"policy: {service.restart}"
                           + (f", {service.max_attempts} attempt(s)" if service.max_attempts
                              else "") + ")", problem.infra)
        for slot in sorted({t.slot for t in current}):   # one replica may loop alone
            tasks = [t for t in current if t.slot == slot]
            failed = [t for t in tasks if t.state == "failed"]
            if len(failed) >= CRASH_LOOP and not any(t.state == "running" for t in tasks):
                problem = task_end(failed[0], service, stack)
                return Problem(f"{problem.message} — {len(failed)} starts failed, none ran"
                               + (f" (slot {slot} of {service.desired})"
                                  if service.desired > 1 else ""), problem.infra)
    return None


def waiting_for_host(services: Iterable[ServiceState], stack: str,
                     grace: float = PENDING_GRACE) -> Problem | None:
    """A task of the current spec pending for want of a node or resources (the host's
    fault) for ``grace`` seconds, while no task of the stack is on its way down or went
    down within ``grace``: such a task holds, or has just freed, its node's resources
    (a stop-first update of a reservation that fits once; swarm's scheduler takes
    seconds to place the pending task after), so a task pending meanwhile is waiting,
    not refused."""
    services = list(services)
    if grace and any(t.desired not in ("running", "ready", "complete")
                     and (t.state in ALIVE or t.age < grace)
                     for s in services for t in s.tasks):
        return None     # a task is going down, or went down too recently to tell
    for service in services:
        for task in service.tasks:
            if (task.current and task.state == "pending" and task.error
                    and INFRA.search(task.error) and task.age >= grace):
                return Problem(f"service {short(service.name, stack)}: {task.error}",
                               infra=True)
    return None


def abandoned(service: ServiceState) -> TaskState | None:
    """The failed task of a slot swarm will not restart, by the service's own restart
    policy (``none``, or ``max_attempts`` restarts spent), with no other task of the
    current spec alive in that slot; else None. (A clean exit under ``none`` or
    ``on-failure`` is a finished one-shot: ``ServiceState.done``.)"""
    current = [t for t in service.tasks if t.current]
    for slot in sorted({t.slot for t in current}):
        tasks = [t for t in current if t.slot == slot]      # newest first
        if any(t.state in ALIVE and t.desired in ("running", "ready") for t in tasks):
            continue
        ended = [t for t in tasks if t.state in ("failed", "complete", "rejected")]
        if not ended or (ended[0].state == "complete" and not ended[0].exit_code
                         and service.restart != "any"):
            continue
        if service.restart == "none" or (service.max_attempts
                                         and len(ended) > service.max_attempts):
            return ended[0]
    return None


def rollbacks(services: Iterable[ServiceState], stack: str) -> list[str]:
    """Every service swarm rolled back or paused, with swarm's own message."""
    out = []
    for service in services:
        if service.update_state in ROLLED_BACK or service.update_state in PAUSED:
            why = "; ".join(service.task_errors)
            out.append(f"service {short(service.name, stack)}: head applied, then swarm rolled "
                       f"back: {service.update_message or service.update_state}"
                       + (f" (new task: {why})" if why else ""))
    return out


# --- after an upgrade -------------------------------------------------------------------------

def reverted(services: Iterable[ServiceState], head_images: Mapping[str, str],
             base_images: Mapping[str, str], stack: str) -> list[str]:
    """Services not running the head's image (a reverted spec), or missing."""
    live = {short(s.name, stack): s for s in services}
    out = []
    for name, image in sorted(head_images.items()):
        service = live.get(name)
        if service is None:
            out.append(f"service {name} of the head is not deployed")
        elif image and service.image != image.split("@", 1)[0]:
            out.append(f"service {name} runs image {service.image}, not the head's {image}"
                       + (" (left at the base's image)"
                          if base_images.get(name) == service.image else ""))
    return out


def strays(services: Iterable[ServiceState], head_images: Mapping[str, str],
           stack: str) -> list[str]:
    """Services still running that the head no longer defines (``docker stack deploy``
    does not prune them): what runs is not only the head."""
    return [f"service {name} is not in the head but still runs (docker stack deploy does "
            f"not remove services)" for s in services
            if (name := short(s.name, stack)) not in head_images and name != "ccci-probe"]


def mount_changes(before: Iterable[ServiceState], after: Iterable[ServiceState],
                  stack: str) -> list[str]:
    """Every volume the base mounted must be mounted by the head at the same path."""
    old = {(short(s.name, stack), short(v, stack)): p for s in before for v, p in s.mounts}
    new = {(short(s.name, stack), short(v, stack)): p for s in after for v, p in s.mounts}
    old_volumes = {v for _, v in old}
    new_volumes = {v for _, v in new}
    added = sorted(new_volumes - old_volumes)
    out = []
    for (service, volume), path in sorted(old.items()):
        if (service, volume) in new:
            if new[(service, volume)] != path:
                out.append(f"volume {volume} moved from {path} to {new[(service, volume)]} "
                           f"(service {service})")
        elif volume not in new_volumes:
            out.append(f"volume {volume} orphaned (service {service} mounted it at {path})"
                       + (f", new empty volume {', '.join(added)}" if added else ""))
        else:
            elsewhere = sorted(f"{s} at {p}" for (s, v), p in new.items() if v == volume)
            out.append(f"volume {volume} no longer mounted by service {service} at {path} "
                       f"(now: {', '.join(elsewhere)})")
    return out


def image_warnings(before: Iterable[ServiceState], after: Iterable[ServiceState],
                   stack: str, version_label: str) -> list[str]:
    """Images changed while the app's version label did not: the release was not bumped."""
    old = {short(s.name, stack): s for s in before}
    changed = [f"{name}: {old[name].image} → {s.image}" for s in after
               if (name := short(s.name, stack)) in old and old[name].image != s.image]
    app = f"{stack}_app"
    old_version = next((s.labels.get(version_label, "") for s in before if s.name == app), "")
    new_version = next((s.labels.get(version_label, "") for s in after if s.name == app), "")
    if changed and old_version and old_version == new_version:
        return [f"images changed ({'; '.join(changed)}) but the version label stayed "
                f"{new_version}: bump the recipe version"]
    return []


# --- the settle window -----------------------------------------------------------------------

def settle_window(services: Iterable[ServiceState], floor: float) -> tuple[float, str]:
    """How long to watch, and why that long."""
    services = list(services)
    monitor = max((s.monitor for s in services), default=0.0)
    health = max((s.health_window for s in services), default=0.0)
    window = max(floor, monitor, health)
    return window, (f"{window:g}s (floor {floor:g}s, longest update monitor {monitor:g}s, "
                    f"longest healthcheck interval × (retries + 1) {health:g}s)")


def settle_problem(start: Iterable[ServiceState], now: Iterable[ServiceState], stack: str,
                   elapsed: float) -> Problem | None:
    """A task that ran at convergence and has since ended or turned unhealthy, a new
    start of a service, or an update swarm rolled back or paused meanwhile."""
    now_by_name = {s.name: s for s in now}
    for before in start:
        service = now_by_name.get(before.name)
        name = short(before.name, stack)
        if service is None:
            return Problem(f"service {name} disappeared {elapsed:.1f}s into the settle window")
        lost = rollbacks([service], stack)
        if lost and service.update_state != before.update_state:
            return Problem(f"{lost[0]} ({elapsed:.1f}s into the settle window)")
        tasks = {t.id: t for t in service.tasks}
        for task in before.tasks:
            if task.state != "running":
                continue
            later = tasks.get(task.id)
            if (later is not None and later.state == "complete" and not later.exit_code
                    and service.restart != "any"):
                continue    # a one-shot finished, as its restart policy says it may
            if later is None or later.state != "running":
                ended = task_end(later or task, service, stack)
                return Problem(f"{ended.message} — {elapsed:.1f}s into the settle window",
                               ended.infra)
            if later.health == "unhealthy":
                return Problem(f"service {name}: task {task.id[:12]} turned unhealthy "
                               f"{elapsed:.1f}s into the settle window")
        started = [t for t in service.tasks if t.id not in {x.id for x in before.tasks}]
        if started:
            return Problem(f"service {name}: swarm started a new task {started[0].id[:12]} "
                           f"{elapsed:.1f}s into the settle window (the running one ended)")
    return None


def evidence(services: Iterable[ServiceState], stack: str) -> list[str]:
    """Lines for the build log: each service's spec against its previous spec, its update
    status and its task errors."""
    lines = []
    for s in services:
        name = short(s.name, stack)
        labels = {k: v for k, v in s.labels.items() if k.startswith("coop-cloud.")}
        old = {k: v for k, v in s.previous_labels.items() if k.startswith("coop-cloud.")}
        line = f"evidence: {name}: image {s.image}"
        if s.previous_image:
            line += f" (previous spec {s.previous_image})"
        if labels or old:
            line += f"; labels {_fmt(labels)}" + (f" (previous {_fmt(old)})" if old else "")
        if s.update_state:
            line += f"; update {s.update_state}" + (f": {s.update_message}" if s.update_message else "")
        if s.task_errors:
            line += f"; task errors: {'; '.join(s.task_errors)}"
        lines.append(line)
    return lines


def _fmt(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(labels.items())) or "none"
