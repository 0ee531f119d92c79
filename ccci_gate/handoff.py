"""Build results handed to the gatekeeper over HTTP, by build id.

A Gearman result goes to the client that submitted the job. When that client is gone —
the gatekeeper restarting — gearmand drops the WORK_COMPLETE of a build that finished
meanwhile, and the build would have to run again. So every build also carries, in its
parameters, where to hand its result (``CCCI_RESULT_URL``, ``/builds/<id>/result`` on
the gatekeeper's HTTP listener) and a token for that one build (``CCCI_RESULT_TOKEN``,
an HMAC of the build id; the worker redacts it like every ``*TOKEN*`` parameter). The
worker posts its verdict there too (``worker/handoff.py``), retrying while the
gatekeeper is down. The gatekeeper turns it into the same ``BuildCompleted`` a
WORK_COMPLETE gives; whichever comes second finds the build done and is ignored.

A restarted gatekeeper waits ``HANDOFF_GRACE`` seconds before it resubmits the builds
of its previous incarnation (``Scheduler.resume``), so results handed over meanwhile
complete their builds instead.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from typing import Any, Callable

from .core.actions import StartBuild
from .core.events import BuildCompleted
from .core.model import Result
from .web.routes import Request, Response, Router

HANDOFF_GRACE = 3.0      # seconds: workers retry every second (worker/handoff.py)
PATH = re.compile(r"^/builds/([0-9a-f]{32})/result$")


class ResultHandoff:
    """Signs builds' hand-over parameters and takes results posted back."""

    def __init__(self, key: str, web_url: str, emit: Callable[[Any], None]):
        self.key = key.encode()
        self.web_url = web_url.rstrip("/")
        self.emit = emit

    def token(self, build_id: str) -> str:
        return hmac.new(self.key, b"result:" + build_id.encode(), hashlib.sha256).hexdigest()

    def parameters(self, action: StartBuild) -> StartBuild:
        """``action`` with where and how its worker hands the result over."""
        return dataclasses.replace(action, parameters={
            **action.parameters,
            "CCCI_RESULT_URL": f"{self.web_url}/builds/{action.build_id}/result",
            "CCCI_RESULT_TOKEN": self.token(action.build_id)})

    def register(self, router: Router) -> None:
        router.add("POST", "/builds/", self.receive)

    def receive(self, request: Request) -> Response:
        match = PATH.match(request.path)
        if match is None:
            return Response.error(404, "no such build")
        build_id = match.group(1)
        given = request.header("Authorization").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given, self.token(build_id)):
            return Response.error(403, "not this build's token")
        try:
            result = Result(request.json().get("result"))
        except (ValueError, AttributeError, UnicodeDecodeError):
            return Response.error(400, "expected {\"result\": <a build result>}")
        self.emit(BuildCompleted(build_id, result.value, message="result handed over HTTP"))
        return Response.json({"accepted": build_id}, 202)


class HandoffDispatcher:
    """The ``Dispatcher`` port, adding each build's hand-over parameters."""

    def __init__(self, inner: Any, handoff: ResultHandoff):
        self.inner = inner
        self.handoff = handoff

    def start(self, action: StartBuild) -> None:
        self.inner.start(self.handoff.parameters(action))

    def cancel(self, action: Any) -> None:
        self.inner.cancel(action)

    def pool(self, *args: Any, **kw: Any) -> Any:
        return self.inner.pool(*args, **kw)
