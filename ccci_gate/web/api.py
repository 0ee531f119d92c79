"""The gatekeeper's HTTP API: status, build logs, item pages and the admin endpoints.

It runs on the HTTP threads, so it reads only the scheduler's published snapshot
(``Scheduler.snapshot``: layout, status, live items) and the store, and changes
things only by putting events on the scheduler's queue.

Read-only endpoints are open; ``/admin/*`` needs ``Authorization: Bearer <token>``
(the token lives in the state directory, readable by the operator only).

No handler waits on the scheduler thread, and none on the Gearman servers for more
than a second: the worker pool (two admin round trips per server) comes from a
:class:`~ccci_gate.web.snapshot.Snapshot` asked for again when older than
``POOL_MAX_AGE``; history and finished items from the store's own read connection.

- ``GET /status.json``: pipelines, queues, items, builds (each with its ``estimate`` and
  ``remaining`` seconds: ``web/statusdoc.py``), progress, the worker pool
  (with the warm canonicals workers reported, ``pool.warm``: ``gearman.warmpool``), the
  ``recent`` finished items with their result and page, and ``disk``: bytes per kind
  as the retention janitor last measured them (``retention.py``), the open ``alerts``
  (``alerts.py``: kind, severity, message, since); ``?compact=1``
  gives no indentation (the status page asks for it)
- ``GET /items/<id>``: one item (live, or from history); a client that prefers
  ``text/html`` (a browser) gets the change's page instead (``web/pages.py``)
- ``GET /history.json``: recently finished items
- ``GET /logs/<build-id>``, ``GET /builds/<build-id>.json``: a build's log (ranges,
  gzip) and record (``web/logs.py``)
- ``POST /admin/enqueue`` ``{pipeline, project, change?, patchset?, ref?, branch?}``
- ``POST /admin/dequeue`` ``{project, change? | ref?, pipeline?}``
- ``POST /admin/reconfigure``: reload the layout; 400 with every error if invalid
- ``POST /admin/promote`` ``{pipeline, project, change}``: move an item to its queue's head
- ``POST /admin/retrigger`` ``{pipeline, project, change? | ref?, job}``: run one job again
- ``POST /admin/pause`` / ``/admin/resume`` ``{pipeline}``
- ``POST /admin/notify-push`` ``{project}``: a push landed; read its branches now
"""
from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from ..alerts import POOL_MAX_AGE, Alerts
from ..core import events as ev
from ..core.model import Change
from ..drivers.base import SourceUnavailable
from ..logstore import LogStore
from ..scheduler import Scheduler
from ..store import Store
from .logs import LogRoutes
from .statusdoc import Estimates, compact_json
from .routes import Request, Response, Router
from .snapshot import Snapshot

BUILD_ID = re.compile(r"^[0-9a-f]{32}$")
RECENT = 10            # finished items shown in the status


class GatekeeperAPI:
    """Registers the status, log and admin routes on a router."""

    def __init__(self, scheduler: Scheduler, store: Store, log_dir: Path, admin_token: str,
                 reconfigure: Callable[[], list[str]], pool: Callable[[], Mapping[str, Any]],
                 change_ref: Callable[[str, int], str],
                 resolve_change: Callable[[str, int, str | None], Change | None] = lambda *a: None,
                 notify_push: Callable[[str], bool] = lambda project: False, web_url: str = "",
                 logs: LogRoutes | None = None,
                 disk: Callable[[], Mapping[str, Any]] = lambda: {"measured_at": None}):
        self.scheduler = scheduler
        self.store = store
        self.log_dir = log_dir
        self.admin_token = admin_token
        self.reconfigure = reconfigure
        self.pool = pool
        self.change_ref = change_ref
        self.resolve_change = resolve_change
        self.notify_push = notify_push
        self.web_url = web_url.rstrip("/")
        self.pool_status = Snapshot("pool", pool, wait=1.0)
        # the open alerts; the gatekeeper (app.py) gives them its outboxes and warm root
        self.alerts = Alerts(scheduler.status, self.pool_status)
        self.logs = logs or LogRoutes(LogStore(log_dir), store)
        self.disk = disk
        self.estimates = Estimates(store)
        self.item_page: Callable[[Request, dict[str, Any]], Response] | None = None   # pages.py

    def register(self, router: Router) -> None:
        router.add("GET", "/status.json", self.status)
        router.add("GET", "/history.json", self.history)
        router.add("GET", "/items/", self.item)
        self.logs.register(router)
        router.add("POST", "/admin/enqueue", self.admin(self.enqueue))
        router.add("POST", "/admin/dequeue", self.admin(self.dequeue))
        router.add("POST", "/admin/reconfigure", self.admin(self.reload))
        router.add("POST", "/admin/promote", self.admin(self.promote))
        router.add("POST", "/admin/retrigger", self.admin(self.retrigger))
        router.add("POST", "/admin/pause", self.admin(self.pause))
        router.add("POST", "/admin/resume", self.admin(self.pause))
        router.add("POST", "/admin/notify-push", self.admin(self.pushed))

    # --- open endpoints -----------------------------------------------------------------

    def status(self, request: Request) -> Response:
        compact = request.query.get("compact") == ["1"]
        status = self.scheduler.status()
        data = self.estimates.annotate(status)
        pool = self.pool_status.get(POOL_MAX_AGE)   # waited on once per request
        data["pool"] = pool.value if pool is not None else {
            "error": "the Gearman servers have not answered yet"}
        data["alerts"] = [a.to_dict() for a in self.alerts.current(
            status, pool.value if pool is not None else {})]
        data["recent"] = self.recent()
        data["disk"] = dict(self.disk())
        if compact:
            return Response(200, compact_json(data), {"Content-Type": "application/json"})
        return Response.json(data)

    def recent(self) -> list[dict[str, Any]]:
        return [{**row, "status_url": f"{self.web_url}/items/{row['id']}"}
                for row in self.store.history(RECENT)]

    def history(self, request: Request) -> Response:
        project = (request.query.get("project") or [None])[0]
        return Response.json({"items": self.store.history(50, project)})

    def item(self, request: Request) -> Response:
        item_id = request.path.rsplit("/", 1)[-1]
        if not BUILD_ID.match(item_id):
            return Response.error(404, "no such item")
        data = self.scheduler.snapshot.items.get(item_id) or self.store.item(item_id)
        if data is None:
            return Response.error(404, "no such item")
        data = self.logs.annotate(data)
        if self.item_page is not None:
            return self.item_page(request, data)
        return Response.json(data)

    # --- admin endpoints ----------------------------------------------------------------

    def admin(self, handler: Callable[[Request, dict[str, Any]], Response]) -> Callable[[Request], Response]:
        """Wrap ``handler(request, body)``: check the token, parse the JSON object body."""
        def guarded(request: Request) -> Response:
            given = request.header("authorization")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.admin_token}".encode()):
                return Response.error(401, "admin token required (Authorization: Bearer ...)")
            try:
                body = request.json() if request.body else {}
            except ValueError as exc:
                return Response.error(400, f"malformed JSON: {exc}")
            if not isinstance(body, dict):
                return Response.error(400, "expected a JSON object")
            return handler(request, body)
        return guarded

    def enqueue(self, request: Request, body: dict[str, Any]) -> Response:
        try:
            pipeline = _text(body, "pipeline")
            change = self._change(body, lookup=True)
        except ValueError as exc:
            return Response.error(400, str(exc))
        except SourceUnavailable as exc:
            return Response.error(503, f"cannot look the change up: {exc}")
        layout = self.scheduler.snapshot.layout
        if pipeline not in layout.pipelines:
            return Response.error(400, f"no pipeline {pipeline!r}; have: {', '.join(layout.pipelines)}")
        if change.project not in layout.projects:
            return Response.error(400, f"project {change.project!r} is not in the layout")
        return self._ask(ev.EnqueueRequest(pipeline, change, bool(body.get("quick"))),
                         {"enqueued": change.describe(), "pipeline": pipeline})

    def dequeue(self, request: Request, body: dict[str, Any]) -> Response:
        try:
            change = self._change(body)
        except ValueError as exc:
            return Response.error(400, str(exc))
        return self._ask(ev.DequeueRequest(change.key, str(body.get("pipeline") or "")),
                         {"dequeued": change.describe()})

    def _ask(self, event: ev.Event, data: dict[str, Any]) -> Response:
        """The engine's answer to an operator command: 202 when done, 4xx with why not."""
        status, text = self.scheduler.ask(event)
        if status >= 400:
            return Response.error(status, text)
        return Response.json({**data, "message": text}, status)

    def promote(self, request: Request, body: dict[str, Any]) -> Response:
        return self._item_command(body, lambda pipeline, change: ev.PromoteRequest(pipeline, change.key))

    def retrigger(self, request: Request, body: dict[str, Any]) -> Response:
        job = body.get("job")
        if not isinstance(job, str) or not job:
            return Response.error(400, "'job' is required")
        return self._item_command(body, lambda pipeline, change: ev.RetriggerRequest(
            pipeline, change.key, job))

    def pause(self, request: Request, body: dict[str, Any]) -> Response:
        pipeline = body.get("pipeline")
        if pipeline not in self.scheduler.snapshot.layout.pipelines:
            return Response.error(400, f"no pipeline {pipeline!r}")
        paused = request.path.endswith("/pause")
        return self._ask(ev.PauseRequest(pipeline, paused), {"pipeline": pipeline, "paused": paused})

    def pushed(self, request: Request, body: dict[str, Any]) -> Response:
        """A post-receive hook says ``project`` was pushed to: read its branches now."""
        project = body.get("project")
        if not isinstance(project, str) or not self.notify_push(project):
            return Response.error(404, f"project {project!r} is not a git-source project of "
                                       f"the layout (only those are watched for pushes)")
        return Response.json({"project": project, "checking": True}, 202)

    def _item_command(self, body: dict[str, Any], make: Callable[[str, Change], ev.Event]) -> Response:
        try:
            pipeline = _text(body, "pipeline")
            change = self._change(body)
        except ValueError as exc:
            return Response.error(400, str(exc))
        if pipeline not in self.scheduler.snapshot.layout.pipelines:
            return Response.error(400, f"no pipeline {pipeline!r}")
        return self._ask(make(pipeline, change), {"accepted": change.describe(), "pipeline": pipeline})

    def reload(self, request: Request, body: dict[str, Any]) -> Response:
        errors = self.reconfigure()
        if errors:
            return Response.json({"ok": False, "errors": errors}, 400)
        self.scheduler.sync()   # answer once the new layout runs (and is published)
        return Response.json({"ok": True})

    def _change(self, body: Mapping[str, Any], lookup: bool = False) -> Change:
        """The change ``body`` names. With ``lookup``, a change of a forge that knows
        more than a ref pattern (Gerrit: the current patchset) is asked for it."""
        project = _text(body, "project")
        branch = str(body.get("branch") or "main")
        number = body.get("change")
        if number not in (None, ""):
            try:
                number = int(number)
            except (TypeError, ValueError):
                raise ValueError(f"change must be a number, not {number!r}") from None
            patchset = str(body.get("patchset") or "") or None
            resolved = self.resolve_change(project, number, patchset) if lookup else None
            if resolved is not None:
                return resolved
            ref = self.change_ref(project, number)
            return Change(project, branch, ref, number=number, patchset=patchset, sha=patchset)
        ref = str(body.get("ref") or f"refs/heads/{branch}")
        if ref.startswith("refs/heads/") and not body.get("branch"):
            branch = ref[len("refs/heads/"):]
        return Change(project, branch, ref, sha=str(body.get("sha") or "") or None)


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} is required")
    return value
