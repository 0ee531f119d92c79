"""Build logs and build records over HTTP.

- ``GET /logs/<build-id>``: the build's log text. A finished log (stored gzip, see
  ``logstore.py``) goes out as stored, with ``Content-Encoding: gzip``, to a client that
  accepts gzip; as plain text otherwise. ``Range: bytes=a-b``, ``bytes=a-`` and
  ``bytes=-n`` (one range, on the uncompressed text) answer 206 with ``Content-Range``,
  for a running log too (``ccci-gate logs -f`` follows a build that way); a range that
  starts at or past the end answers 416 with ``Content-Range: bytes */<length>``. Other
  range forms (several ranges, other units) are ignored: the whole log, 200, as RFC 9110
  allows. ``X-Log-State`` says ``running`` or ``finished``. A log retention removed
  answers 410 Gone, saying when and why; a build with no output yet answers an empty
  running log.
- ``GET /builds/<build-id>.json``: the build's row (job, result, times, worker), its log
  (state, length, or when it expired), its job's kind and script, the parameters it
  was dispatched with — the names of secret ones only (``buildparams.py``) — and
  ``replay``, the command that runs it again (``commands/replay.py``).
"""
from __future__ import annotations

import datetime
import itertools
import re
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..credentials import is_secret
from ..logstore import FINISHED, PIECE, RUNNING, LogStore
from ..store import Store
from .routes import Request, Response, Router

BUILD_ID = re.compile(r"^[0-9a-f]{32}$")
BUILD_JSON = re.compile(r"^/builds/([0-9a-f]{32})\.json$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_DOWNLOADS = 8   # logs sent piece by piece at once (each holds an HTTP thread)


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (a ``q=0``, or a quality that is
    no number, refuses it)."""
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "x-gzip", "*"):
            q = re.search(r"q=([0-9.]+)", params)
            try:
                return not (q and float(q.group(1)) == 0)
            except ValueError:   # "q=1.2.3": no quality at all, so no gzip
                return False
    return False


def parse_range(header: str, length: int) -> tuple[int, int] | None | str:
    """``(start, end exclusive)`` of a one-range ``bytes=`` header on ``length`` bytes;
    None when the header is absent or to be ignored; ``"unsatisfiable"``."""
    match = RANGE.match(header.strip().replace(" ", ""))
    if not match or match.groups() == ("", ""):
        return None
    first, last = (_number(g) for g in match.groups())
    if first is None:                     # the last n bytes
        n = last or 0
        return (max(0, length - n), length) if n and length else "unsatisfiable"
    start = first
    end = length if last is None else min(last + 1, length)
    if last is not None and last < start:
        return None                       # invalid: ignored, per RFC 9110
    return (start, end) if start < length else "unsatisfiable"


def _number(digits: str) -> int | None:
    """A range bound; past 18 digits (int() refuses past 4300) it is past any log."""
    return None if digits == "" else int(digits) if len(digits) <= 18 else 10 ** 18


def when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


class LogRoutes:
    """``/logs/<id>`` and ``/builds/<id>.json``; ``annotate`` marks expired logs."""

    def __init__(self, logs: LogStore, store: Store,
                 jobs: Callable[[], Mapping[str, Any]] = dict, web_url: str = ""):
        self.logs = logs
        self.store = store
        self.jobs = jobs        # the running layout's job configs, by name
        self.web_url = web_url.rstrip("/")
        self._downloads = threading.BoundedSemaphore(MAX_DOWNLOADS)

    def register(self, router: Router) -> None:
        router.add("GET", "/logs/", self.log)
        router.add("GET", "/builds/", self.build)

    def log(self, request: Request) -> Response:
        build_id = request.path.rsplit("/", 1)[-1]
        if not BUILD_ID.match(build_id):
            return Response.error(404, "no such build")
        state = self.logs.state(build_id)
        if state is None:
            expired = self.store.logs_expired([build_id]).get(build_id)
            if expired is not None:
                return Response.error(410, f"the log of build {build_id} expired: retention "
                                           f"removed it on {when(expired['at'])} "
                                           f"({expired['reason']})")
            if self.store.build(build_id) is None:
                return Response.error(404, "no such build")
            state = RUNNING   # no output yet
        headers = {"Content-Type": "text/plain; charset=utf-8", "Accept-Ranges": "bytes",
                   "X-Log-State": state, "Vary": "Accept-Encoding"}
        length = self.logs.size(build_id) or 0
        if request.header("range"):
            wanted = parse_range(request.header("range"), length)
            if wanted == "unsatisfiable":
                return Response(416, b"", {**headers, "Content-Range": f"bytes */{length}"})
            if isinstance(wanted, tuple):
                start, end = wanted
                if end - start > PIECE:   # a big range is sent piece by piece, never whole
                    return self._big(206, lambda: self.logs.read_pieces(build_id, start, end), {
                        **headers, "Content-Range": f"bytes {start}-{end - 1}/{length}"})
                body = self.logs.read(build_id, start, end) or b""
                return Response(206, body, {**headers, "Content-Range":
                                            f"bytes {start}-{start + len(body) - 1}/{length}"})
        if state == FINISHED and accepts_gzip(request.header("accept-encoding")):
            packed = self.logs.packed_pieces(build_id)
            if packed is not None:
                gzipped = {**headers, "Content-Encoding": "gzip"}
                first = next(packed, b"")
                if len(first) < PIECE:   # all of it: sent in one go, with its length
                    packed.close()
                    return Response(200, first, gzipped)
                return self._big(200, lambda: itertools.chain([first], packed), gzipped)
        if length > PIECE:
            return self._big(200, lambda: self.logs.read_pieces(build_id, 0, length), headers)
        return Response(200, self.logs.read(build_id) or b"", headers)

    def _big(self, status: int, pieces: Callable[[], Iterable[bytes]],
             headers: dict[str, str]) -> Response:
        """A body sent piece by piece holds an HTTP thread while the client reads: at most
        ``MAX_DOWNLOADS`` at once (beside the live logs' 16, cheroot's 32 threads keep
        room for webhooks and the status), 503 beyond."""
        if not self._downloads.acquire(blocking=False):
            return Response.error(503, f"{MAX_DOWNLOADS} big logs are being sent already; "
                                       f"try again, or ask for at most 1 MiB at a time (Range)")
        return Response(status, _Held(pieces(), self._downloads.release), headers)

    def build(self, request: Request) -> Response:
        match = BUILD_JSON.match(request.path)
        row = self.store.build(match.group(1)) if match else None
        if row is None:
            return Response.error(404, "no such build (GET /builds/<build-id>.json)")
        build_id = row["id"]
        data: dict[str, Any] = {**row, "log": self.log_state(build_id)}
        job = self.jobs().get(row["job"])
        if job is not None:
            data["job_config"] = {"kind": job.kind, "run": job.run, "function": job.function}
        params = self.store.params(build_id)
        if params is not None:
            data["replay"] = self.replay_command(build_id)
            data.update(function=params["function"], secrets=params["secrets"],
                        parameters={k: v for k, v in params["parameters"].items()
                                    if not is_secret(k)})
        return Response.json(data)

    def log_state(self, build_id: str) -> dict[str, Any]:
        expired = self.store.logs_expired([build_id]).get(build_id)
        if expired is not None and self.logs.state(build_id) is None:
            return {"state": "expired", "expired_at": expired["at"],
                    "reason": expired["reason"]}
        return {"state": self.logs.state(build_id) or "none",
                "bytes": self.logs.size(build_id) or 0}

    def replay_command(self, build_id: str) -> str:
        """The command that runs ``build_id`` again (``commands/replay.py``)."""
        return f"ccci-gate replay {build_id}" + (f" --url {self.web_url}" if self.web_url else "")

    def annotate(self, summary: dict[str, Any]) -> dict[str, Any]:
        """An item's summary with ``log_expired`` on each job whose log expired."""
        ids = [j["id"] for j in summary.get("jobs", ()) if j.get("id")]
        expired = self.store.logs_expired(ids) if ids else {}
        if not expired:
            return summary
        jobs = [{**j, "log_expired": expired[j["id"]]} if j.get("id") in expired else j
                for j in summary["jobs"]]
        return {**summary, "jobs": jobs}


class _Held:
    """A response body that gives its slot back (``release``) once, when the listener
    closes it: sent whole, or the client gone (``web/server.py`` closes every body)."""

    def __init__(self, pieces: Iterable[bytes], release: Callable[[], None]):
        self.pieces = pieces
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)

    def close(self) -> None:
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()
        if self._release is not None:
            self._release, release = None, self._release
            release()
