"""Pushes to plain git projects: the ``git`` driver and its branch watcher.

Projects served by the git source (the ``repos`` setting, no forge in front) have no
webhook to say that a branch moved. The **branch watcher** reads each such project's
branch tips (``git ls-remote --heads``) every ``interval`` seconds, and at once when
poked — ``ccci-gate notify-push --project P`` from the repository's ``post-receive``
hook — and emits ``BranchMoved`` (``BranchCreated`` for a new branch) for every branch
whose tip changed. So retest-on-merge works without Gitea.

- **Starts at now**: the first read of a project records its tips and emits nothing.
- **Coalesced**: a move is emitted only once the branch has kept its tip for ``quiet``
  seconds, so two merges landing 200 ms apart are one move, to the newer tip (no
  retest is dispatched on the intermediate tip and then aborted).
- The gate's own merges are seen too; the engine does not retest items already built
  on the tip a move names.

A layout may trigger on these moves: ``trigger: {git: [{branch: main}]}`` (every move of
a matching branch; an empty list: every move).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

import voluptuous as v

from ..config.schema import listify
from ..core.events import BranchCreated, BranchMoved
from ..core.model import Change
from ..core.triggers import TriggerFilter
from ..git import GitError, out
from ..ports import Emit
from .base import Driver

log = logging.getLogger("ccci_gate.drivers.git")
NAME = "git"

FILTER = v.Schema({v.Optional("branch", default=[]): listify(str)})


def filters(value: list) -> tuple[TriggerFilter, ...]:
    return tuple(TriggerFilter(events=(BranchMoved, BranchCreated), branch=tuple(f["branch"]))
                 for f in value)


DRIVER = Driver(name=NAME, description="branch moves of plain git projects (`branch: main`)",
                trigger_schema=[FILTER], filters=filters)


def read_tips(url: str) -> dict[str, str]:
    """``{branch: sha}`` of a repository, by ``git ls-remote --heads``."""
    tips = {}
    for line in out(None, "ls-remote", "--heads", "--", url, timeout=60).splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            tips[ref[len("refs/heads/"):]] = sha
    return tips


class BranchWatcher:
    """Emits ``BranchMoved`` when a watched project's branch gets a new tip.

    ``projects()`` names the projects to watch (the gatekeeper passes those of the
    published layout that the git source serves); ``source_url(project)`` says where
    each lives; ``read`` is injectable so tests can step :meth:`check` without git."""

    def __init__(self, projects: Callable[[], Iterable[str]], source_url: Callable[[str], str],
                 emit: Emit, interval: float = 60.0, quiet: float = 0.5,
                 read: Callable[[str], dict[str, str]] = read_tips):
        self.projects = projects
        self.source_url = source_url
        self.emit = emit
        self.interval = interval
        self.quiet = quiet
        self.read = read
        self._tips: dict[str, dict[str, str]] = {}
        self._pokes: set[str] = set()
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def check(self, project: str) -> list[BranchMoved]:
        """Read ``project``'s tips; emit and return a move per changed branch (none on
        the first read). A tip that moves again within ``quiet`` is waited out."""
        try:
            tips = self.read(self.source_url(project))
            for _ in range(20):   # settle: the same tips twice, ``quiet`` apart
                if project not in self._tips or tips == self._tips[project] or not self.quiet:
                    break
                time.sleep(self.quiet)
                again = self.read(self.source_url(project))
                if again == tips:
                    break
                tips = again
        except GitError as exc:
            log.warning("cannot read the branches of %s: %s", project, exc)
            return []
        before = self._tips.get(project)
        self._tips[project] = tips
        if before is None:
            return []
        moves: list[BranchMoved] = []
        for branch, sha in sorted(tips.items()):
            old = before.get(branch)
            if old == sha:
                continue
            kind = BranchMoved if old else BranchCreated
            change = Change(project, branch, f"refs/heads/{branch}", sha=sha, oldrev=old)
            moves.append(kind(NAME, change))
        for move in moves:
            log.info("%s %s moved to %s", project, move.change.branch, move.change.sha)
            self.emit(move)
        return moves

    def poke(self, project: str) -> None:
        """Check ``project`` soon (a post-receive hook said it was pushed to)."""
        with self._wake:
            self._pokes.add(project)
            self._wake.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="branch-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()

    def _run(self) -> None:
        due = 0.0
        while True:
            with self._wake:
                while not self._stop and not self._pokes and time.monotonic() < due:
                    self._wake.wait(max(0.0, due - time.monotonic()))
                if self._stop:
                    return
                poked, self._pokes = self._pokes, set()
            if poked:
                time.sleep(self.quiet)   # let a burst of pushes land
                with self._wake:
                    poked |= self._pokes
                    self._pokes = set()
            try:
                watched = set(self.projects())
                for project in sorted(poked & watched if poked else watched):
                    self.check(project)
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad read
                log.exception("branch watcher pass failed")
            if not poked:
                due = time.monotonic() + self.interval
