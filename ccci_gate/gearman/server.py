"""The embedded Gearman server: ``gear.Server`` with ``TCP_NODELAY`` on every connection."""
from __future__ import annotations

import gear

from .protocol import set_nodelay


class _Server(gear.Server):
    def _registerConnection(self, conn):  # noqa: N802 - gear's name
        set_nodelay(conn.conn)
        super()._registerConnection(conn)


class EmbeddedServer:
    """An in-process Gearman server; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4730):
        self._server = _Server(port=port, host=host)
        self.host = host
        self.port: int = self._server.port

    def shutdown(self) -> None:
        self._server.shutdown()
