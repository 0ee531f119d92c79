"""Build processes that die with their worker, and what a dead worker left behind.

- :func:`spawn` starts a build's command under ``reaper.py`` (parent-death signal,
  child subreaper, own process group): a worker killed with SIGKILL takes its builds'
  processes with it. :func:`kill` ends a spawned build and everything it started;
  :func:`run` is ``spawn`` and wait, for a recipe's hooks.
- Every process spawned here carries ``CCCI_WORKER_TOKEN`` (one per worker process)
  in its environment, and every workspace is listed under the worker's instance
  directory ``<workdir>/.instances/<token>/`` (held with ``flock`` while it lives).
  :func:`reap_leftovers`, run when a worker starts, finds the instances whose worker
  is dead, kills any process still carrying their token and removes their workspaces
  (and build workspaces no live worker claims; other entries of the workdir are left).
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Mapping, Sequence

log = logging.getLogger("ccci_gate.worker")

REAPER = str(Path(__file__).with_name("reaper.py"))
TOKEN_ENV = "CCCI_WORKER_TOKEN"
TOKEN = secrets.token_hex(8)   # this worker process
INSTANCES = ".instances"
BUILD_DIR = re.compile(r"[0-9a-f]{32}")   # a workspace is named by its build id (uuid4 hex)


def spawn(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """Run ``argv`` (stdout and stderr to a pipe) under the reaper."""
    env = {**env, TOKEN_ENV: TOKEN}
    return subprocess.Popen([sys.executable, "-I", "-S", REAPER, str(os.getpid()), "--", *argv],
                            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run(argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` under the reaper and wait: (exit status, stdout and stderr as one
    text). What it started in the background dies when it exits; after ``timeout``
    seconds it and everything it started are killed and ``TimeoutExpired`` is raised.
    For a recipe's own code (its hooks): it must not outlive its build or its worker."""
    proc = spawn(argv, cwd, env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        proc.communicate()
        raise
    return proc.returncode, out.decode("utf-8", "replace")


def kill(proc: subprocess.Popen) -> None:
    """SIGTERM the reaper (it kills every descendant), then SIGKILL the group."""
    for sig in ((signal.SIGTERM, signal.SIGKILL) if proc.poll() is None else ()):
        try:
            os.kill(proc.pid, sig) if sig == signal.SIGTERM else os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=2)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever stayed in the group
    except (ProcessLookupError, PermissionError):
        pass


class Instance:
    """This worker process's claim on a workdir: a locked directory listing its builds.
    One per process and workdir (:meth:`of`): daemons of one process share it."""

    _made: dict[Path, "Instance"] = {}
    _made_lock = threading.Lock()

    @classmethod
    def of(cls, workdir: Path) -> "Instance":
        key = Path(workdir).resolve()
        with cls._made_lock:
            if key not in cls._made:
                cls._made[key] = cls(key)
            return cls._made[key]

    def __init__(self, workdir: Path):
        self.dir = Path(workdir) / INSTANCES / TOKEN
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "lock", "a+")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()

    def claim(self, build_id: str) -> None:
        (self.dir / build_id).touch()

    def release(self, build_id: str) -> None:
        try:
            (self.dir / build_id).unlink()
        except FileNotFoundError:
            pass


def _dead_instances(workdir: Path) -> tuple[list[Path], set[str]]:
    """Instance dirs whose worker is gone, and build ids that live instances claim."""
    dead, live_builds = [], set()
    for inst in sorted((workdir / INSTANCES).glob("*")):
        if inst.name == TOKEN:
            live_builds |= {p.name for p in inst.iterdir() if p.name != "lock"}
            continue
        try:
            fh = open(inst / "lock", "a+")
        except OSError:
            continue
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: that worker lives
                live_builds |= {p.name for p in inst.iterdir() if p.name != "lock"}
                continue
            fcntl.flock(fh, fcntl.LOCK_UN)
        dead.append(inst)
    return dead, live_builds


def processes_with_token(token: str) -> list[int]:
    needle = f"{TOKEN_ENV}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def reap_leftovers(workdir: Path, say: Callable[[str], None] = log.info) -> tuple[int, int]:
    """Kill the processes and remove the workspaces of dead workers of ``workdir``;
    return (processes killed, workspaces removed)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return 0, 0
    dead, live_builds = _dead_instances(workdir)
    killed = 0
    for inst in dead:
        for pid in processes_with_token(inst.name):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(inst, ignore_errors=True)
    removed = 0
    for path in workdir.iterdir():
        # only what looks like a build's workspace (its id), never anything else found there
        if not BUILD_DIR.fullmatch(path.name) or not path.is_dir() or path.name in live_builds:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    if killed or removed:
        say(f"reaped what dead workers left in {workdir}: {killed} process(es), "
            f"{removed} workspace(s)")
    return killed, removed
