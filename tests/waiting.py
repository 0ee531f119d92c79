"""Two helpers every end-to-end test and benchmark needs: a free TCP port, and a wait.

One definition each, imported by ``conftest.py``, ``e2e_helpers.py``, the harnesses and
``bench/*.py`` (which put ``tests/`` on ``sys.path``).
"""
from __future__ import annotations

import socket
import time
from typing import Any, Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 50 ms until it returns a true value (returned); after
    ``timeout`` seconds raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")
