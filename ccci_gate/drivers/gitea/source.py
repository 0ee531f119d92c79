"""``Source`` port for Gitea: merge a gated pull request through the API, at the tested
head (``head_commit_id``), and tell the scheduler how it went (``ItemMerged`` with the
branch's new tip, or ``MergeRefused``: 405/409 when Gitea says no, 503 when it stayed
down).

A Gitea that does not answer is tried again, with backoff, for up to ``MERGE_PATIENCE``
seconds; before each new try the driver reads the pull request, and one that is merged
already (the answer to the last try was lost on the way) counts as merged, not as a
refusal.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ...core.actions import MergeChange
from ...core.events import ItemMerged, MergeRefused
from ...ports import Emit
from .api import GiteaAPI, GiteaError, GiteaUnavailable, path

log = logging.getLogger("ccci_gate.drivers.gitea")

MERGE_PATIENCE = 60.0   # seconds a merge waits for an unreachable Gitea before it fails


class GiteaSource:
    """Merges on its own thread; answers through ``emit``."""

    def __init__(self, api: GiteaAPI, emit: Emit, merge_style: str = "merge",
                 patience: float = MERGE_PATIENCE, sleep: Callable[[float], None] = time.sleep):
        self.api = api
        self.emit = emit
        self.merge_style = merge_style
        self.patience = patience
        self.sleep = sleep

    def merge(self, action: MergeChange) -> None:
        threading.Thread(target=self._merge, args=(action,), name="gitea-merge", daemon=True).start()

    def _merge(self, action: MergeChange) -> None:
        change = action.change
        deadline = time.monotonic() + self.patience
        delay, tried = 1.0, False
        while True:
            try:
                if not (tried and self._merged_already(action)):
                    tried = True
                    self.api.merge(change.project, int(change.number or 0), action.sha or "",
                                   self.merge_style)
                break
            except GiteaError as exc:
                if not self._merged_already(action):
                    log.warning("Gitea refused to merge %s: %s", change.describe(), exc)
                    self.emit(MergeRefused(action.item_id, exc.status, exc.message))
                    return
                log.info("%s was merged at the tested head already (a merge asked again after "
                         "a restart, or whose answer was lost)", change.describe())
                break
            except GiteaUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    log.error("merging %s: Gitea unavailable: %s", change.describe(), exc)
                    self.emit(MergeRefused(action.item_id, 503, f"Gitea unavailable: {exc}"))
                    return
                log.warning("merging %s waits for Gitea (%s); next try in %.0fs",
                            change.describe(), exc, delay)
                self.sleep(delay)
                delay = min(delay * 2, 15.0)
        tip = ""
        try:
            tip = self.api.branch_tip(change.project, action.branch or change.branch)
        except (GiteaError, GiteaUnavailable) as exc:
            log.info("merged %s; new tip of %s unknown: %s", change.describe(), change.branch, exc)
        log.info("merged %s through Gitea", change.describe())
        self.emit(ItemMerged(action.item_id, tip))

    def _merged_already(self, action: MergeChange) -> bool:
        """Whether the pull request is merged, at the tested head: a merge the gate asked
        for before a restart, whose answer died with the previous process."""
        change = action.change
        try:
            pull = self.api.call("GET", path("/repos/{}/pulls/{}", change.project,
                                             int(change.number or 0))).json()
        except (GiteaError, GiteaUnavailable):
            return False
        return bool(pull.get("merged")) and (pull.get("head") or {}).get("sha") == action.sha
