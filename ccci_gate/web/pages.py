"""The pages people look at, beside the JSON API (``web/api.py``):

- ``GET /``: the status page (``static/index.html`` + ``status.js`` + ``status.css``, no
  build step, nothing fetched from elsewhere), drawing ``/status.json`` every 2 s;
- ``GET /static/<file>``: those files;
- ``GET /items/<id>`` with an ``Accept`` that prefers ``text/html`` (a browser): the
  change's page (``templates/item.html``); any other client keeps getting the JSON;
- ``GET /console/<build-id>``: a build's log, followed live (``static/console.html``);
- ``GET /stream/<build-id>``: the live log as server-sent events (:class:`LogStream`).

Like the API, these run on the HTTP threads and read only the scheduler's published
snapshot, the store and the log store; none takes a lock the scheduler holds. Every
string a user controls (titles, project names, log lines) reaches HTML escaped: Jinja's
autoescape here, ``textContent`` in the page scripts.
"""
from __future__ import annotations

import datetime
import re
import threading
from pathlib import Path
from typing import Any, Mapping

import jinja2

from ..core.status import place_of
from ..credentials import is_secret
from .api import BUILD_ID, GatekeeperAPI
from .logstream import LogStream
from .routes import Request, Response, Router

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(html|js|css|png)$")
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
         "css": "text/css; charset=utf-8", "png": "image/png"}
MAX_STREAMS = 16    # live logs open at once; cheroot has 32 threads for everything


def prefers_html(accept: str) -> bool:
    """Whether an ``Accept`` header ranks ``text/html`` above ``application/json``
    (a browser's does; ``*/*``, curl's and requests', does not: a tie keeps JSON)."""
    def quality(kind: str) -> float:
        major = kind.split("/")[0] + "/*"
        best, rank = 0.0, -1
        for part in accept.split(","):
            fields = [f.strip() for f in part.split(";")]
            media = fields[0].lower()
            match = 2 if media == kind else 1 if media == major else 0 if media == "*/*" else -1
            if match <= rank:
                continue
            q = 1.0
            for f in fields[1:]:
                if f.startswith("q="):
                    try:
                        q = float(f[2:])
                    except ValueError:
                        q = 0.0
            best, rank = q, match
        return best
    return quality("text/html") > quality("application/json")


def shown_params(record: Mapping[str, Any] | None) -> dict[str, str] | None:
    """A build's recorded parameters (``Store.params``) fit to show: the values of secret
    ones were never stored (``buildparams.py``), and are not shown either."""
    if record is None:
        return None
    shown = {k: str(v) for k, v in record["parameters"].items() if not is_secret(k)}
    shown.update({name: "(secret: not stored)" for name in record.get("secrets", ())})
    return dict(sorted(shown.items()))


class Pages:
    """Registers the pages beside ``api`` (whose snapshot, store and log store they read)."""

    def __init__(self, api: GatekeeperAPI):
        self.api = api
        self.logs = api.logs.logs
        self.stopping = threading.Event()
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined)
        self._templates.filters["when"] = _when
        self._templates.filters["secs"] = _secs

    def register(self, router: Router) -> None:
        static_routes(router)
        router.add("GET", "/console/", self.console)
        router.add("GET", "/stream/", self.stream)
        self.api.item_page = self.item

    def close(self) -> None:
        """End every open stream (the gatekeeper is stopping)."""
        self.stopping.set()

    def console(self, request: Request) -> Response:
        build_id = request.path[len("/console/"):]
        if not BUILD_ID.match(build_id) or not self._known(build_id):
            return Response.error(404, "no such build")
        return _file("console.html")

    # --- the live log ----------------------------------------------------------------------

    def stream(self, request: Request) -> Response:
        build_id = request.path[len("/stream/"):]
        if not BUILD_ID.match(build_id) or not self._known(build_id):
            return Response.error(404, "no such build")
        offset = request.header("last-event-id")   # parsed before a slot is taken
        start = int(offset) if offset.isascii() and offset.isdigit() and len(offset) <= 18 else 0
        if not self._streams.acquire(blocking=False):
            return Response.error(503, f"{MAX_STREAMS} live logs are open already; try again")
        body = LogStream(self.logs, build_id, self.result_of, self.stopping, start,
                         done=self._streams.release)
        return Response(200, body, {"Content-Type": "text/event-stream; charset=utf-8",
                                    "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _known(self, build_id: str) -> bool:
        return (self.logs.state(build_id) is not None or self._live(build_id) is not None
                or self.api.store.build(build_id) is not None)

    def _live(self, build_id: str) -> Mapping[str, Any] | None:
        for item in self.api.scheduler.snapshot.items.values():
            for job in item["jobs"]:
                if job.get("id") == build_id:
                    return job
        return None

    def result_of(self, build_id: str) -> str | None:
        """A finished build's result; None while it runs (or is queued). A build that left
        the live status without a result (a lost attempt, retried under a new id) is
        ``LOST``."""
        live = self._live(build_id)
        if live is not None:
            return live.get("result") or None
        row = self.api.store.build(build_id)
        if row is None or row["result"]:
            return (row or {}).get("result") or "UNKNOWN"
        return "LOST"

    # --- a change's page -------------------------------------------------------------------

    def item(self, request: Request, data: dict[str, Any]) -> Response:
        if not prefers_html(request.header("accept")):
            return Response.json(data)
        html = self._templates.get_template("item.html").render(page=self.item_view(data))
        return Response(200, html.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def item_view(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """What the change's page shows: the item, every buildset with its builds (the
        current one from the live summary, earlier ones from the store; a build of an
        earlier one stored without a result is ``SUPERSEDED``), reports sent, and its
        ``place`` in its queue (``core.status.place_of``)."""
        item_id = data["item_id"]
        store = self.api.store
        current = data["buildset"]
        rows = {b["id"]: dict(b) for b in store.buildsets_of(item_id)}
        if current.get("id"):
            rows[current["id"]] = {**rows.get(current["id"], {}), "id": current["id"],
                                   "ref": current.get("ref"), "commit_sha": current.get("commit"),
                                   "merge_state": current.get("merge_state"),
                                   "reason": current.get("reason", "")}
        builds: dict[str, list[dict[str, Any]]] = {}
        for row in store.builds_of(item_id):
            builds.setdefault(row["buildset_id"], []).append(dict(row))
        live = [j for j in data["jobs"] if j.get("id")]
        if current.get("id"):
            builds[current["id"]] = [{**j, "job": j["name"]} for j in live]
        expired = store.logs_expired([b["id"] for runs in builds.values() for b in runs])
        buildsets = []
        for bs_id, row in rows.items():
            runs = sorted(builds.get(bs_id, []), key=lambda b: b.get("enqueued_at") or 0)
            for b in runs:
                if bs_id != current.get("id") and not b.get("result"):
                    b["result"] = "SUPERSEDED"   # a reset replaced its buildset first
                b["log_expired"] = expired.get(b["id"])
                b["params"] = shown_params(store.params(b["id"]))
                b["replay"] = self.api.logs.replay_command(b["id"])
                b["duration"] = _duration(b)
            first = min((b.get("enqueued_at") or 0 for b in runs), default=0)
            buildsets.append({**row, "builds": runs, "current": bs_id == current.get("id"),
                              "first": first})
        buildsets.sort(key=lambda bs: (not bs["current"], -bs["first"]))   # current, then newest
        return {"item": data, "buildsets": buildsets, "reports": store.reports_of(item_id),
                "place": place_of(data)}


def static_routes(router: Router) -> None:
    """``GET /`` (the status page) and ``GET /static/<file>``: all the status page needs
    beside ``/status.json`` (``bench/status_page.py`` serves an engine's status with them)."""
    router.add("GET", "/", lambda request: _file("index.html"))
    router.add("GET", "/static/", _static)


def _static(request: Request) -> Response:
    name = request.path[len("/static/"):]
    if not STATIC_NAME.match(name) or not (STATIC / name).is_file():
        return Response.error(404, "no such file")
    return _file(name)


def _file(name: str) -> Response:
    return Response(200, (STATIC / name).read_bytes(),
                    {"Content-Type": TYPES[name.rsplit(".", 1)[1]], "Cache-Control": "no-cache"})


def _duration(build: Mapping[str, Any]) -> float | None:
    start, end = build.get("started_at"), build.get("finished_at")
    return end - start if start is not None and end is not None else build.get("duration")


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    s = int(round(value))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"
