"""Other threads see the scheduler's state only through the snapshots it publishes: the
HTTP API answers status, item and admin requests without touching the engine."""
from __future__ import annotations

import json
import threading

from ccci_gate.core.engine import Engine
from ccci_gate.web.api import GatekeeperAPI
from ccci_gate.web.routes import Request, Router

from test_scheduler_store import CHANGE, make

TOKEN = "t0ken"


class Watched:
    """Wraps the engine; records every thread that reads it."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.readers: set[str] = set()

    def __getattr__(self, name: str):
        self.readers.add(threading.current_thread().name)
        return getattr(self._engine, name)


def request(method: str, path: str, body: dict | None = None) -> Request:
    return Request(method, path, {}, {"authorization": f"Bearer {TOKEN}"},
                   json.dumps(body).encode() if body is not None else b"")


def test_the_api_reads_snapshots_and_only_the_scheduler_reads_the_engine(tmp_path):
    sched, store, dispatcher, memo = make(tmp_path)
    watched = Watched(sched.engine)
    sched.engine = watched  # type: ignore[assignment]
    router = Router()
    GatekeeperAPI(sched, store, tmp_path, TOKEN, reconfigure=lambda: [], pool=lambda: {},
                  change_ref=lambda project, n: f"refs/pull/{n}/head").register(router)
    sched.start()
    answers = []

    def client() -> None:
        answers.append(router.dispatch(request("POST", "/admin/enqueue", {
            "pipeline": "check", "project": CHANGE.project, "change": CHANGE.number,
            "patchset": CHANGE.patchset})).status)
        sched.sync()
        status = json.loads(router.dispatch(request("GET", "/status.json")).body)
        [item] = status["pipelines"][0]["queues"][0]["items"]
        answers.append(item["change"]["number"])
        page = router.dispatch(request("GET", f"/items/{item['item_id']}"))
        answers.append(json.loads(page.body)["item_id"] == item["item_id"])
        answers.append(router.dispatch(request("POST", "/admin/enqueue", {
            "pipeline": "nope", "project": CHANGE.project})).status)

    try:
        thread = threading.Thread(target=client, name="http-client")
        thread.start()
        thread.join(20)
    finally:
        sched.stop()
    assert answers == [202, CHANGE.number, True, 400]
    assert watched.readers == {"scheduler"}, watched.readers
