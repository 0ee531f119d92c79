"""The embedded Gearman server: ``gear.Server`` with ``TCP_NODELAY`` on every connection,
and, given the pool's TLS files, client certificates required and the pool's ACL.

gear's own accept loop does the TLS handshake inline: one client that fails it (no
certificate, a foreign CA, plain text) raises out of the loop and the server accepts
no one after it; one that stalls mid-handshake stops everyone. Here each handshake runs
on its own short-lived thread with a time limit, and a refused one is a log line.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading

import gear

from ..pki import TlsFiles
from .acl import PoolACL
from .protocol import set_nodelay, tls_options

log = logging.getLogger("ccci_gate.gearman")
HANDSHAKE_TIMEOUT = 10.0


class _Server(gear.Server):
    def _registerConnection(self, conn):  # noqa: N802 - gear's name
        set_nodelay(conn.conn)
        super()._registerConnection(conn)

    def connectLoop(self):  # noqa: N802 - gear's name
        poll = select.poll()
        bitmask = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL
        poll.register(self.connect_wake_read, bitmask)
        poll.register(self.socket.fileno(), bitmask)
        while self.running:
            for fd, event in poll.poll():
                if fd == self.connect_wake_read:
                    while os.read(self.connect_wake_read, 1) != b"\n":
                        pass
                    return
                if not event & select.POLLIN:
                    continue
                try:
                    sock, addr = self.socket.accept()
                except OSError:
                    continue
                if self.use_ssl:
                    threading.Thread(target=self._handshake, args=(sock, addr),
                                     name="gearman-tls-handshake", daemon=True).start()
                else:
                    self._admit(sock, addr)

    def _handshake(self, sock: socket.socket, addr) -> None:
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT)
            context = gear.create_ssl_context()
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_cert_chain(self.ssl_cert, self.ssl_key)
            context.load_verify_locations(self.ssl_ca)
            sock = context.wrap_socket(sock, server_side=True)
            sock.settimeout(None)
        except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError
            log.warning("refused a Gearman connection from %s: %s", addr[0], exc)
            sock.close()
            return
        self._admit(sock, addr)

    def _admit(self, sock: socket.socket, addr) -> None:
        conn = gear.ServerConnection(addr, sock, self.use_ssl, self.client_id)
        with self.connections_condition:
            self.active_connections.append(conn)
            self._registerConnection(conn)
            self.connections_condition.notify_all()


class EmbeddedServer:
    """An in-process Gearman server; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4730, tls: TlsFiles | None = None):
        self._server = _Server(port=port, host=host, acl=PoolACL() if tls else None,
                               **tls_options(tls))
        self.host = host
        self.port: int = self._server.port

    def shutdown(self) -> None:
        self._server.shutdown()
