"""``Source`` port for Gerrit: submit a gated change at the revision that was tested.

Before submitting, the change is read over REST:

- its current revision is not the tested one (a new patchset came): nothing is
  submitted; the new patchset is handed to the driver as the patchset-created event it
  is (``requeue``), which supersedes the item everywhere and enqueues the new patchset
  where the layout's triggers take it — requeued, not failed;
- it no longer meets the pipeline's approval requirements (``require-approval`` /
  ``reject-approval`` of its Gerrit filters, on the current votes: a veto came, an
  approval was withdrawn): nothing is submitted, ``MergeRefused`` says why;
- it is already merged at the tested revision: ``ItemMerged``;
- otherwise ``POST /a/changes/{id}/revisions/{sha}/submit`` (``SubmitInput``): Gerrit
  answers 409 when the change cannot be submitted (needs a rebase, a missing
  approval, a conflict, the revision is no longer current): ``MergeRefused`` with
  Gerrit's words, reported as the source refusing, never as a test failure.

``ItemMerged`` carries the branch's new tip when Gerrit says it.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from ...core.actions import MergeChange
from ...core.events import ItemMerged, MergeRefused
from ...ports import Emit
from .api import ChangeInfo, GerritAPI, GerritError, GerritUnavailable
from .translate import DRIVER
from .triggers import still_unmet

log = logging.getLogger("ccci_gate.drivers.gerrit")


class GerritSource:
    """Submits on its own thread; answers through ``emit``."""

    def __init__(self, api: GerritAPI, emit: Emit, requeue: Callable[[ChangeInfo], None]):
        self.api = api
        self.emit = emit
        self.requeue = requeue

    def merge(self, action: MergeChange) -> None:
        threading.Thread(target=self._merge, args=(action,), name="gerrit-submit", daemon=True).start()

    def _merge(self, action: MergeChange) -> None:
        change = action.change
        tested = action.sha or ""
        try:
            info = self.api.change(change.project, int(change.number or 0))
            if info.revision != tested:
                log.info("%s moved to patchset %s while it was tested: requeued", change.describe(),
                         info.patchset)
                self.requeue(info)
                return
            unmet = still_unmet(action.triggers.get(DRIVER, ()), info.approvals)
            if unmet and info.status != "MERGED":
                log.warning("%s no longer meets the gate's requirements: %s", change.describe(), unmet)
                self.emit(MergeRefused(action.item_id, 409, f"not submitted: the change no "
                                       f"longer meets the pipeline's requirements ({unmet})"))
                return
            if info.status != "MERGED":
                self.api.submit(change.project, int(change.number or 0), tested)
        except GerritError as exc:
            log.warning("Gerrit refused to submit %s: %s", change.describe(), exc)
            self.emit(MergeRefused(action.item_id, exc.status, f"Gerrit refused the submit: {exc.message}"))
            return
        except GerritUnavailable as exc:
            log.error("submitting %s: Gerrit unavailable: %s", change.describe(), exc)
            self.emit(MergeRefused(action.item_id, 503, f"Gerrit unavailable: {exc}"))
            return
        log.info("submitted %s through Gerrit", change.describe())
        self.emit(ItemMerged(action.item_id, self._tip(change.project, action.branch or change.branch)))

    def _tip(self, project: str, branch: str) -> str:
        try:
            return self.api.branch_tip(project, branch)
        except (GerritError, GerritUnavailable) as exc:
            log.info("new tip of %s %s unknown: %s", project, branch, exc)
            return ""
