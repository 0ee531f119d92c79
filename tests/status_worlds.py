"""Status documents of gate queues of any length, made by the real engine (stepped by
the gate harness), for the status page's render figures (``bench/status_page.py``) and
its browser test: what ``/status.json`` would say of such a queue."""
from __future__ import annotations

from typing import Any

from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import WindowConfig
from ccci_gate.web.pages import static_routes
from ccci_gate.web.routes import Response, Router
from ccci_gate.web.server import WebServer
from gate_harness import Gate, gate_layout

NOW = 1_800_000_000.0
ESTIMATE = 120.0


def gate_status(items: int, batch: bool = False, window: int = 20) -> dict[str, Any]:
    """A gate of ``items`` changes (``window``: Zuul's default) whose builds started a
    few seconds apart; then #2 failed (a dependent gate: the items behind it are retested
    without it), or the first batch's probe failed (batching: that batch is set aside)."""
    clock = [NOW - 600]
    layout = gate_layout(window=WindowConfig(start=window, floor=3), batch=batch)
    gate = Gate(layout)
    gate.engine = Engine(layout, clock=lambda: clock[0])
    gate.send(ev.PauseRequest("gate", True))
    gate.enqueue(*range(1, items + 1))
    gate.send(ev.PauseRequest("gate", False))
    for build_id in list(gate.builds.values()):
        clock[0] += 0.5
        gate.send(ev.BuildStarted(build_id, "worker-1"))
    clock[0] = NOW - 60
    if batch:
        probe = next(iter(gate.builds))
        gate.finish(probe[0], probe[1], "FAILURE")
    else:
        gate.finish(1, "build")
        gate.finish(2, "build", "FAILURE")
    for build_id in list(gate.builds.values())[: items // 2]:
        gate.send(ev.BuildStarted(build_id, "worker-2"))
    clock[0] = NOW
    status = gate.engine.status()
    for pipeline in status["pipelines"]:
        for queue in pipeline["queues"]:
            for item in queue["items"]:
                for job in item["jobs"]:
                    started = job.get("started_at")
                    job["estimate"] = ESTIMATE
                    job["remaining"] = (max(0.0, ESTIMATE - (NOW - started))
                                        if started and not job["result"] else None)
    return {**status, "now": NOW, "recent": [],
            "pool": {"servers": ["127.0.0.1:4730"], "functions": {}, "workers": [], "held": 0}}


def serve(status: dict[str, Any]) -> WebServer:
    """The status page's files and ``status`` as ``/status.json`` on a free port."""
    router = Router()
    static_routes(router)
    router.add("GET", "/status.json", lambda request: Response.json(status))
    web = WebServer(router, "127.0.0.1", 0)
    web.start()
    return web
