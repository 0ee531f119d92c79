"""Held apps on a worker host (autohold, see ``ccci_gate/autohold``).

A build of a job an operator asked to hold carries ``CCCI_AUTOHOLD=<request id>``,
``CCCI_AUTOHOLD_FOR=<seconds>`` and ``CCCI_AUTOHOLD_URL`` (where the gatekeeper says
whether the hold still stands). When such a build ends in ``FAILURE`` or ``TIMED_OUT``
(never on success, never when stopped), the deploying kind keeps its app deployed and
:func:`hold_app` writes a **hold** onto the run's lease (``swarm.host``): request,
build, expiry (``until``, this host's clock), the URL. A held lease outlives the
worker's process: the janitor ignores its pid and instead reaps it once
:func:`why_release` says so — the hold expired, or the gatekeeper answers that it was
released. While the gatekeeper cannot be asked, the app is kept until its expiry.

The janitor runs when a worker starts, every ``CCCI_JANITOR_INTERVAL`` seconds
(default 60) in ``ccci-gate worker`` (:class:`Periodic`), on ``ccci-gate janitor``, and
on the gatekeeper's host after a release and every interval (``autohold.service``).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Mapping

import requests

log = logging.getLogger("ccci_gate.swarm.holds")

REQUEST, FOR, URL = "CCCI_AUTOHOLD", "CCCI_AUTOHOLD_FOR", "CCCI_AUTOHOLD_URL"
PARAMETERS = (REQUEST, FOR, URL)
HOLDABLE = ("FAILURE", "TIMED_OUT")
DEFAULT_INTERVAL = 60.0
Ask = Callable[[Mapping[str, Any]], "str | None"]   # a held lease → its state, or None


def wanted(parameters: Mapping[str, str], verdict: str | None, stopped: bool) -> bool:
    """Keep this run's app? Only a failing, unstopped build of a hold request."""
    return bool(parameters.get(REQUEST)) and verdict in HOLDABLE and not stopped


def hold_app(host: Any, port: Any, stack: str, domain: str, parameters: Mapping[str, str],
             say: Callable[[str], None], now: float | None = None) -> dict[str, Any]:
    """Turn the run's lease into a held one and say how to reach the app; returns the
    hold as the worker hands it over with the build's result."""
    now = now or time.time()
    try:
        seconds = max(1, int(parameters.get(FOR) or 0))
    except ValueError:
        seconds = 0
    seconds = seconds or 4 * 3600
    build = parameters.get("ZUUL_UUID", "")
    hold = {"request": parameters[REQUEST], "build": build, "held_at": now,
            "until": now + seconds, "url": parameters.get(URL, "")}
    host.hold(stack, hold)
    networks = sorted(port.leftovers(stack).get("networks", []))
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(hold["until"]))
    say(f"AUTOHOLD (request {hold['request']}): {stack} stays deployed on "
        f"{socket.gethostname()} until {until} for debugging, instead of being torn down\n"
        f"  its services: docker service ls --filter "
        f"label=com.docker.stack.namespace={stack}\n"
        f"  domain {domain}; networks {', '.join(networks) or '(none)'}\n"
        f"  release it: ccci-gate autohold release {hold['request']}\n")
    return {"request": hold["request"], "stack": stack, "host": socket.gethostname(),
            "domain": domain, "networks": networks, "held_at": now, "until": hold["until"]}


def why_release(hold: Mapping[str, Any], ask: Ask | None, now: float | None = None
                ) -> str | None:
    """Why a held lease must go now (expired, released), or None while the hold stands."""
    now = now or time.time()
    if now >= float(hold.get("until") or 0):
        return "its hold expired"
    state = ask(hold) if ask is not None else None
    if state in ("released", "expired"):
        return f"its hold was {state} (request {hold.get('request')})"
    return None


def ask_gatekeeper(hold: Mapping[str, Any], timeout: float = 5.0) -> str | None:
    """The gatekeeper's word on a held app (``held``, ``released``, ``expired``), or
    None when it cannot be asked or does not know the build yet."""
    url = str(hold.get("url") or "")
    if not url:
        return None
    try:
        reply = requests.get(url, timeout=timeout)
        if reply.status_code != 200:
            return None
        state = reply.json().get("state")
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return state if isinstance(state, str) else None


def interval() -> float:
    try:
        return max(1.0, float(os.environ.get("CCCI_JANITOR_INTERVAL") or DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


class Periodic:
    """Runs ``work()`` every ``every`` seconds on a daemon thread until ``stop()``;
    ``poke()`` runs it at once. An exception is logged, never fatal."""

    def __init__(self, name: str, work: Callable[[], Any], every: float | None = None):
        self.name = name
        self.work = work
        self.every = every or interval()
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Periodic":
        self._thread.start()
        return self

    def poke(self) -> None:
        self._poke.set()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.every)
            self._poke.clear()
            if self._stop.is_set():
                return
            try:
                self.work()
            except Exception:   # noqa: BLE001 - Docker away for a while is not fatal
                log.exception("%s failed; trying again in %.0f s", self.name, self.every)
