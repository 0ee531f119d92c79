"""The gatekeeper's side of autohold: requests, the parameters a matching build gets,
held apps handed over with results, releases and the periodic check.

- ``Autohold.parameters`` is a parameter source of ``handoff.HandoffDispatcher`` (on
  the scheduler thread, from memory: ``HoldStore.match``): a build of a job an active
  request names gets ``CCCI_AUTOHOLD=<request id>``, ``CCCI_AUTOHOLD_FOR=<seconds>``
  and ``CCCI_AUTOHOLD_URL`` (``GET /autohold/held/<build id>``, the hold's state, which
  the worker host's janitor asks).
- ``Autohold.take`` (an HTTP thread: the result hand-over) records the app a worker
  kept; the first holds up to ``count`` count against the request, so a request whose
  count is spent stops matching. A surplus hold (two builds failing at once) is
  recorded released and removed like a released one.
- ``Autohold.release`` releases a request and its held apps, then runs the janitor on
  this host at once; other worker hosts remove theirs at their next janitor pass
  (``CCCI_JANITOR_INTERVAL``), when they ask the state of their holds.
- Every ``CCCI_JANITOR_INTERVAL`` seconds (``swarm.holds.Periodic``) held apps past
  their expiry are marked expired and this host's janitor looks at its held apps.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from ..core.actions import StartBuild
from ..core.layout import Layout
from ..swarm import holds
from ..worker.daemon import SWARM_KINDS
from .spec import HoldRequest, request_fields
from .store import HoldStore, held_state

log = logging.getLogger("ccci_gate.autohold")

LocalJanitor = Callable[[holds.Ask], list]   # ask → stacks removed on this host


def local_janitor(ask: holds.Ask) -> list:
    """The janitor on this host, held apps only (the worker's own pass does the rest)."""
    from ..swarm.host import Host
    from ..swarm.port import SwarmPort
    host = Host.from_env()
    if not any("hold" in lease for lease in host.leases()):
        return []
    return host.janitor(SwarmPort(), log=lambda text: log.info(text.rstrip()), ask=ask,
                        held_only=True)


class Autohold:
    """Hold requests and held apps of one gatekeeper (``store``), ``web_url`` where
    workers ask about their holds, ``layout()`` the running layout."""

    def __init__(self, store: HoldStore, web_url: str, layout: Callable[[], Layout],
                 janitor: LocalJanitor = local_janitor, every: float | None = None):
        self.store = store
        self.web_url = web_url.rstrip("/")
        self.layout = layout
        self.janitor = janitor
        self.periodic = holds.Periodic("autohold-check", self.check, every)

    def start(self) -> None:
        self.periodic.start()

    def stop(self) -> None:
        self.periodic.stop()
        self.store.close()

    # --- requests ------------------------------------------------------------------------

    def add(self, body: Mapping[str, Any]) -> HoldRequest:
        """A new request; ``ValueError`` saying what is wrong with it."""
        fields = request_fields(body)
        layout = self.layout()
        if fields["project"] not in layout.projects:
            raise ValueError(f"project {fields['project']!r} is not in the layout")
        job = layout.jobs.get(fields["job"])
        if job is None:
            raise ValueError(f"no job {fields['job']!r} in the layout")
        if job.kind not in SWARM_KINDS:
            raise ValueError(f"job {job.name!r} is a {job.kind} job: only the jobs that deploy "
                             f"an app ({', '.join(SWARM_KINDS)}) can keep one")
        request = self.store.add(fields)
        log.info("autohold %d: the next %d failing %s of %s%s, each kept %ss (%s)",
                 request.id, request.count, request.job, request.project,
                 f" change {request.change}" if request.change else "", request.for_seconds,
                 request.reason or "no reason given")
        return request

    def release(self, request_id: int) -> list[dict[str, Any]] | None:
        """Release a request and its held apps (None: no such request); this host's
        janitor runs at once."""
        released = self.store.release(request_id)
        if released is not None:
            log.info("autohold %d released (%d held app(s))", request_id, len(released))
            self.periodic.poke()
        return released

    def listing(self) -> dict[str, Any]:
        return {"requests": [r.to_dict() for r in self.store.requests()],
                "held": [reach(row) for row in self.store.held_apps()]}

    # --- builds ----------------------------------------------------------------------------

    def parameters(self, action: StartBuild) -> Mapping[str, str]:
        """The autohold parameters of a build an active request matches (else none)."""
        params = action.parameters
        request = self.store.match(params.get("ZUUL_PROJECT", ""), params.get("JOB_NAME", ""),
                                   params.get("ZUUL_CHANGE"))
        if request is None:
            return {}
        return {holds.REQUEST: str(request.id), holds.FOR: str(request.for_seconds),
                holds.URL: f"{self.web_url}/autohold/held/{action.build_id}"}

    def take(self, build_id: str, body: Mapping[str, Any]) -> None:
        """What a result hand-over carries: the app its worker kept, if any."""
        report = body.get("autohold")
        if not isinstance(report, dict):
            return
        try:
            int(report["request"]), float(report["until"]), str(report["stack"])
        except (KeyError, TypeError, ValueError):
            log.warning("build %s handed over a malformed hold: %r", build_id, report)
            return
        row, counted = self.store.record_held(build_id, report,
                                              f"{self.web_url}/logs/{build_id}")
        if counted:
            log.info("autohold %s: %s held on %s for build %s", row["request_id"], row["stack"],
                     row["host"] or row["worker"], build_id)
        else:
            log.info("autohold %s: %s of build %s is not kept: %s", row["request_id"],
                     row["stack"], build_id, row["why"])
            self.periodic.poke()

    def state(self, build_id: str) -> dict[str, Any] | None:
        row = self.store.held(build_id)
        return None if row is None else {"build": build_id, "state": held_state(row),
                                         "until": row["until"], "stack": row["stack"]}

    def ask(self, hold: Mapping[str, Any]) -> str | None:
        """A held lease on this host, as the gatekeeper's own janitor asks about it."""
        found = self.state(str(hold.get("build") or ""))
        return None if found is None else found["state"]

    def check(self) -> list:
        """The periodic check: expire held apps, then this host's janitor."""
        for row in self.store.expire():
            log.info("autohold %s: %s of build %s expired", row["request_id"], row["stack"],
                     row["build_id"])
        return self.janitor(self.ask)


def reach(row: Mapping[str, Any]) -> dict[str, Any]:
    """A held app with how to reach it."""
    stack = row["stack"]
    return {**row, "services": f"docker service ls --filter "
                               f"label=com.docker.stack.namespace={stack}"}
