"""A Gitea connection: webhooks and polling in, statuses and comments out, merges.

Configured in the gatekeeper's settings under ``connections`` (see ``doc/gitea.md``)::

    connections:
      gitea:
        driver: gitea
        url: https://git.coopcloud.tech
        token-file: /etc/ccci-gate/gitea-token
        webhook-secret-file: /etc/ccci-gate/gitea-webhook-secret

Events in: ``POST /webhooks/<connection>`` checks ``X-Gitea-Signature`` (hex
HMAC-SHA256 of the raw body, constant-time compare), parses the payload
(``payloads.py``), drops redeliveries (``X-Gitea-Delivery``) and answers at once; a
single worker thread then resolves what needs the API (the head sha of an old comment
payload, whether the commenter may trigger) and emits a ``TriggerEvent``. Polling, if
configured, feeds the same path; a comment id is acted on once, whichever way it came.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import voluptuous as v

from ...core.actions import MergeChange
from ...core.events import ChangeMerged, MergeRefused, TriggerEvent
from ...core.model import Change
from ...ports import Emit
from ...web.routes import Request, Response, Router
from .api import GiteaAPI, GiteaError, GiteaUnavailable
from .payloads import Hook, PayloadError, parse, parse_api_comment, pr_number_of
from .reporter import MARKER, GiteaReporter, Outbox, load_template
from .store import GiteaStore

log = logging.getLogger("ccci_gate.drivers.gitea")

MAX_PAYLOAD = 5 * 1024 * 1024
AUTH_TTL = 60.0


def _secret(options: Mapping[str, Any], key: str) -> str:
    """A secret given inline (``key``) or, better, in a file (``key-file``)."""
    if options.get(f"{key}-file"):
        return Path(options[f"{key}-file"]).read_text().strip()
    return str(options.get(key) or "")


OPTIONS = v.Schema({
    v.Required("driver"): "gitea",
    v.Required("url"): v.Match(r"^https?://", msg="url must start with http:// or https://"),
    v.Optional("token"): str,
    v.Optional("token-file"): str,
    v.Optional("webhook-secret"): str,
    v.Optional("webhook-secret-file"): str,
    v.Optional("allow", default=[]): [str],          # users who may always trigger
    v.Optional("bot-user", default=""): str,          # the gate's own account
    v.Optional("reply-to-refused", default=False): bool,
    v.Optional("poll-interval", default=0): v.All(v.Coerce(float), v.Range(min=0)),
    v.Optional("poll-projects", default=[]): [str],
    v.Optional("comment-template"): str,
    v.Optional("merge-style", default="merge"): v.In(
        ["merge", "rebase", "rebase-merge", "squash", "fast-forward-only"]),
    v.Optional("verify-tls", default=True): bool,
    v.Optional("max-payload", default=MAX_PAYLOAD): v.All(int, v.Range(min=1024)),
    v.Optional("api-retries", default=3): v.All(int, v.Range(min=0, max=10)),
})


def verify_signature(secret: str, body: bytes, signature: str) -> bool:
    """Gitea's ``X-Gitea-Signature``: lowercase hex HMAC-SHA256 of the raw body."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


class GiteaConnection:
    """Everything one Gitea server is to the gatekeeper (trigger, source, reporter)."""

    driver = "gitea"

    def __init__(self, name: str, options: Mapping[str, Any], emit: Emit, state_dir: Path,
                 api: GiteaAPI | None = None, clock: Callable[[], float] = time.time):
        try:
            opts = OPTIONS(dict(options))
        except v.Invalid as exc:
            raise ValueError(f"connection {name!r}: {exc}") from None
        self.name = name
        self.options = opts
        self.emit = emit
        self.clock = clock
        self.secret = _secret(opts, "webhook-secret")
        token = _secret(opts, "token")
        self.api = api or GiteaAPI(opts["url"], token, retries=opts["api-retries"],
                                   verify=opts["verify-tls"])
        self.store = GiteaStore(state_dir / "gitea.sqlite")
        wake = threading.Event()
        template = load_template(Path(opts["comment-template"]) if opts.get("comment-template") else None)
        self.reporter = GiteaReporter(self.store, template, wake, redact=self._redact)
        self.outbox = Outbox(self.api, self.store, wake)
        self.source = GiteaSource(self)
        self.bot_user = opts["bot-user"]
        self._auth_cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._inbox: queue.Queue[Hook | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.idle = threading.Event()   # set when the inbox is drained (tests wait on it)
        self.idle.set()
        if not self.secret:
            log.warning("connection %s has no webhook-secret: webhooks are refused", name)

    def _redact(self, text: str) -> str:
        text = self.api.redact(text)
        return text.replace(self.secret, "***") if self.secret else text

    # --- lifecycle ------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("POST", f"/webhooks/{self.name}", self.handle_webhook)

    def start(self) -> None:
        self.outbox.start()
        self._spawn(self._work, "gitea-events")
        if self.options["poll-interval"] > 0:
            self._spawn(self._poll_loop, "gitea-poller")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"{name}-{self.name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        self.outbox.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self.store.close()

    # --- webhooks -------------------------------------------------------------------------

    def handle_webhook(self, request: Request) -> Response:
        """Check, parse and queue one webhook; never raises, never blocks on Gitea."""
        if not self.secret:
            return Response.error(403, "this connection has no webhook secret configured")
        signature = request.header("X-Gitea-Signature")
        if not signature:
            log.warning("webhook from %s without X-Gitea-Signature refused", request.client)
            return Response.error(401, "missing X-Gitea-Signature")
        if len(request.body) > self.options["max-payload"]:
            return Response.error(413, f"payload over {self.options['max-payload']} bytes")
        if not verify_signature(self.secret, request.body, signature):
            log.warning("webhook from %s with a bad signature refused", request.client)
            return Response.error(403, "bad X-Gitea-Signature")
        try:
            payload = json.loads(request.body.decode("utf-8"))
            hook = parse(request.header("X-Gitea-Event"), payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("webhook with malformed JSON refused: %s", exc)
            return Response.error(400, f"malformed JSON: {exc}")
        except PayloadError as exc:
            log.warning("webhook %s refused: %s", request.header("X-Gitea-Event"), exc)
            return Response.error(422, str(exc))
        delivery = request.header("X-Gitea-Delivery")
        if delivery and not self.store.first_time(f"delivery:{delivery}"):
            return Response.json({"accepted": False, "reason": "duplicate delivery"}, 200)
        if hook.event == "ignored":
            log.info("webhook ignored: %s", hook.why_ignored)
            return Response.json({"accepted": False, "reason": hook.why_ignored}, 200)
        self.submit(hook)
        return Response.json({"accepted": True}, 202)

    def submit(self, hook: Hook) -> None:
        """Queue a hook for the event thread (webhooks and polling both come here)."""
        self.idle.clear()
        self._inbox.put(hook)

    def _work(self) -> None:
        while True:
            hook = self._inbox.get()
            if hook is None:
                return
            try:
                self.handle_hook(hook)
            except Exception:  # pragma: no cover - a driver bug must not stop the thread
                log.exception("handling %s for %s", hook.event, hook.repo)
            finally:
                if self._inbox.empty():
                    self.idle.set()

    # --- hooks → trigger events ----------------------------------------------------------

    def handle_hook(self, hook: Hook) -> TriggerEvent | None:
        """Resolve what needs the API and emit the trigger event; returns it (or None)."""
        if hook.event == "comment":
            event = self._comment_event(hook)
        elif hook.event == "pull_request":
            event = self._event(hook, hook.head_sha, hook.branch, authorized=True)
        elif hook.event == "push":
            change = Change(hook.repo, hook.branch, hook.ref, sha=hook.after,
                            oldrev=hook.before or None)
            event = TriggerEvent(self.driver, "push", change, action=hook.action, user=hook.user,
                                 connection=self.name, data={"authorized": True})
        else:
            return None
        if event is not None:
            self.emit(event)
        return event

    def _comment_event(self, hook: Hook) -> TriggerEvent | None:
        if hook.action == "deleted":
            return None
        if MARKER in hook.comment or (self.bot_user and hook.user == self.bot_user):
            return None  # the gate's own comment
        if hook.comment_id is not None and hook.action == "created":
            if not self.store.first_time(f"comment:{hook.repo}:{hook.comment_id}"):
                log.info("comment %s on %s#%s already handled", hook.comment_id, hook.repo, hook.number)
                return None
        head, branch, title, url = hook.head_sha, hook.branch, hook.title, hook.url
        try:
            if not head or not branch:
                pr = self.api.pull(hook.repo, hook.number)  # type: ignore[arg-type]
                if pr.state != "open":
                    log.info("comment on closed %s#%s ignored", hook.repo, hook.number)
                    return None
                head, branch, title, url = pr.head_sha, pr.branch, pr.title or title, pr.url or url
            authorized = self.authorized(hook.repo, hook.user)
        except (GiteaError, GiteaUnavailable) as exc:
            log.error("comment %s on %s#%s dropped: Gitea: %s", hook.comment_id, hook.repo,
                      hook.number, exc)
            return None
        event = self._event(hook, head, branch, authorized, title=title, url=url)
        if not authorized and hook.comment.lstrip().startswith("!"):
            log.warning("%s may not trigger on %s#%s (not an org member, writer or allowed "
                        "user): %r ignored", hook.user, hook.repo, hook.number, hook.comment[:60])
            if self.options["reply-to-refused"]:
                self.store.push("comment", hook.repo, f"{hook.number}/refused", {"body": (
                    f"@{hook.user} only members of the organisation, collaborators with write "
                    f"access or allowed users may trigger tests here.\n\n{MARKER}\n")})
                self.reporter.wake.set()
        return event

    def _event(self, hook: Hook, head: str, branch: str, authorized: bool,
               title: str = "", url: str = "") -> TriggerEvent:
        change = Change(hook.repo, branch, hook.pr_ref, number=hook.number, patchset=head,
                        sha=head, url=url or hook.url, title=title or hook.title,
                        author=hook.user)
        kind = "comment" if hook.event == "comment" else hook.event
        return TriggerEvent(self.driver, kind, change, action=hook.action, comment=hook.comment,
                            user=hook.user, connection=self.name,
                            data={"authorized": authorized, "merge_commit": hook.merge_commit,
                                  "comment_id": hook.comment_id})

    def authorized(self, repo: str, user: str) -> bool:
        """Org member, collaborator with write access, or on the allowlist; cached."""
        if not user:
            return False
        if user in self.options["allow"]:
            return True
        key = (repo, user)
        hit = self._auth_cache.get(key)
        now = self.clock()
        if hit is not None and now - hit[0] < AUTH_TTL:
            return hit[1]
        org = repo.split("/", 1)[0]
        ok = self.api.is_member(org, user) or self.api.can_write(repo, user)
        self._auth_cache[key] = (now, ok)
        return ok

    # --- polling ----------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Read new comments of every polled repository; returns how many were queued."""
        queued = 0
        for repo in self.options["poll-projects"]:
            since = self.store.cursor(repo)
            try:
                comments = self.api.comments_since(repo, since)
            except (GiteaError, GiteaUnavailable) as exc:
                log.warning("polling %s: %s", repo, exc)
                continue
            newest = since
            for comment in comments:
                number = pr_number_of(comment)
                updated = str(comment.get("updated_at") or comment.get("created_at") or "")
                newest = max(newest, updated)
                if number is None:
                    continue
                try:
                    hook = parse_api_comment(repo, number, comment)
                except PayloadError as exc:
                    log.warning("polled comment on %s#%s unusable: %s", repo, number, exc)
                    continue
                self.submit(hook)
                queued += 1
            if newest and newest != since:
                self.store.set_cursor(repo, _overlap(newest))
        return queued

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.options["poll-interval"]):
            self.poll_once()
            self.store.prune_seen()


def _overlap(stamp: str) -> str:
    """Poll again from a little before the newest comment seen (clocks and equal
    timestamps); the seen-comment memory drops the repeats."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return (when - timedelta(seconds=60)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class GiteaSource:
    """``Source`` port: merge a gated pull request through Gitea's API, at the tested head."""

    def __init__(self, conn: GiteaConnection):
        self.conn = conn

    def merge(self, action: MergeChange) -> None:
        threading.Thread(target=self._merge, args=(action,), name="gitea-merge", daemon=True).start()

    def _merge(self, action: MergeChange) -> None:
        change = action.change
        api = self.conn.api
        try:
            api.merge(change.project, int(change.number or 0), action.sha or "",
                      self.conn.options["merge-style"])
        except GiteaError as exc:
            log.warning("Gitea refused to merge %s: %s", change.describe(), exc)
            self.conn.emit(MergeRefused(action.item_id, exc.status, exc.message))
            return
        except GiteaUnavailable as exc:
            log.error("merging %s: Gitea unavailable: %s", change.describe(), exc)
            self.conn.emit(MergeRefused(action.item_id, 503, f"Gitea unavailable: {exc}"))
            return
        tip = ""
        try:
            tip = api.branch_tip(change.project, action.branch or change.branch)
        except (GiteaError, GiteaUnavailable) as exc:
            log.info("merged %s; new tip of %s unknown: %s", change.describe(), change.branch, exc)
        log.info("merged %s through Gitea", change.describe())
        self.conn.emit(ChangeMerged(action.item_id, tip))


def from_settings(name: str, options: Mapping[str, Any], emit: Emit, state_dir: Path) -> GiteaConnection:
    """The driver factory the registry calls."""
    return GiteaConnection(name, options, emit, state_dir)
