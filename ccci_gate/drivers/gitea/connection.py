"""A Gitea connection: everything one Gitea server is to the gatekeeper.

Configured in the gatekeeper's settings under ``connections`` (see ``doc/gitea.md`` and
``settings.py``)::

    connections:
      gitea:
        driver: gitea
        url: https://git.coopcloud.tech
        token-file: /etc/ccci-gate/gitea-token
        webhook-secret-file: /etc/ccci-gate/gitea-webhook-secret

The parts, one module each: ``webhook`` (signed webhooks in), ``poller`` (comments
polled in), ``inbox`` (the event thread: queued hooks, in order, retried while Gitea is
away), ``authorization`` (who may trigger), ``source`` (merges out), ``reporter`` and ``outbox`` (statuses and the PR
comment out, through the ``store``). This module wires them and handles each hook for
the event thread: it resolves what needs the API (the head sha of an old comment
payload, whether the commenter may trigger) and emits the core event ``triggers`` names
for it. A comment is recorded as handled only once its event is emitted, so one that
arrived while Gitea was unreachable runs when it is back, and a redelivered comment
that never ran is not "already handled".

A pull request's change carries the files it touches (for jobs' ``files:`` filters),
asked once per head sha; when Gitea cannot say, they are unknown and file filters match.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import voluptuous as v

from ...core.events import CommentAdded, TriggerEvent
from ...core.model import Change
from ...ports import Emit
from ...web.routes import Router
from ..base import Connection
from .api import GiteaAPI, GiteaError, GiteaUnavailable
from .authorization import Authorizer
from .inbox import Inbox
from .payloads import Hook, is_repo_name
from .poller import Poller
from .reporter import MARKER, GiteaReporter, Outbox, load_template
from .settings import OPTIONS, secret
from .source import GiteaSource
from .store import GiteaStore, comment_key
from .triggers import event_class
from .webhook import WebhookReceiver

log = logging.getLogger("ccci_gate.drivers.gitea")

FILES_CACHE = 1000   # pull request heads whose changed files are remembered


class GiteaConnection(Connection):
    """One Gitea server as trigger, source and reporter."""

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
        self.secret = secret(opts, "webhook-secret")
        self.api = api or GiteaAPI(opts["url"], secret(opts, "token"),
                                   retries=opts["api-retries"], verify=opts["verify-tls"])
        self.store = GiteaStore(state_dir / "gitea.sqlite")
        wake = threading.Event()
        template = load_template(Path(opts["comment-template"]) if opts.get("comment-template") else None)
        self.reporter = GiteaReporter(self.store, template, wake, redact=self._redact)
        self.outbox = Outbox(self.api, self.store, wake)
        self.source = GiteaSource(self.api, emit, opts["merge-style"])
        self.auth = Authorizer(self.api, opts["allow"], clock)
        self.inbox = Inbox(self.store, self.handle_hook, lambda: self.api.reachable(), name)
        self.submit = self.inbox.submit
        self.idle = self.inbox.idle     # set when every queued hook is handled (tests wait on it)
        self.webhooks = WebhookReceiver(self.secret, opts["max-payload"], self.submit)
        self.poller = Poller(self.api, self.store, opts["poll-projects"], self.submit)
        self.bot_user = opts["bot-user"]
        self._files: dict[tuple[str, int, str], tuple[str, ...] | None] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        if not self.secret:
            log.warning("connection %s has no webhook-secret: webhooks are refused", name)

    def _redact(self, text: str) -> str:
        text = self.api.redact(text)
        return text.replace(self.secret, "***") if self.secret else text

    # --- lifecycle ------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("POST", f"/webhooks/{self.name}", self.webhooks.handle)

    def start(self) -> None:
        self.outbox.start()
        self.inbox.start()
        if self.options["poll-interval"] > 0:
            self.poller.start()
            self._spawn(self._poll_loop, "gitea-poller")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"{name}-{self.name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.inbox.stop()
        self.outbox.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self.store.close()

    def poll_once(self) -> int:
        """One polling round now; returns how many comments were queued."""
        return self.poller.poll_once()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.options["poll-interval"]):
            self.poll_once()

    # --- the event thread (``inbox``) calls this: hooks → core events ---------------------

    def handle_hook(self, hook: Hook) -> TriggerEvent | None:
        """Resolve what needs the API and emit the core event; returns it (or None).
        Raises ``GiteaUnavailable`` when Gitea could not answer a lookup (the caller
        keeps the hook for a later try); a comment is recorded as handled only here,
        once its event is emitted or it is known to need none."""
        cls = event_class(hook.event, hook.action)
        if cls is None:
            return None
        if not is_repo_name(hook.repo):
            log.warning("%s for %r refused: not a well-formed owner/name", hook.event, hook.repo[:100])
            return None
        if issubclass(cls, CommentAdded):
            key = comment_key(hook.repo, hook.comment_id)
            once = hook.comment_id is not None and hook.action == "created"
            if once and self.store.seen(key):
                log.info("comment %s on %s#%s already handled", hook.comment_id, hook.repo, hook.number)
                return None
            event = self._comment_event(hook, cls)
            if event is not None:
                self.emit(event)
            if once:
                self.store.first_time(key)
            return event
        if hook.event == "pull_request":
            event = self._event(cls, hook, hook.head_sha, hook.branch, authorized=True)
        else:
            change = Change(hook.repo, hook.branch, hook.ref, sha=hook.after,
                            oldrev=hook.before or None)
            event = cls(self.driver, change, user=hook.user, authorized=True,
                        connection=self.name)
        self.emit(event)
        return event

    def _comment_event(self, hook: Hook, cls: type[CommentAdded]) -> TriggerEvent | None:
        if MARKER in hook.comment or (self.bot_user and hook.user == self.bot_user):
            return None  # the gate's own comment
        head, branch, title, url = hook.head_sha, hook.branch, hook.title, hook.url
        try:
            if not head or not branch:
                pr = self.api.pull(hook.repo, hook.number)  # type: ignore[arg-type]
                if pr.state != "open":
                    log.info("comment on closed %s#%s ignored", hook.repo, hook.number)
                    return None
                head, branch, title, url = pr.head_sha, pr.branch, pr.title or title, pr.url or url
            authorized = self.auth.authorized(hook.repo, hook.user)
        except GiteaError as exc:
            log.error("comment %s on %s#%s dropped: Gitea refused a lookup: %s", hook.comment_id,
                      hook.repo, hook.number, exc)
            return None
        event = self._event(cls, hook, head, branch, authorized, title=title, url=url)
        if not authorized and any(line.startswith("!") for line in hook.comment.splitlines()):
            self._refused(hook)
        return event

    def changed_files(self, repo: str, number: int | None, head: str) -> tuple[str, ...] | None:
        """The files pull request ``number`` changes at ``head`` (cached per head sha);
        None when Gitea cannot say."""
        if number is None or not head:
            return None
        key = (repo, number, head)
        if key not in self._files:
            try:
                self._files[key] = self.api.changed_files(repo, number)
            except (GiteaError, GiteaUnavailable) as exc:
                log.warning("files of %s#%s unknown (file filters will match): %s", repo, number, exc)
                return None
            while len(self._files) > FILES_CACHE:
                del self._files[next(iter(self._files))]
        return self._files[key]

    def _refused(self, hook: Hook) -> None:
        log.warning("%s may not trigger on %s#%s (not an org member, writer or allowed "
                    "user): %r ignored", hook.user, hook.repo, hook.number, hook.comment[:60])
        if self.options["reply-to-refused"]:
            self.store.push("comment", hook.repo, f"{hook.number}/refused", {"body": (
                f"@{hook.user} only members of the organisation, collaborators with write "
                f"access or allowed users may trigger tests here.\n\n{MARKER}\n")})
            self.reporter.wake.set()

    def _event(self, cls: type[TriggerEvent], hook: Hook, head: str, branch: str,
               authorized: bool, title: str = "", url: str = "") -> TriggerEvent:
        change = Change(hook.repo, branch, hook.pr_ref, number=hook.number, patchset=head,
                        sha=head, url=url or hook.url, title=title or hook.title,
                        author=hook.user, files=self.changed_files(hook.repo, hook.number, head))
        extra = {"comment": hook.comment} if issubclass(cls, CommentAdded) else {}
        return cls(self.driver, change, user=hook.user, authorized=authorized,
                   connection=self.name, **extra)
