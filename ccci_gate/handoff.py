"""Build results handed to the gatekeeper over HTTP, by build id.

A Gearman result goes to the client that submitted the job. When that client is gone —
the gatekeeper restarting — gearmand drops the WORK_COMPLETE of a build that finished
meanwhile, and the build would have to run again. So every build also carries, in its
parameters, where to hand its result (``CCCI_RESULT_URL``, ``/builds/<id>/result`` on
the gatekeeper's HTTP listener) and a token for that one build (``CCCI_RESULT_TOKEN``,
a build credential of the build id, ``credentials.py``; the worker redacts it like every
secret parameter). The
worker posts its verdict there too (``worker/handoff.py``), retrying while the
gatekeeper is down. The gatekeeper turns it into the same ``BuildCompleted`` a
WORK_COMPLETE gives; whichever comes second finds the build done and is ignored.

A restarted gatekeeper waits ``HANDOFF_GRACE`` seconds before it resubmits the builds
of its previous incarnation (``Scheduler.resume``), so results handed over meanwhile
complete their builds instead.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Callable, Mapping, Sequence

from .core.actions import StartBuild
from .core.events import BuildCompleted
from .core.model import Result
from .credentials import Signer, bearer
from .web.routes import Request, Response, Router

log = logging.getLogger("ccci_gate.handoff")

MESSAGE_MAX = 1000       # characters of a build's message kept
HANDOFF_GRACE = 3.0      # seconds: workers retry every second (worker/handoff.py)
PATH = re.compile(r"^/builds/([0-9a-f]{32})/result$")


class ResultHandoff:
    """Signs builds' hand-over parameters and takes results posted back."""

    def __init__(self, signer: Signer, web_url: str, emit: Callable[[Any], None],
                 on_extra: Callable[[str, dict], None] | None = None):
        self.signer = signer
        self.web_url = web_url.rstrip("/")
        self.emit = emit
        self.on_extra = on_extra   # what a result carries besides it (the autohold's app)

    def token(self, build_id: str) -> str:
        return self.signer.sign("result", build_id)

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
        if not self.signer.check("result", build_id, bearer(request.header("Authorization"))):
            return Response.error(403, "not this build's token")
        try:
            body = request.json()
            result = Result(body.get("result"))
            message = body.get("message") or "result handed over HTTP"
        except (ValueError, AttributeError, UnicodeDecodeError):
            return Response.error(400, "expected {\"result\": <a build result>}")
        if not isinstance(message, str):
            return Response.error(400, "\"message\" must be a string")
        if self.on_extra is not None and set(body) - {"result", "message"}:
            try:
                self.on_extra(build_id, body)
            except Exception:   # noqa: BLE001 - never lose the result for its extras
                log.exception("build %s: what came with its result was not taken", build_id)
        self.emit(BuildCompleted(build_id, result.value, message=message[:MESSAGE_MAX]))
        return Response.json({"accepted": build_id}, 202)


ParameterSource = Callable[[StartBuild], Mapping[str, str]]


class HandoffDispatcher:
    """The ``Dispatcher`` port, adding to each build's parameters what only the
    gatekeeper's I/O side knows: the result hand-over, and what each of ``more`` gives
    (the artifact write token, ``web/artifacts.py``; the job's definition,
    ``jobdefs.py``). Added here, after the engine, they are in no record, status or
    item page: only the build and its worker see them."""

    def __init__(self, inner: Any, handoff: ResultHandoff, more: Sequence[ParameterSource] = ()):
        self.inner = inner
        self.handoff = handoff
        self.more = tuple(more)

    def start(self, action: StartBuild) -> None:
        action = self.handoff.parameters(action)
        extra: dict[str, str] = {}
        for source in self.more:
            extra.update(source(action))
        if extra:
            action = dataclasses.replace(action, parameters={**action.parameters, **extra})
        self.inner.start(action)

    def cancel(self, action: Any) -> None:
        self.inner.cancel(action)

    def pool(self, *args: Any, **kw: Any) -> Any:
        return self.inner.pool(*args, **kw)
