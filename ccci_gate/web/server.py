"""The HTTP listener: cheroot (CherryPy's WSGI server, what Zuul's web tier runs on) in
front of one :class:`Router`.

Why cheroot and not ``http.server``: it sets ``TCP_NODELAY`` and writes a response in
one go, so a request on a kept-alive connection does not wait 40 ms for a delayed ACK
(``bench/web.py`` measures both); it reads chunked request bodies; idle kept-alive
connections wait in a selector instead of holding a thread; and it is maintained.

What the listener guarantees, whatever the handler (``tests/test_web_server.py``,
``tests/test_web_fuzz.py``):

- a body over ``max_body`` is answered 413 before a handler sees it; a chunked body is
  read like any other;
- a header value that is not ASCII is answered 400 (Gitea and our clients send ASCII;
  handlers may rely on it, e.g. for a constant-time signature compare);
- a handler that hits Python's recursion limit (JSON nested thousands deep) is answered
  400; any other exception is a 500 with the traceback in the log — and the server keeps
  serving either way;
- a request line with an HTTP version other than 1.x is a malformed request: 400 (cheroot,
  like ``http.server``, would say 505; no client of ours speaks anything but 1.x, and a 5xx
  would page an operator for a stranger's garbage);
- a body that is an iterable of bytes is streamed: each chunk reaches the client when it is
  yielded (cheroot buffers writes; we flush after each chunk, so a one-chunk body is still
  one write), and a client that goes away ends the iteration at the next write and closes
  the iterable (``close()``), freeing the thread (``tests/test_pages.py``).

``WebServer(...)`` binds at once (a busy port raises :class:`ListenerError`, one line);
``start()`` serves in a background thread; ``shutdown()`` stops.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from cheroot import errors, server as cheroot_server, wsgi

from .routes import Request, Response, Router

log = logging.getLogger("ccci_gate.web")

MAX_BODY = 10 * 1024 * 1024
THREADS = 32


class ListenerError(OSError):
    """The listener cannot bind its address (port busy, no permission, bad host)."""


class WebServer:
    """``WebServer(router, host, port)``; ``port=0`` picks a free port (see ``.url``)."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 8001,
                 max_body: int = MAX_BODY, threads: int = THREADS):
        self.router = router
        self.max_body = max_body
        self.host = host
        self._server = wsgi.Server((host, port), self.wsgi_app, numthreads=threads,
                                   server_name="ccci-gate")
        self._server.max_request_body_size = max_body
        self._server.ConnectionClass = _Connection
        self._server.gateway = _FlushingGateway
        self._server.error_log = _cheroot_log   # into our log, not raw onto stderr
        self._server.shutdown_timeout = 1
        self._server.expiration_interval = 0.1   # the selector's tick: stop() takes one tick
        try:
            _in_daemon_thread(self._server.prepare)   # binds; its threads inherit daemon=True
        except OSError as exc:
            raise ListenerError(f"HTTP listener on {host}:{port}: {_reason(exc)}") from None
        self.port: int = self._server.bind_addr[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve, name="web", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- WSGI -----------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = self._request(environ)
        head = environ["REQUEST_METHOD"] == "HEAD"
        if isinstance(request, Response):
            response = request
        else:
            if head:   # a HEAD is the GET without its body
                request = dataclasses.replace(request, method="GET")
            response = self._dispatch(request)
        body = response.body
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        if isinstance(body, (bytes, bytearray)):
            headers.append(("Content-Length", str(len(body))))
            body = [bytes(body)]
        start_response(_status_line(response.status), headers)
        if head:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            return []
        return body

    def _request(self, environ: dict[str, Any]) -> Request | Response:
        headers: dict[str, str] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").lower()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                name = key.replace("_", "-").lower()
            else:
                continue
            if not value.isascii():
                refusal = Response.error(400, f"header {name} is not ASCII")
                refusal.headers["Connection"] = "close"   # its body, if any, is unread
                return refusal
            headers[name] = value
        try:
            body = _read_body(environ["wsgi.input"], self.max_body)
        except (_TooLarge, OSError, ValueError, errors.MaxSizeExceeded) as exc:
            # the rest of the body is unread: answer, then close the connection
            if isinstance(exc, (_TooLarge, errors.MaxSizeExceeded)) or "too large" in str(exc).lower():
                refusal = Response.error(413, f"body over {self.max_body} bytes")
            else:
                refusal = Response.error(400, f"unreadable body: {exc}")
            refusal.headers["Connection"] = "close"
            return refusal
        # the path as sent (not percent-decoded), like the handlers have always seen it
        parts = urlsplit(environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/"))
        return Request(environ["REQUEST_METHOD"], parts.path or "/", parse_qs(parts.query),
                       headers, body, environ.get("REMOTE_ADDR", ""))

    def _dispatch(self, request: Request) -> Response:
        try:
            return self.router.dispatch(request)
        except RecursionError:
            log.warning("%s %s from %s: input nested too deeply, refused", request.method,
                        request.path, request.client)
            return Response.error(400, "input nested too deeply")
        except Exception:  # noqa: BLE001 - never let a handler take the server down
            log.exception("%s %s failed", request.method, request.path)
            return Response.error(500, "internal error")


class _Request(cheroot_server.HTTPRequest):
    def simple_response(self, status: Any, msg: str = "") -> None:
        if str(status).startswith("505"):
            status, msg = "400 Bad Request", "Malformed Request-Line: unsupported HTTP version"
        super().simple_response(status, msg)


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request


class _FlushingGateway(wsgi.Gateway_10):
    """Sends each chunk of a body as it is yielded (server-sent events, live logs)."""

    def write(self, chunk: bytes) -> None:
        super().write(chunk)
        self.req.conn.wfile.flush()


class _TooLarge(Exception):
    pass


def _read_body(stream: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _TooLarge()


def _cheroot_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's own messages (a client gone mid-request, a TLS error) at debug level unless
    they are errors: they are about one connection, and the server carries on."""
    log.log(level if level >= logging.ERROR else logging.DEBUG, "listener: %s", msg,
            exc_info=traceback)


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _reason(exc: OSError) -> str:
    """``Address already in use`` out of cheroot's ``No socket could be created -- ((...): [Errno 98] ...)``."""
    text = exc.strerror or str(exc)
    found = re.findall(r"\[Errno \d+\] ([^)]*)", text)
    return found[-1] if found else text


def _in_daemon_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a daemon thread and wait; threads it starts are daemons too, so a
    gatekeeper that dies without ``shutdown()`` does not hang the interpreter's exit."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=run, name="web-prepare", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
