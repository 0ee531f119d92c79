"""The merger: builds each buildset's speculative ref (the ``Merger`` port).

For every project it keeps a bare mirror under ``root/<project>``. To prepare a ref it
fetches the target branch and each change's ref from upstream, merges the changes in
order onto the fresh tip with ``git merge-tree --write-tree`` (no work tree needed) and
stores the result at ``refs/zuul/<branch>/Z<buildset>``. A conflict names the change
and files; any other failure is an error (the engine retries it, it is not a conflict).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

from ..core.actions import PrepareRef
from ..core.events import Event, MergeFailed, RefPrepared
from ..core.model import Change
from ..git import GitError, check_project, check_ref, git, out

log = logging.getLogger("ccci_gate.merger")


class Prepared(NamedTuple):
    """A built speculative ref: ``steps`` is the commit after each change, in order."""

    ref: str
    commit: str
    tip: str
    steps: tuple[str, ...]


class MergeConflict(Exception):
    """A change does not merge onto what is ahead of it."""


class GitMerger:
    """Prepares speculative refs on a small thread pool, one project at a time."""

    def __init__(self, root: Path, sources: Callable[[str], str], emit: Callable[[Event], None],
                 base_url: str, workers: int = 2):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sources = sources
        self.emit = emit
        self.base_url = base_url.rstrip("/")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="merger")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def url(self) -> str:
        return self.base_url

    def prepare(self, action: PrepareRef) -> None:
        self._pool.submit(self._run, action)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def lock(self, project: str) -> threading.Lock:
        """The lock that serialises git work on one project's mirror."""
        with self._locks_guard:
            return self._locks.setdefault(project, threading.Lock())

    def _run(self, action: PrepareRef) -> None:
        try:
            prepared = self.build(action)
        except MergeConflict as exc:
            self.emit(MergeFailed(action.buildset_id, conflict=True, message=str(exc)))
        except Exception as exc:  # noqa: BLE001 - every other failure is an infra error
            log.warning("preparing %s failed: %s", action.buildset_id, exc)
            self.emit(MergeFailed(action.buildset_id, conflict=False, message=str(exc)))
        else:
            self.emit(RefPrepared(action.buildset_id, prepared.ref, prepared.commit,
                                  prepared.tip, prepared.steps))

    # --- the work (synchronous; tests call it directly) -----------------------------------

    def build(self, action: PrepareRef) -> "Prepared":
        """Fetch and merge; return the ref, its commit, the tip and each step's commit."""
        project = check_project(action.project)
        branch = check_ref(action.branch)
        with self.lock(project):
            repo = self.mirror(project)
            heads = self.fetch(repo, project, branch, action.changes)
            tip = heads.pop(0)
            commit = tip
            steps = []
            for change, head in zip(action.changes, heads):
                if change.number is None:
                    commit = head  # a ref item is tested as it is
                else:
                    commit = self.merge(repo, commit, head, change)
                steps.append(commit)
            ref = f"refs/zuul/{branch}/Z{action.buildset_id}"
            git(repo, "update-ref", ref, commit)
        return Prepared(ref, commit, tip, tuple(steps))

    def mirror(self, project: str) -> Path:
        repo = self.root / project
        if not (repo / "HEAD").exists():
            repo.mkdir(parents=True, exist_ok=True)
            git(None, "init", "-q", "--bare", str(repo))
            git(repo, "config", "uploadpack.allowReachableSHA1InWant", "true")
        return repo

    def fetch(self, repo: Path, project: str, branch: str, changes: tuple[Change, ...]) -> list[str]:
        """Fetch the branch and every change ref; return their commits, branch first."""
        specs = [f"+refs/heads/{branch}:refs/ccci/tip/{branch}", "+refs/tags/*:refs/tags/*"]
        for i, change in enumerate(changes):
            specs.append(f"+{check_ref(change.ref)}:refs/ccci/fetch/{i}")
        git(repo, "fetch", "-q", "--no-tags", "--", self.sources(project), *specs)
        heads = [out(repo, "rev-parse", "--verify", f"refs/ccci/tip/{branch}^{{commit}}")]
        for i, change in enumerate(changes):
            head = out(repo, "rev-parse", "--verify", f"refs/ccci/fetch/{i}^{{commit}}")
            if change.sha and change.sha != head:
                # the change moved on since it was enqueued: test what was asked for
                probe = git(repo, "cat-file", "-e", f"{change.sha}^{{commit}}", check=False)
                if probe.returncode != 0:
                    raise GitError(f"{change.describe()}: commit {change.sha} is not in {change.ref}")
                head = change.sha
            heads.append(head)
        return heads

    def merge(self, repo: Path, base: str, head: str, change: Change) -> str:
        """Merge ``head`` onto ``base``; a new merge commit (or ``base`` if already in)."""
        if git(repo, "merge-base", "--is-ancestor", head, base, check=False).returncode == 0:
            return base
        if git(repo, "merge-base", "--is-ancestor", base, head, check=False).returncode == 0:
            return head  # fast-forward: the change is based on the tip
        proc = git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages",
                   base, head, check=False)
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        if proc.returncode == 1:
            files = ", ".join(line for line in lines[1:] if line) or "unknown files"
            raise MergeConflict(f"{change.describe()} does not merge: conflict in {files}")
        if proc.returncode != 0 or not lines:
            raise GitError(f"merge-tree failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
        # the same merge always makes the same commit (dates from its parents, not the
        # clock): the merge of a change ahead, remade in the ref of each item behind it,
        # is the very commit that lands, so those items' tested commits still descend
        # from the branch once it merged and their fast-forward push is taken
        when = max(int(out(repo, "log", "-1", "--format=%ct", c)) for c in (base, head))
        date = f"@{when} +0000"
        return out(repo, "commit-tree", lines[0], "-p", base, "-p", head,
                   "-m", f"Merge {change.describe()}",
                   env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
