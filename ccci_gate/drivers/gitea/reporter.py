"""Results out: commit statuses and one PR comment per item, through an outbox.

``report()`` runs on the scheduler thread, so it only renders and queues writes in
the connection's store; :class:`Outbox` sends them on its own thread, in order,
retrying with backoff while Gitea is down. A restart resumes where it stopped.

- **statuses** on the tested head sha: ``pending`` at the start for the item
  (context ``ccci/<pipeline>``) and each job (``ccci/<pipeline>/<job>``), then the
  final state of each; ``target_url`` is the build's log or the item's page.
- **dequeued**: an item that leaves without a verdict (superseded by a new head, its
  pull request closed, dequeued by an operator) ends every status it set ``pending``:
  ``error`` with the reason (``check: superseded by <sha>``); a job that had finished
  keeps its own result. No comment: the item has no verdict to tell.
- **comment**: rendered from a jinja2 template (operators may supply their own); the
  gate keeps one comment per pull request and pipeline and edits it on each new
  result. A hidden marker lets the driver recognise its own comments.

Across restarts each report is written once: every write is queued under a key (item,
phase, context) and a key already queued is not queued again (``OutboxStore.push``); a
write that was being sent when the previous process died is looked for in Gitea (the
sha's statuses, the pull request's comments) before it is sent again (``_arrived``).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Mapping

import jinja2
import jinja2.sandbox

from ...core.actions import Report
from ...core.model import Result
from ..outbox import MAX_ATTEMPTS, MAX_DELAY, backoff  # noqa: F401 - Gitea's outbox policy
from ..outbox import Outbox as SharedOutbox
from .api import GiteaAPI, GiteaError, GiteaUnavailable, path
from .store import GiteaStore, Outgoing

log = logging.getLogger("ccci_gate.drivers.gitea")

MARKER = "<!-- ccci-gate -->"
TEMPLATE = Path(__file__).with_name("templates") / "report.md.j2"

# why an item left without a verdict, in a pull request's words (the core's are generic)
REASONS = {"change closed at its source": "pull request closed",
           "change merged at its source": "pull request merged"}
UNFINISHED = ("CANCELED", "ABORTED")   # a job stopped because its item left

VERDICTS = {"SUCCESS": ("passed", "✅"), "FAILURE": ("failed", "❌"),
            "MERGE_CONFLICT": ("needs a rebase (merge conflict)", "⚠️"),
            "MERGE_FAILED": ("passed, but Gitea refused the merge", "⚠️"),
            "ERROR": ("could not run (infrastructure error)", "🛠️")}


def status_state(result: str | None) -> str:
    """Gitea's commit status state for a build or item result (honest mapping): a
    result that blames the change is a ``failure``; an infra result (``Result.is_infra``)
    or a refused merge is an ``error``."""
    if result is None:
        return "pending"
    if result == Result.SUCCESS.value:
        return "success"
    try:
        return "failure" if Result(result).blames_change else "error"
    except ValueError:
        return "error"   # a result this gatekeeper does not know: not the change's fault


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def load_template(source: Path | None = None) -> jinja2.Template:
    env = jinja2.sandbox.SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined,
                                              keep_trailing_newline=True)
    env.filters["duration"] = _duration
    return env.from_string((source or TEMPLATE).read_text())


class GiteaReporter:
    """``Reporter`` port for one Gitea connection."""

    def __init__(self, store: GiteaStore, template: jinja2.Template, wake: threading.Event,
                 redact=lambda text: text):
        self.store = store
        self.template = template
        self.wake = wake
        self.redact = redact

    def report(self, action: Report) -> None:
        item = action.summary
        change = item.get("change") or {}
        repo, number, sha = change.get("project"), change.get("number"), change.get("sha")
        if not repo or number is None or not sha:
            log.info("[%s] %s: not a pull request with a known head, nothing to report to Gitea",
                     action.pipeline, change.get("id"))
            return
        pipeline = action.pipeline
        key = f"{action.item_id}/{action.phase}"   # each write once across restarts
        if action.phase == "dequeue":
            self._dequeued(key, repo, sha, pipeline, item)
            self.wake.set()
            return
        final = action.phase != "start"
        for job in item.get("jobs", []):
            result = job.get("result") if final else None
            self._status(key, repo, sha, f"ccci/{pipeline}/{job['name']}", result,
                         job.get("log_url") or item.get("status_url", ""),
                         f"{job['name']}: {result or 'queued'}"
                         + ("" if job.get("voting", True) else " (non-voting)"))
        result = item.get("result") if final else None
        verdict = VERDICTS.get(result or "", (str(result).lower(), "❔"))[0] if result else "running"
        self._status(key, repo, sha, f"ccci/{pipeline}", result, item.get("status_url", ""),
                     f"{pipeline}: {verdict}" + (" — quick lane, does not gate merge"
                                                 if item.get("quick") else ""))
        if final:
            self.store.push("comment", repo, f"{number}/{pipeline}",
                            {"body": self.render(item)}, key=f"{key}/comment")
        self.wake.set()

    def _dequeued(self, key: str, repo: str, sha: str, pipeline: str,
                  item: Mapping[str, Any]) -> None:
        """End the statuses an item set pending when it leaves without a verdict."""
        message = str(item.get("message") or "dequeued")
        reason = REASONS.get(message, message)
        for job in item.get("jobs", []):
            result, name = job.get("result"), job["name"]
            url = job.get("log_url") or item.get("status_url", "")
            context = f"ccci/{pipeline}/{name}"
            if result and result not in UNFINISHED:
                self._status(key, repo, sha, context, result, url, f"{name}: {result}")
            else:
                self._push_status(key, repo, sha, context, "error", url, f"{name}: {reason}")
        self._push_status(key, repo, sha, f"ccci/{pipeline}", "error",
                          item.get("status_url", ""), f"{pipeline}: {reason}")

    def _status(self, key: str, repo: str, sha: str, context: str, result: str | None,
                url: str, description: str) -> None:
        self._push_status(key, repo, sha, context, status_state(result), url, description)

    def _push_status(self, key: str, repo: str, sha: str, context: str, state: str, url: str,
                     description: str) -> None:
        body = {"state": state, "context": context,
                "description": self.redact(description)[:140], "target_url": url}
        self.store.push("status", repo, sha, body, key=f"{key}/{context}")

    def render(self, item: Mapping[str, Any]) -> str:
        verdict, icon = VERDICTS.get(item.get("result") or "", (str(item.get("result")), "❔"))
        try:
            text = self.template.render(item=item, verdict=verdict, icon=icon)
        except jinja2.TemplateError as exc:
            log.error("the comment template failed (%s); using the built-in one", exc)
            text = load_template().render(item=item, verdict=verdict, icon=icon)
        return self.redact(text).rstrip() + "\n\n" + MARKER + "\n"


class Outbox(SharedOutbox):
    """Sends queued statuses and comments in order (:class:`~..outbox.Outbox`); the
    comment of a pull request and pipeline is edited in place once it exists."""

    def __init__(self, api: GiteaAPI, store: GiteaStore, wake: threading.Event,
                 max_delay: float = MAX_DELAY):
        super().__init__(store, wake, self._send, unavailable=(GiteaUnavailable,),
                         refused=(GiteaError,), max_delay=max_delay, name="gitea-outbox",
                         arrived=self._arrived)
        self.api = api
        self.gitea_store = store
        self._maybe_applied: set[int] = set()   # writes whose last answer may have been lost

    def _send(self, out: Outgoing) -> None:
        """Send ``out``; after a try whose answer may have been lost (a 5xx, a read
        timeout: a proxy may lose the answer to a request Gitea carried out), look
        first whether it arrived, so nothing is posted twice."""
        if out.id in self._maybe_applied and self._arrived(out):
            self._maybe_applied.discard(out.id)
            return
        try:
            self._send_once(out)
        except GiteaUnavailable as exc:
            if exc.maybe_applied:
                self._maybe_applied.add(out.id)
            raise
        self._maybe_applied.discard(out.id)

    def _arrived(self, out: Outgoing) -> bool:
        """Whether a write sent just before the previous process died reached Gitea: an
        identical status on the sha, or (a comment not posted yet, as far as we know) an
        identical comment on the pull request, whose id is then kept. Gitea refusing to
        say counts as no: the write is sent."""
        try:
            if out.kind == "status":
                found = self.api.call("GET", path("/repos/{}/commits/{}/statuses", out.repo,
                                                  out.target),
                                      params={"limit": 50}, retries=0).json()
                want = out.body
                return any((s.get("status") or s.get("state")) == want["state"]
                           and s.get("context") == want["context"]
                           and s.get("description") == want["description"]
                           and s.get("target_url") == want["target_url"] for s in found or [])
            if self.gitea_store.comment_id(out.repo, out.target) is not None:
                return False   # an edit: sending it again changes nothing
            number = out.target.split("/", 1)[0]
            found = self.api.call("GET", path("/repos/{}/issues/{}/comments", out.repo, number),
                                  retries=0).json()
        except GiteaError as exc:
            log.info("cannot tell whether %s to %s arrived (%s); sending it", out.kind,
                     out.repo, exc)
            return False
        for comment in found or []:
            if comment.get("body") == out.body["body"]:
                self.gitea_store.set_comment_id(out.repo, out.target, int(comment["id"]))
                return True
        return False

    def _send_once(self, out: Outgoing) -> None:
        if out.kind == "status":
            self.api.call("POST", path("/repos/{}/statuses/{}", out.repo, out.target),
                          json=out.body, retries=0)
            return
        number = out.target.split("/", 1)[0]
        store = self.gitea_store
        existing = store.comment_id(out.repo, out.target)
        if existing is not None:
            try:
                self.api.call("PATCH", path("/repos/{}/issues/comments/{}", out.repo, existing),
                              json=out.body, retries=0)
                return
            except GiteaError as exc:
                if exc.status != 404:
                    raise
                store.set_comment_id(out.repo, out.target, None)  # deleted: post anew
        created = self.api.call("POST", path("/repos/{}/issues/{}/comments", out.repo, number),
                                json=out.body, retries=0).json()
        store.set_comment_id(out.repo, out.target, int(created["id"]))
