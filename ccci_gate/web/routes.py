"""A tiny routing contract for the gatekeeper's HTTP listener.

Every HTTP-facing part (status, logs, admin API, git serving, the Gitea webhook)
registers handlers on one :class:`Router`; the server (``web/server.py``) owns the
socket and threads. A handler gets a :class:`Request` and returns a :class:`Response`;
it must not raise for bad input (return a 4xx with a reason instead).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping


@dataclass(frozen=True)
class Request:
    method: str
    path: str                      # without the query string
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]     # lower-cased names
    body: bytes
    client: str = ""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> "Response":
        return cls(status, json.dumps(data, indent=1, sort_keys=True).encode(),
                   {"Content-Type": "application/json"})

    @classmethod
    def text(cls, text: str, status: int = 200) -> "Response":
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    @classmethod
    def error(cls, status: int, reason: str) -> "Response":
        return cls.json({"error": reason}, status)


Handler = Callable[[Request], Response]


class Router:
    """Maps (method, path prefix) to handlers; the longest matching prefix wins. A prefix
    ending in ``/`` matches the paths under it, except ``/``, which matches only itself
    (the status page; an unknown path stays a 404)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, str, Handler]] = []

    def add(self, method: str, prefix: str, handler: Handler) -> None:
        self._routes.append((method.upper(), prefix, handler))
        self._routes.sort(key=lambda r: len(r[1]), reverse=True)

    def dispatch(self, request: Request) -> Response:
        allowed = False
        for method, prefix, handler in self._routes:
            if request.path == prefix or (prefix.endswith("/") and prefix != "/"
                                          and request.path.startswith(prefix)):
                if method == request.method:
                    return handler(request)
                allowed = True
        if allowed:
            return Response.error(405, f"method {request.method} not allowed on {request.path}")
        return Response.error(404, f"no such path: {request.path}")
