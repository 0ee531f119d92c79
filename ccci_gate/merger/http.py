"""Serving the merger's repositories to workers, read-only, through ``git http-backend``.

Mounted at ``/git/``: a worker runs ``git fetch <ZUUL_URL>/<project> <ZUUL_REF>`` over
HTTP, so no filesystem is shared between hosts. Pushing (receive-pack) is refused.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

from ..web.routes import Request, Response

PREFIX = "/git"


def git_http_handler(root: Path, prefix: str = PREFIX) -> Callable[[Request], Response]:
    """A route handler running ``git http-backend`` as a CGI over ``root``."""
    root = Path(root).resolve()

    def handle(request: Request) -> Response:
        path = request.path[len(prefix):] if request.path.startswith(prefix) else request.path
        query = "&".join(f"{k}={v}" for k, values in request.query.items() for v in values)
        if "receive-pack" in path or "receive-pack" in query:
            return Response.error(403, "this repository is read-only")
        if ".." in path.split("/"):
            return Response.error(404, "no such repository")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": request.method,
            "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_TYPE": request.header("content-type"),
            "CONTENT_LENGTH": str(len(request.body)),
            "REMOTE_ADDR": request.client or "127.0.0.1",
            "HTTP_GIT_PROTOCOL": request.header("git-protocol"),
        }
        if request.header("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = request.header("content-encoding")
        try:
            proc = subprocess.run(["git", "http-backend"], input=request.body, env=env,
                                  capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            return Response.error(504, "git http-backend timed out")
        return _cgi_response(proc.stdout)

    return handle


def _cgi_response(raw: bytes) -> Response:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            try:
                status = int(value.strip().split()[0])
            except (ValueError, IndexError):
                status = 500
        elif name:
            headers[name.strip()] = value.strip()
    return Response(status, body, headers)
