"""The durable outbox drivers share: writes to a forge that survive outages and restarts.

A connection keeps, in its own SQLite file (:class:`OutboxStore`):

- **outbox**: API writes (statuses, comments, reviews) not yet accepted by the server,
  in order; an outage delays them, a restart does not lose them, and a write leaves the
  outbox once accepted (or refused), so none is sent twice by the gate. A write is
  marked ``inflight`` before it is sent: if the process dies then, the next one asks the
  driver whether it arrived (``arrived``) before sending it again.
- **reported**: keys of the writes queued (a driver passes ``key``, e.g. item, phase and
  context): a report the gatekeeper repeats after a restart is not queued again.
- **seen**: keys of events already acted on (a redelivered webhook, a comment seen by
  two paths, a stream event seen again after a catch-up query) so each triggers once.
- **cursor**: how far a connection has read something (polling, an event stream).

:class:`Outbox` is the thread that sends: the driver gives it ``send(outgoing)`` and
says which exceptions mean "the server is down, retry later" (``unavailable``) and
which mean "the server said no, drop it" (``refused``).
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("ccci_gate.drivers.outbox")

SEEN_KEEP = 30 * 24 * 3600.0
# While the server is down the head of the outbox is retried every MAX_DELAY seconds at
# most, so after an outage of any length the backlog starts draining within MAX_DELAY of
# the server's return (``tests/test_gitea_edges.py``); a write is given up only after
# about four hours.
MAX_DELAY = 30.0
MAX_ATTEMPTS = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,           -- what the driver sends (status, comment, review...)
    repo TEXT NOT NULL,           -- the project
    target TEXT NOT NULL,         -- what in the project (a sha, 'number/pipeline'...)
    body TEXT NOT NULL,           -- JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reported (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (repo TEXT PRIMARY KEY, since TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Outgoing:
    """One queued write."""

    id: int
    kind: str
    repo: str
    target: str
    body: dict[str, Any]
    attempts: int
    inflight: bool = False   # sent before, outcome unknown (the process died meanwhile)


class OutboxStore:
    """Thread-safe; every method is one short transaction. Drivers subclass it to add
    tables of their own (``extra_schema``)."""

    extra_schema = ""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA + self.extra_schema)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        if "inflight" not in columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN inflight INTEGER NOT NULL DEFAULT 0")
        if "queued_at" not in columns:   # when the write was queued (time.time())
            self._db.execute("ALTER TABLE outbox ADD COLUMN queued_at REAL NOT NULL DEFAULT 0")
            self._db.execute("UPDATE outbox SET queued_at = ?", (time.time(),))
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- outbox --------------------------------------------------------------------------

    def push(self, kind: str, repo: str, target: str, body: dict[str, Any],
             key: str | None = None) -> bool:
        """Queue a write; with a ``key``, only the first time that key is pushed (one
        transaction: a crash leaves both or neither). False when it was not queued."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if key is not None and self._db.execute(
                        "INSERT OR IGNORE INTO reported VALUES (?, ?)",
                        (key, time.time())).rowcount == 0:
                    self._db.execute("COMMIT")
                    return False
                self._db.execute("INSERT INTO outbox (kind, repo, target, body, queued_at) "
                                 "VALUES (?, ?, ?, ?, ?)",
                                 (kind, repo, target, json.dumps(body), time.time()))
                self._db.execute("COMMIT")
                return True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def head(self) -> Outgoing | None:
        """The oldest unsent write (writes go out in order)."""
        rows = self._run("SELECT id, kind, repo, target, body, attempts, inflight FROM outbox "
                         "ORDER BY id LIMIT 1")
        if not rows:
            return None
        id_, kind, repo, target, body, attempts, inflight = rows[0]
        return Outgoing(id_, kind, repo, target, json.loads(body), attempts, bool(inflight))

    def sending(self, id_: int) -> None:
        """The write is about to be sent: if the process dies now, it may have arrived
        (``failed`` clears that: the server said it was unavailable)."""
        self._run("UPDATE outbox SET inflight = 1 WHERE id = ?", (id_,))

    def next_at(self) -> float | None:
        rows = self._run("SELECT next_at FROM outbox ORDER BY id LIMIT 1")
        return rows[0][0] if rows else None

    def sent(self, id_: int) -> None:
        self._run("DELETE FROM outbox WHERE id = ?", (id_,))

    def failed(self, id_: int, error: str, delay: float) -> None:
        self._run("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?, "
                  "inflight = 0 WHERE id = ?", (time.time() + delay, error[:500], id_))

    def pending(self) -> int:
        return self._run("SELECT COUNT(*) FROM outbox")[0][0]

    def backlog(self) -> tuple[int, float | None]:
        """How many writes wait, and when the oldest of them was queued (None: none)."""
        count, oldest = self._run("SELECT COUNT(*), MIN(queued_at) FROM outbox")[0]
        return count, oldest

    # --- seen events ---------------------------------------------------------------------

    def first_time(self, key: str) -> bool:
        """Record ``key``; True only the first time it is seen."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (key, time.time()))
            return cur.rowcount == 1

    def prune_seen(self, keep: float = SEEN_KEEP) -> None:
        self._run("DELETE FROM seen WHERE at < ?", (time.time() - keep,))
        self._run("DELETE FROM reported WHERE at < ?", (time.time() - keep,))

    # --- cursors -------------------------------------------------------------------------

    def cursor(self, repo: str) -> str:
        rows = self._run("SELECT since FROM cursor WHERE repo = ?", (repo,))
        return rows[0][0] if rows else ""

    def set_cursor(self, repo: str, since: str) -> None:
        self._run("INSERT OR REPLACE INTO cursor VALUES (?, ?)", (repo, since))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def backoff(attempts: int, max_delay: float = MAX_DELAY) -> float:
    """Seconds before the next try of a write that failed ``attempts`` times before."""
    return min(max_delay, 2.0 ** min(attempts, 32))


class Outbox:
    """Sends queued writes in order on its own thread; an outage delays them (backoff
    up to ``max_delay``), never loses them; a refused write is logged and dropped."""

    def __init__(self, store: OutboxStore, wake: threading.Event,
                 send: Callable[[Outgoing], None],
                 unavailable: tuple[type[Exception], ...],
                 refused: tuple[type[Exception], ...],
                 max_delay: float = MAX_DELAY, name: str = "outbox",
                 arrived: Callable[[Outgoing], bool] = lambda out: False):
        self.store = store
        self.arrived = arrived
        self.wake = wake
        self.send = send
        self.unavailable = unavailable
        self.refused = refused
        self.max_delay = max_delay
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            due = self.store.next_at()
            if due is None:
                self.wake.wait()
            else:
                wait = due - time.time()
                if wait > 0:
                    self.wake.wait(wait)
            self.wake.clear()
            while not self._stop.is_set() and self.flush_one():
                pass

    def flush_one(self) -> bool:
        """Send the oldest due write; False when there is none or the server is down."""
        out = self.store.head()
        if out is None:
            return False
        if out.attempts and (self.store.next_at() or 0) > time.time():
            return False
        try:
            if out.inflight and self.arrived(out):
                log.info("%s: %s to %s %s arrived before the restart; not sent again",
                         self.name, out.kind, out.repo, out.target)
                self.store.sent(out.id)
                return True
            self.store.sending(out.id)
            self.send(out)
        except self.unavailable as exc:
            delay = backoff(out.attempts, self.max_delay)
            if out.attempts + 1 >= MAX_ATTEMPTS:
                log.error("%s: giving up on %s to %s after %d attempts: %s", self.name,
                          out.kind, out.repo, out.attempts + 1, exc)
                self.store.sent(out.id)
                return True
            log.warning("%s: server unavailable (%s); %d writes wait, next try in %.0fs",
                        self.name, exc, self.store.pending(), delay)
            self.store.failed(out.id, str(exc), delay)
            return False
        except self.refused as exc:
            log.error("%s: the server refused %s to %s %s: %s (dropped)", self.name, out.kind,
                      out.repo, out.target, exc)
        self.store.sent(out.id)
        return True
