"""The worker's side of ``ccci_gate/handoff.py``: hand a build's verdict to the
gatekeeper over HTTP too, by build id, so a result that finds no Gearman client (the
gatekeeper restarting) is not lost and the build does not run again.

Posted from a thread of its own, retried every ``INTERVAL`` seconds while the gatekeeper
does not answer, for up to ``RETRY_FOR``. Only verdicts on the change: a build aborted
(stopped, or lost with its connection) or ending in ``ERROR`` (the worker's own fault —
also what a build gets when its log stream dies with the connection) is the gatekeeper's
to retry, not a result to hand over.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

import requests

log = logging.getLogger("ccci_gate.worker.handoff")

INTERVAL = 1.0
RETRY_FOR = 600.0
NOT_VERDICTS = ("ABORTED", "CANCELED", "ERROR")   # stopped, lost, or the worker's own fault


def hand_over(params: Mapping[str, str], build_id: str, result: str | None,
              message: str = "", extra: Mapping[str, Any] | None = None,
              retry_for: float = RETRY_FOR) -> threading.Thread | None:
    """Start handing ``result`` (and the kind's ``message``, and ``extra``: the app an
    autohold kept) over, when the build says where; the thread, or None."""
    url, token = params.get("CCCI_RESULT_URL"), params.get("CCCI_RESULT_TOKEN")
    if not url or not token or not result or result in NOT_VERDICTS:
        return None
    thread = threading.Thread(target=deliver,
                              args=(url, token, build_id, result, retry_for, message, extra),
                              name=f"handoff-{build_id[:8]}", daemon=True)
    thread.start()
    return thread


def deliver(url: str, token: str, build_id: str, result: str,
            retry_for: float = RETRY_FOR, message: str = "",
            extra: Mapping[str, Any] | None = None) -> int | None:
    """POST until the gatekeeper answers (any status below 500); that status, or None."""
    deadline = time.monotonic() + retry_for
    body = {**(extra or {}), "result": result, **({"message": message} if message else {})}
    while True:
        try:
            response = requests.post(url, json=body, timeout=10,
                                     headers={"Authorization": f"Bearer {token}"})
            if response.status_code < 500:
                return response.status_code
        except requests.RequestException:
            pass
        if time.monotonic() >= deadline:
            log.warning("could not hand the result of build %s to %s", build_id, url)
            return None
        time.sleep(INTERVAL)
