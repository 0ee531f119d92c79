"""What a worker host keeps for its Swarm runs: capacity slots, run leases, the janitor.

- **slots**: at most ``max_tests`` apps run on one host at once, whatever number of
  worker processes share it: a run holds an exclusive ``flock`` on one of
  ``slots/slot-<n>.lock`` while its app is deployed.
- **lease**: each cold run writes ``leases/<stack>.json`` (build id, pid) before it
  deploys and removes it after its teardown proved the stack gone.
- **janitor**: a stack whose lease names a process that is no longer running (a worker
  killed mid-run, a crashed host) is purged. Only stacks of cold runs have leases, so
  warm canonicals and infrastructure stacks are never touched.
- **held lease** (autohold, ``swarm.holds``): a failing run's lease with a ``hold``; it
  outlives the run's process. The janitor never reaps it while the hold stands and
  always once it expired or was released, whatever its pid.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import holds
from .port import SwarmError, SwarmPort


def default_state() -> Path:
    return Path(os.environ.get("CCCI_SWARM_STATE") or Path.home() / ".ccci-gate" / "swarm")


@dataclass
class Host:
    """One worker host's Swarm bookkeeping under ``state``."""

    state: Path
    max_tests: int = 1

    @classmethod
    def from_env(cls) -> "Host":
        return cls(default_state(), max(1, int(os.environ.get("CCCI_MAX_TESTS", "1"))))

    @contextmanager
    def slot(self, wait: Callable[[], bool] = lambda: True, log: Callable[[str], None] = print
             ) -> Iterator[int]:
        """Hold one of the host's ``max_tests`` slots; ``wait()`` False gives up."""
        folder = self.state / "slots"
        folder.mkdir(parents=True, exist_ok=True)
        said = False
        while True:
            for n in range(self.max_tests):
                fd = os.open(folder / f"slot-{n}.lock", os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield n
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            if not said:
                log(f"waiting for a free test slot on this host ({self.max_tests} in use)\n")
                said = True
            if not wait():
                raise SwarmError("gave up waiting for a test slot")
            time.sleep(0.5)

    # --- leases ----------------------------------------------------------------------------

    def _lease(self, stack: str) -> Path:
        return self.state / "leases" / f"{stack}.json"

    def take_lease(self, stack: str, build: str) -> None:
        self._write_lease(stack, {"stack": stack, "build": build, "pid": os.getpid(),
                                  "time": time.time()})

    def hold(self, stack: str, hold: dict) -> None:
        """Keep the run's app past its process (autohold): the janitor reaps it only once
        ``holds.why_release(hold)`` says so."""
        path = self._lease(stack)
        lease = json.loads(path.read_text()) if path.exists() else {"stack": stack}
        self._write_lease(stack, {**lease, "hold": hold})

    def _write_lease(self, stack: str, lease: dict) -> None:
        """Whole or not at all: a janitor never reads half a lease (and reaps a live run)."""
        path = self._lease(stack)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(lease))
        os.replace(tmp, path)

    def drop_lease(self, stack: str) -> None:
        self._lease(stack).unlink(missing_ok=True)

    def leases(self) -> list[dict]:
        folder = self.state / "leases"
        out = []
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                out.append({"stack": path.stem, "pid": 0})
        return out

    def janitor(self, port: SwarmPort, log: Callable[[str], None] = print,
                ask: holds.Ask | None = None, held_only: bool = False) -> list[str]:
        """Purge the stacks of runs whose process is gone, and held apps whose hold
        expired or was released (``ask``: the gatekeeper's word on a hold); returns their
        names. ``held_only``: look at held apps only."""
        reaped = []
        for lease in self.leases():
            stack = lease["stack"]
            if isinstance(lease.get("hold"), dict):
                why = holds.why_release(lease["hold"], ask)
                if why is None:
                    continue
                log(f"janitor: {stack} was held for build {lease.get('build', '?')}: "
                    f"{why}; removing it\n")
            elif held_only or _alive(int(lease.get("pid") or 0)):
                continue
            else:
                log(f"janitor: {stack} was left by build {lease.get('build', '?')} "
                    f"(pid {lease.get('pid')} is gone); removing it\n")
            port.purge(stack)
            self.drop_lease(stack)
            reaped.append(stack)
        return reaped


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
