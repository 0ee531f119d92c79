"""The connection's event thread: hooks (webhooks, polled comments) queued durably in
the store, handled one at a time in order, retried while Gitea is away.

``submit`` writes a hook to the store's inbox before the webhook is answered (with its
``X-Gitea-Delivery`` id, in one transaction, so a delivery is never marked seen
without its hook queued). The thread hands each hook to ``handle``; when that raises
``GiteaUnavailable`` the hook stays at the head of the queue and is tried again after
``HOOK_RETRY_BASE`` seconds, doubling up to ``HOOK_RETRY_CAP``; later hooks wait behind
it, so order is kept. A ``!testme`` sent during an outage thus runs once Gitea is back,
and a restart resumes the queue. Only a hook that keeps failing while Gitea answers
everything else (``reachable``) is given up, after ``POISON_TRIES``; its delivery id is
forgotten so that Gitea's "redeliver" can try again.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable

from .api import GiteaUnavailable
from .payloads import Hook
from .store import GiteaStore, Incoming

log = logging.getLogger("ccci_gate.drivers.gitea")

HOOK_RETRY_BASE = 1.0    # seconds before a hook Gitea could not answer is tried again,
HOOK_RETRY_CAP = 15.0    # doubling up to this
POISON_TRIES = 5         # a hook that fails this often while Gitea answers is dropped
PRUNE_EVERY = 3600.0     # seconds between prunings of the seen deliveries and comments


class Inbox:
    """Queued hooks → ``handle``, on one thread, in order."""

    def __init__(self, store: GiteaStore, handle: Callable[[Hook], Any],
                 reachable: Callable[[], bool], name: str = "gitea"):
        self.store = store
        self.handle = handle
        self.reachable = reachable
        self.name = name
        self.retry_cap = HOOK_RETRY_CAP
        self.idle = threading.Event()   # set when every queued hook is handled
        self.idle.set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"gitea-events-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def submit(self, hook: Hook, delivery: str = "") -> bool:
        """Queue a hook for the event thread, durably (webhooks and polling both come
        here); False when its ``delivery`` id was seen before."""
        with self._lock:
            self.idle.clear()
            accepted = self.store.accept(dataclasses.asdict(hook), delivery)
            if not accepted and self.store.inbox_size() == 0:
                self.idle.set()
        self._wake.set()
        return accepted

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain()
            except Exception:  # pragma: no cover - a driver bug must not stop the thread
                log.exception("the Gitea event thread")
                self._stop.wait(1.0)
            if time.monotonic() - self._pruned > PRUNE_EVERY:
                self.store.prune_seen()   # the memory of handled hooks is kept a month
                self._pruned = time.monotonic()
            with self._lock:
                head = self.store.inbox_head()
                if head is None:
                    self.idle.set()
            wait = None if head is None else max(0.0, head.next_at - time.time())
            self._wake.wait(wait)
            self._wake.clear()

    def drain(self) -> int:
        """Handle queued hooks in order until the queue is empty or its head must wait
        for Gitea; returns how many were handled."""
        handled = 0
        while not self._stop.is_set():
            entry = self.store.inbox_head()
            if entry is None or entry.next_at > time.time():
                return handled
            try:
                hook = Hook(**entry.hook)
            except TypeError as exc:     # written by another version of the driver
                log.error("queued hook %s unreadable (%s); dropped", entry.hook, exc)
                self.store.inbox_done(entry.id)
                continue
            try:
                self.handle(hook)
            except GiteaUnavailable as exc:
                if self._retry(entry, hook, exc):
                    return handled
            except Exception:  # a driver bug: log it, do not block the queue
                log.exception("handling %s for %s", hook.event, hook.repo)
            self.store.inbox_done(entry.id)
            handled += 1
        return handled

    def _retry(self, entry: Incoming, hook: Hook, exc: Exception) -> bool:
        """Keep a hook Gitea could not answer for a later try (True), or give it up
        when Gitea answers everything else and this hook keeps failing (False)."""
        if entry.attempts + 1 >= POISON_TRIES and self.reachable():
            log.error("%s %s on %s#%s dropped after %d tries while Gitea answers: %s",
                      hook.event, hook.comment_id or "", hook.repo, hook.number,
                      entry.attempts + 1, exc)
            if entry.delivery:   # let Gitea's "redeliver" try again
                self.store.forget(f"delivery:{entry.delivery}")
            return False
        delay = min(self.retry_cap, HOOK_RETRY_BASE * 2 ** entry.attempts)
        log.warning("%s %s on %s#%s waits for Gitea (%s); %d hooks queued, next try in %.0fs",
                    hook.event, hook.comment_id or "", hook.repo, hook.number, exc,
                    self.store.inbox_size(), delay)
        self.store.inbox_retry(entry.id, str(exc), delay)
        return True
