"""The HTTP listener: a threading server that hands every request to a :class:`Router`.

Request bodies are bounded (413 past the limit); a handler that raises gets a 500 and
the server keeps serving.
"""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .routes import Request, Response, Router

log = logging.getLogger("ccci_gate.web")

MAX_BODY = 10 * 1024 * 1024


class WebServer:
    """``WebServer(router, host, port)``; ``port=0`` picks a free port (see ``.url``)."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 8001,
                 max_body: int = MAX_BODY):
        self.router = router
        self.max_body = max_body
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="web", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "ccci-gate"

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("%s %s", self.address_string(), fmt % args)

            def _serve(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    return self._send(Response.error(400, "bad Content-Length"))
                if length > server.max_body:
                    self.close_connection = True
                    return self._send(Response.error(413, f"body over {server.max_body} bytes"))
                body = self.rfile.read(length) if length > 0 else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query),
                                  {k.lower(): v for k, v in self.headers.items()}, body,
                                  self.client_address[0])
                try:
                    response = server.router.dispatch(request)
                except Exception:  # noqa: BLE001 - never let a handler take the server down
                    log.exception("%s %s failed", self.command, parts.path)
                    response = Response.error(500, "internal error")
                self._send(response)

            def _send(self, response: Response) -> None:
                body = response.body if isinstance(response.body, bytes) else b"".join(response.body)
                self.send_response(response.status)
                for name, value in response.headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        return Handler
