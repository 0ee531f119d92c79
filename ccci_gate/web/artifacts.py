"""The artifact store: files a build publishes for the builds after it.

``PUT /artifacts/<buildset>/<name>`` stores a file (once: an artifact never changes
after it was published), ``GET`` serves it to anyone who has the URL, and
``GET /artifacts/<buildset>/`` lists its names (JSON ``{"artifacts": [...]}``, empty
when none was published). Names are plain file names; files live under
``<state>/artifacts/<buildset>/``.

Writes are authorised: each build gets, beside the store's URL (``CCCI_ARTIFACTS``), its
buildset's **write token** (``CCCI_ARTIFACTS_TOKEN``, the ``artifacts`` credential of
the buildset id, ``credentials.py``: a secret parameter, never logged), and a PUT must
carry ``Authorization: Bearer <token>``: without it 401, with a token that is not this
buildset's (another buildset's, a result token, garbage) 403. No answer echoes a token.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Mapping

from ..core.actions import StartBuild
from ..credentials import Signer, bearer
from .routes import Request, Response, Router

ID = re.compile(r"^[0-9a-f]{32}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PURPOSE = "artifacts"   # the credential that allows writing a buildset's artifacts
TOKEN = "CCCI_ARTIFACTS_TOKEN"


class ArtifactStore:
    def __init__(self, root: Path, signer: Signer):
        self.root = root
        self.signer = signer
        root.mkdir(parents=True, exist_ok=True)

    def token(self, buildset_id: str) -> str:
        return self.signer.sign(PURPOSE, buildset_id)

    def parameters(self, action: StartBuild) -> Mapping[str, str]:
        """The build's write token (for ``HandoffDispatcher``): its buildset's."""
        buildset = str(action.parameters.get("ZUUL_BUILDSET", ""))
        return {TOKEN: self.token(buildset)} if ID.match(buildset) else {}

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
        given = bearer(request.header("Authorization"))
        if given is None:
            denied = Response.error(401, "publishing needs Authorization: Bearer <the "
                                         f"buildset's {TOKEN}>")
            denied.headers["WWW-Authenticate"] = 'Bearer realm="artifacts"'
            return denied
        if not self.signer.check(PURPOSE, path.parent.name, given):
            return Response.error(403, "not this buildset's artifact token")
        if path.exists():
            return Response.error(409, f"{path.name} was already published for this buildset")
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")   # one per PUT
        try:
            tmp.write_bytes(request.body)
            os.link(tmp, path)   # never replaces: of two PUTs at once, one publishes
        except FileExistsError:
            return Response.error(409, f"{path.name} was already published for this buildset")
        finally:
            tmp.unlink(missing_ok=True)
        return Response.json({"stored": path.name, "bytes": len(request.body)}, 201)

    def get(self, request: Request) -> Response:
        buildset = request.path[len("/artifacts/"):]
        if buildset.endswith("/") and ID.match(buildset[:-1]):
            folder = self.root / buildset[:-1]
            names = sorted(p.name for p in folder.iterdir() if NAME.match(p.name)) \
                if folder.is_dir() else []
            return Response.json({"artifacts": names})
        path = self._path(request)
        if path is None or not path.is_file():
            return Response.error(404, "no such artifact")
        return Response(200, path.read_bytes(), {"Content-Type": "application/octet-stream"})
