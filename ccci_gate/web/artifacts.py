"""The artifact store: files a build publishes for the builds after it.

``PUT /artifacts/<buildset>/<name>`` stores a file (once: an artifact never changes
after it was published), ``GET`` serves it. A buildset id is a random 32-hex-digit
value that only the builds of that buildset are told (``CCCI_ARTIFACTS``); names are
plain file names. Files live under ``<state>/artifacts/<buildset>/``.
"""
from __future__ import annotations

import re
from pathlib import Path

from .routes import Request, Response, Router

ID = re.compile(r"^[0-9a-f]{32}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def register(self, router: Router) -> None:
        router.add("PUT", "/artifacts/", self.put)
        router.add("GET", "/artifacts/", self.get)

    def _path(self, request: Request) -> Path | None:
        parts = request.path[len("/artifacts/"):].split("/")
        if len(parts) != 2 or not ID.match(parts[0]) or not NAME.match(parts[1]):
            return None
        return self.root / parts[0] / parts[1]

    def put(self, request: Request) -> Response:
        path = self._path(request)
        if path is None:
            return Response.error(400, "expected /artifacts/<buildset id>/<file name>")
        if path.exists():
            return Response.error(409, f"{path.name} was already published for this buildset")
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(request.body)
        tmp.replace(path)
        return Response.json({"stored": path.name, "bytes": len(request.body)}, 201)

    def get(self, request: Request) -> Response:
        path = self._path(request)
        if path is None or not path.is_file():
            return Response.error(404, "no such artifact")
        return Response(200, path.read_bytes(), {"Content-Type": "application/octet-stream"})
