"""statsd, as Zuul sends it: the counters and timers of ``/metrics`` as UDP datagrams.

With ``statsd-host: HOST[:PORT]`` in the settings (port 8125 by default),
:class:`~ccci_gate.web.metrics.GateMetrics` also sends, as each thing happens:

- ``<prefix>.pipeline.<pipeline>.enqueued:1|c`` — an item enqueued
- ``<prefix>.pipeline.<pipeline>.finished.<result>:1|c`` — an item left its pipeline
- ``<prefix>.job.<job>.<result>:<ms>|ms`` — a build ran, its duration
- ``<prefix>.dispatch.<function>:<ms>|ms`` — a worker took a build, after this long
- ``<prefix>.scheduler.event.<kind>:<ms>|ms`` — the scheduler handled an event

Names are cleaned to ``[A-Za-z0-9_-]`` (``build:install`` → ``build_install``). Levels
(queue lengths, the pool, outboxes) are only in ``/metrics``. A datagram is sent on a
non-blocking socket to an address resolved once, at start: sending never blocks the
scheduler thread or gear's poll thread, and a statsd that is down loses the datagram,
nothing else.
"""
from __future__ import annotations

import logging
import re
import socket

log = logging.getLogger("ccci_gate.statsd")

UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _clean(part: str) -> str:
    return UNSAFE.sub("_", part) or "_"


class Statsd:
    """Sends counters and timers to one statsd server over UDP."""

    def __init__(self, host: str, port: int = 8125, prefix: str = "ccci"):
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM)[0]
        except OSError as exc:
            raise OSError(f"statsd-host {host}:{port}: {exc}") from None
        self.address = address
        self.prefix = prefix
        self.sock = socket.socket(family, kind, proto)
        self.sock.setblocking(False)

    def _send(self, parts: tuple[str, ...], value: str) -> None:
        name = ".".join((self.prefix, *(_clean(p) for p in parts)))
        try:
            self.sock.sendto(f"{name}:{value}".encode(), self.address)
        except OSError as exc:   # full buffer, refused (ICMP): a lost datagram, no more
            log.debug("statsd %s not sent: %s", name, exc)

    def incr(self, *parts: str) -> None:
        self._send(parts, "1|c")

    def timing(self, seconds: float, *parts: str) -> None:
        self._send(parts, f"{max(0.0, seconds) * 1000:.3f}|ms")

    def close(self) -> None:
        self.sock.close()
