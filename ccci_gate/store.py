"""The SQLite store: items, buildsets and builds, and the engine's state, so a restart
loses nothing.

The scheduler thread writes (one transaction per batch of events: :meth:`save_delta`);
web threads read through their own connections (WAL lets them read while a batch is
written), so an HTTP handler never waits for the scheduler's write lock. Rows are
written from plain data (``core.status`` summaries, and the ``core.records`` records of
``Engine.take_delta``) — the store never sees live model objects. What a restart
recovers (:meth:`load_record`, the argument of ``Engine.from_record``):

- each live item's record (``live_items``; the row goes when the item finishes);
- each queue, naming its items by id in order (``queues``, in creation order);
- each pipeline's own state: paused, batching groups (``pipelines``);
- the last reported run of each change, for retest-on-merge and retrigger (``last_runs``).

Beside them: each build's parameters as dispatched, secret values left out
(``build_params``, for ``ccci-gate replay``), and when retention removed a build's log
(``log_expiry``; ``retention.py`` also deletes whole finished items past their age).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping
from urllib.parse import quote

from .core.records import RECORD_VERSION, queue_with_items

if TYPE_CHECKING:
    from .core.engine import Delta

_encode = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, project TEXT NOT NULL,
    change_number INTEGER, patchset TEXT, ref TEXT, branch TEXT, sha TEXT,
    state TEXT, result TEXT, quick INTEGER, enqueued_at REAL, finished_at REAL,
    message TEXT, summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_open ON items (finished_at);
CREATE INDEX IF NOT EXISTS items_change ON items (project, change_number);
CREATE TABLE IF NOT EXISTS buildsets (
    id TEXT PRIMARY KEY, item_id TEXT NOT NULL, ref TEXT, commit_sha TEXT,
    merge_state TEXT, changes TEXT
);
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY, buildset_id TEXT, item_id TEXT NOT NULL, job TEXT NOT NULL,
    attempt INTEGER, state TEXT, result TEXT, voting INTEGER, worker TEXT, url TEXT,
    log_url TEXT, enqueued_at REAL, started_at REAL, finished_at REAL, message TEXT
);
CREATE INDEX IF NOT EXISTS builds_item ON builds (item_id);
CREATE INDEX IF NOT EXISTS builds_job ON builds (job, result, finished_at);
CREATE TABLE IF NOT EXISTS live_items (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipelines (name TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS last_runs (
    pipeline TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (pipeline, key)
);
CREATE TABLE IF NOT EXISTS build_params (
    id TEXT PRIMARY KEY, function TEXT NOT NULL, params TEXT NOT NULL, secrets TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_expiry (id TEXT PRIMARY KEY, at REAL NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS reports (
    item_id TEXT NOT NULL, phase TEXT NOT NULL, driver TEXT NOT NULL, at REAL,
    PRIMARY KEY (item_id, phase, driver)
);
"""


class Store:
    """A thread-safe handle on the state database (WAL; one writing connection behind a
    lock, one reading connection per reading thread)."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-32000")   # KiB: the live rows stay cached
            self._db.executescript(SCHEMA)
            top = self._db.execute("SELECT MAX(seq) FROM (SELECT seq FROM queues UNION ALL"
                                   " SELECT seq FROM last_runs)").fetchone()[0]
        self._seq = itertools.count((top or 0) + 1)
        self._written: dict[Any, Any] = {}   # queue and pipeline rows as last written
        self._live: set[str] = set()   # live items whose ``items`` row this store wrote
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _reader(self) -> sqlite3.Connection | None:
        """This thread's read-only connection (None for an in-memory database)."""
        if self.path == ":memory:":
            return None
        reader = getattr(self._local, "db", None)
        if reader is None:
            uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
            reader = sqlite3.connect(uri, uri=True, check_same_thread=False)
            reader.row_factory = sqlite3.Row
            self._local.db = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    # --- writes ----------------------------------------------------------------------

    def save_items(self, summaries: Iterable[Mapping[str, Any]], finished: bool = False) -> None:
        """Upsert items (and their buildset and builds) from ``item_summary`` snapshots.

        ``finished`` marks them as out of every queue (reported or dequeued).
        """
        rows = self._item_rows(summaries, finished)
        if rows[0]:
            with self._transaction() as db:
                self._write_items(db, *rows)

    def save_delta(self, delta: "Delta") -> None:
        """Write what the engine changed (``Engine.take_delta``) in one transaction.

        An item's ``items`` row (with its summary) is written whole when this store first
        sees the item and when it finishes; in between only its state, result and
        message change there, and its record in ``live_items``. Queue and pipeline rows
        are written only when they changed."""
        fresh = [(s, r) for s, r in delta.items if s["item_id"] not in self._live]
        known = [s for s, _r in delta.items if s["item_id"] in self._live]
        self._live.update(s["item_id"] for s, _r in fresh)
        self._live.difference_update(s["item_id"] for s in delta.finished)
        new_rows = self._item_rows([s for s, _r in fresh], False)
        _, bs_known, builds_known = self._item_rows(known, False, whole=False)
        updates = [(s["state"], s["result"], s.get("message") or s.get("failing_reason") or "",
                    s["item_id"]) for s in known]
        records = [(s["item_id"], _encode(r)) for s, r in delta.items]
        done = self._item_rows(delta.finished, True)
        queues, gone = [], []
        for qid, name, skel in delta.queues:
            if skel is None:
                gone.append((qid,))
                self._written.pop(qid, None)
            elif self._written.get(qid) != skel:
                self._written[qid] = skel
                queues.append((qid, name, next(self._seq), _encode(skel)))
        pipelines = []
        for name, state in delta.pipelines.items():
            if self._written.get(("pipeline", name)) != state:
                self._written[("pipeline", name)] = state
                pipelines.append((name, _encode(state)))
        runs = [(p, k, next(self._seq), _encode(r)) for p, k, r in delta.runs if r is not None]
        forgot = [(p, k) for p, k, r in delta.runs if r is None]
        with self._transaction() as db:
            self._write_items(db, *new_rows)
            db.executemany("UPDATE items SET state = ?, result = ?, message = ? WHERE id = ?",
                           updates)
            self._write_items(db, [], bs_known, builds_known)
            self._write_items(db, *done)
            db.executemany("INSERT OR REPLACE INTO live_items VALUES (?,?)", records)
            db.executemany("DELETE FROM live_items WHERE id = ?",
                           [(s["item_id"],) for s in delta.finished])
            db.executemany("INSERT INTO queues VALUES (?,?,?,?) ON CONFLICT (id) DO UPDATE"
                           " SET record = excluded.record", queues)
            db.executemany("DELETE FROM queues WHERE id = ?", gone)
            db.executemany("INSERT OR REPLACE INTO pipelines VALUES (?,?)", pipelines)
            db.executemany("INSERT OR REPLACE INTO last_runs VALUES (?,?,?,?)", runs)
            db.executemany("DELETE FROM last_runs WHERE pipeline = ? AND key = ?", forgot)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _write_items(db: sqlite3.Connection, item_rows: list, bs_rows: list,
                     build_rows: list) -> None:
        db.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       item_rows)
        db.executemany("INSERT OR REPLACE INTO buildsets VALUES (?,?,?,?,?,?)", bs_rows)
        db.executemany("INSERT OR REPLACE INTO builds VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       build_rows)

    @staticmethod
    def _item_rows(summaries: Iterable[Mapping[str, Any]], finished: bool, whole: bool = True
                   ) -> tuple[list, list, list]:
        """Rows of ``items`` (unless not ``whole``), ``buildsets`` and ``builds``."""
        now = time.time()
        item_rows, bs_rows, build_rows = [], [], []
        for s in summaries:
            c = s["change"]
            if whole:
                item_rows.append((s["item_id"], s["pipeline"], c["project"], c["number"],
                                  c["patchset"], c["ref"], c["branch"], c["sha"], s["state"],
                                  s["result"], int(bool(s["quick"])), s["enqueued_at"],
                                  now if finished else None,
                                  s.get("message") or s.get("failing_reason") or "", _encode(s)))
            bs = s["buildset"]
            if bs["id"]:
                bs_rows.append((bs["id"], s["item_id"], bs["ref"], bs["commit"], bs["merge_state"],
                                json.dumps(bs["changes"])))
            for j in s["jobs"]:
                if j.get("id"):
                    build_rows.append((j["id"], bs["id"], s["item_id"], j["name"], j["attempt"],
                                       j["state"], j["result"], int(bool(j["voting"])), j.get("worker", ""),
                                       j.get("url", ""), j.get("log_url", ""), j.get("enqueued_at"),
                                       j.get("started_at"), j.get("finished_at"), j.get("message", "")))
        return item_rows, bs_rows, build_rows

    def close_unrestored(self, keep: Iterable[str], message: str) -> int:
        """Mark open items not in ``keep`` finished (their state could not be restored:
        a store from before restarts were recovered, or a pipeline gone); how many."""
        keep = set(keep)
        with self._transaction() as db:
            ids = [(i,) for (i,) in db.execute("SELECT id FROM items WHERE finished_at IS NULL")
                   if i not in keep]
            db.executemany("UPDATE items SET finished_at = ?, state = 'DEQUEUED', message = ?"
                           " WHERE id = ?", [(time.time(), message, i) for (i,) in ids])
            db.executemany("DELETE FROM live_items WHERE id = ?", ids)
        return len(ids)

    def load_record(self) -> dict[str, Any] | None:
        """The engine record (``Engine.from_record``) of what was saved, or None when
        nothing was."""
        items = {r["id"]: json.loads(r["record"])
                 for r in self._rows("SELECT id, record FROM live_items")}
        pipelines: dict[str, dict[str, Any]] = {
            r["name"]: {**json.loads(r["record"]), "queues": []}
            for r in self._rows("SELECT name, record FROM pipelines")}
        for r in self._rows("SELECT pipeline, record FROM queues ORDER BY seq"):
            pipeline = pipelines.setdefault(r["pipeline"], {"paused": False, "queues": []})
            pipeline["queues"].append(queue_with_items(json.loads(r["record"]), items))
        runs = [json.loads(r["record"]) for r in
                self._rows("SELECT record FROM last_runs ORDER BY seq")]
        if not (pipelines or runs):
            return None
        return {"version": RECORD_VERSION, "pipelines": pipelines, "last_run": runs}

    def reported(self, item_id: str, phase: str, driver: str) -> bool:
        """Whether ``driver`` was given ``item_id``'s ``phase`` report already."""
        return bool(self._rows("SELECT 1 FROM reports WHERE item_id = ? AND phase = ? AND"
                               " driver = ?", (item_id, phase, driver)))

    def record_report(self, item_id: str, phase: str, driver: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO reports VALUES (?,?,?,?)",
                             (item_id, phase, driver, time.time()))

    # --- reads -----------------------------------------------------------------------

    def _rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        reader = self._reader()
        if reader is None:
            with self._lock:
                return [dict(r) for r in self._db.execute(sql, args).fetchall()]
        return [dict(r) for r in reader.execute(sql, args).fetchall()]

    def item(self, item_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT summary FROM items WHERE id = ?", (item_id,))
        return json.loads(rows[0]["summary"]) if rows else None

    def open_items(self) -> list[dict[str, Any]]:
        """Summaries of the items still in a queue, as first saved (their state, result
        and message columns are current; the status API reads live items from the
        scheduler's snapshots; a restart restores them from :meth:`load_record`)."""
        return [json.loads(r["summary"]) for r in
                self._rows("SELECT summary FROM items WHERE finished_at IS NULL ORDER BY enqueued_at")]

    def history(self, limit: int = 50, project: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT id, pipeline, project, change_number, patchset, ref, sha, result, state,"
               " enqueued_at, finished_at, message FROM items WHERE finished_at IS NOT NULL")
        args: tuple = ()
        if project:
            sql += " AND project = ?"
            args = (project,)
        return self._rows(sql + " ORDER BY finished_at DESC LIMIT ?", args + (limit,))

    def build(self, build_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM builds WHERE id = ?", (build_id,))
        return rows[0] if rows else None

    def builds_of(self, item_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM builds WHERE item_id = ? ORDER BY enqueued_at", (item_id,))

    def durations(self, job: str, project: str | None = None, limit: int = 10,
                  among: int = 500) -> list[float]:
        """Seconds each of ``job``'s last ``limit`` successful builds took, newest first;
        with ``project``, only its builds among the job's last ``among`` successes (what
        the status page's time estimates are made of: ``web/statusdoc.py``)."""
        recent = ("SELECT item_id, finished_at - started_at AS d, finished_at FROM builds"
                  " WHERE job = ? AND result = 'SUCCESS' AND started_at IS NOT NULL AND"
                  " finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?")
        if project is None:
            return [r["d"] for r in self._rows(recent, (job, limit))]
        return [r["d"] for r in self._rows(
            f"SELECT b.d FROM ({recent}) b JOIN items i ON i.id = b.item_id"
            " WHERE i.project = ? ORDER BY b.finished_at DESC LIMIT ?",
            (job, among, project, limit))]

    def buildsets_of(self, item_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM buildsets WHERE item_id = ? ORDER BY rowid", (item_id,))

    def reports_of(self, item_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM reports WHERE item_id = ? ORDER BY at", (item_id,))

    # --- build parameters, expired logs, retention ---------------------------------------

    def save_params(self, rows: Iterable[tuple[str, str, Mapping[str, str], list[str]]]) -> None:
        """``(build id, function, parameters without secret values, secret names)`` rows."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO build_params VALUES (?,?,?,?)",
                           [(b, f, _encode(dict(p)), _encode(list(s))) for b, f, p, s in rows])

    def params(self, build_id: str) -> dict[str, Any] | None:
        """``{function, parameters, secrets}`` of a dispatched build, or None."""
        rows = self._rows("SELECT * FROM build_params WHERE id = ?", (build_id,))
        if not rows:
            return None
        return {"function": rows[0]["function"], "parameters": json.loads(rows[0]["params"]),
                "secrets": json.loads(rows[0]["secrets"])}

    def expire_logs(self, build_ids: Iterable[str], reason: str) -> None:
        now = time.time()
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO log_expiry VALUES (?,?,?)",
                           [(b, now, reason) for b in build_ids])

    def logs_expired(self, build_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{build id: {at, reason}}`` of those whose log retention removed."""
        ids = list(build_ids)
        out: dict[str, dict[str, Any]] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            for r in self._rows(f"SELECT * FROM log_expiry WHERE id IN ({','.join('?' * len(part))})",
                                tuple(part)):
                out[r["id"]] = {"at": r["at"], "reason": r["reason"]}
        return out

    def finished_builds(self, build_ids: Iterable[str]) -> set[str]:
        """Those of ``build_ids`` with a result, or whose item is out of every queue."""
        ids, out = list(build_ids), set()
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            out |= {r["id"] for r in self._rows(
                "SELECT b.id FROM builds b JOIN items i ON i.id = b.item_id WHERE b.id IN"
                f" ({','.join('?' * len(part))}) AND (b.result IS NOT NULL OR"
                " i.finished_at IS NOT NULL)", tuple(part))}
        return out

    def live_buildsets(self) -> set[str]:
        """Buildsets of items still in a queue (their artifacts are in use)."""
        return {r["id"] for r in self._rows(
            "SELECT s.id FROM buildsets s JOIN items i ON i.id = s.item_id"
            " WHERE i.finished_at IS NULL")}

    def forget_items(self, finished_before: float) -> tuple[list[str], list[str], list[str]]:
        """Delete items finished before a time, with their buildsets, builds, parameters,
        reports and log expiries; ``(item ids, build ids, buildset ids)`` deleted."""
        with self._transaction() as db:
            items = [r[0] for r in db.execute(
                "SELECT id FROM items WHERE finished_at IS NOT NULL AND finished_at < ?",
                (finished_before,))]
            builds: list[str] = []
            buildsets: list[str] = []
            for chunk in range(0, len(items), 500):
                part = [(i,) for i in items[chunk:chunk + 500]]
                marks = ",".join("?" * len(part))
                args = tuple(i for (i,) in part)
                builds += [r[0] for r in db.execute(
                    f"SELECT id FROM builds WHERE item_id IN ({marks})", args)]
                buildsets += [r[0] for r in db.execute(
                    f"SELECT id FROM buildsets WHERE item_id IN ({marks})", args)]
                for table in ("items", "buildsets", "builds", "reports"):
                    key = "id" if table == "items" else "item_id"
                    db.executemany(f"DELETE FROM {table} WHERE {key} = ?", part)
            db.executemany("DELETE FROM build_params WHERE id = ?", [(b,) for b in builds])
            db.executemany("DELETE FROM log_expiry WHERE id = ?", [(b,) for b in builds])
        return items, builds, buildsets
