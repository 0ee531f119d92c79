"""The plain git source: merges a gated change by pushing its tested commit.

For projects served from a git repository with no forge in front (the ``repos``
setting), the gate merges by pushing the speculative commit it tested to the target
branch — a fast-forward, so a branch that moved meanwhile refuses it and the change is
reported truthfully instead of landing untested.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ..core.actions import MergeChange
from ..core.events import ItemMerged, MergeRefused
from ..ports import Emit
from ..git import GitError, check_project, check_ref, git
from .merger import GitMerger

log = logging.getLogger("ccci_gate.merger.source")


class GitSource:
    """``Source`` port: push the tested commit to ``refs/heads/<branch>`` upstream."""

    def __init__(self, merger: GitMerger, emit: Emit):
        self.merger = merger
        self.emit = emit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="git-source")

    def merge(self, action: MergeChange) -> None:
        self._pool.submit(self._merge, action)

    def _merge(self, action: MergeChange) -> None:
        change = action.change
        try:
            project = check_project(change.project)
            branch = check_ref(action.branch or change.branch)
            if not action.commit:
                raise GitError("no tested commit to push")
            with self.merger.lock(project):
                repo = self.merger.mirror(project)
                git(repo, "push", "-q", "--", self.merger.sources(project),
                    f"{action.commit}:refs/heads/{branch}")
        except GitError as exc:
            log.warning("merging %s refused: %s", change.describe(), exc)
            self.emit(MergeRefused(action.item_id, 409, str(exc)))
        else:
            log.info("merged %s into %s at %s", change.describe(), branch, action.commit)
            self.emit(ItemMerged(action.item_id, action.commit))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)
