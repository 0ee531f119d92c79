"""The autohold's HTTP routes (on the gatekeeper's listener, HTTP threads; no handler
waits on the scheduler).

- ``POST /admin/autohold`` ``{project, job, change?, count?, for?, reason?}``: a new
  request (``for``: seconds or ``4h``/``30m``/``2d``); 201, or 400 saying why not.
- ``POST /admin/autohold/release`` ``{id}``: release a request and its held apps; 404
  for an unknown id.
- ``GET /autohold.json``: requests and held apps, with how to reach each.
- ``GET /autohold/held/<build id>``: ``{state: held|released|expired, until}``, what a
  worker host's janitor asks (open, like the status).
"""
from __future__ import annotations

import re
from typing import Any, Callable

from ..web.routes import Request, Response, Router
from .service import Autohold

BUILD_ID = re.compile(r"^/autohold/held/([0-9a-f]{32})$")
Guard = Callable[[Callable[[Request, dict[str, Any]], Response]], Callable[[Request], Response]]


def register(router: Router, autohold: Autohold, admin: Guard) -> None:
    """``admin``: the admin API's token check (``GatekeeperAPI.admin``)."""

    def add(request: Request, body: dict[str, Any]) -> Response:
        try:
            hold = autohold.add(body)
        except ValueError as exc:
            return Response.error(400, str(exc))
        return Response.json(hold.to_dict(), 201)

    def release(request: Request, body: dict[str, Any]) -> Response:
        value = body.get("id")
        if isinstance(value, bool) or not str(value or "").strip().isdigit():
            return Response.error(400, f"'id' must be a request number, not {value!r}")
        released = autohold.release(int(str(value).strip()))
        if released is None:
            return Response.error(404, f"no autohold request {value}")
        return Response.json({"released": int(str(value).strip()),
                              "apps": [row["stack"] for row in released]})

    def listing(request: Request) -> Response:
        return Response.json(autohold.listing())

    def state(request: Request) -> Response:
        match = BUILD_ID.match(request.path)
        found = autohold.state(match.group(1)) if match else None
        if found is None:
            return Response.error(404, "no app held for this build")
        return Response.json(found)

    router.add("POST", "/admin/autohold", admin(add))
    router.add("POST", "/admin/autohold/release", admin(release))
    router.add("GET", "/autohold.json", listing)
    router.add("GET", "/autohold/held/", state)
