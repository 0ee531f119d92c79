"""The Gearman protocol between gatekeeper and workers, defined once (Zuul v2 compatible).

- Functions: ``build:<job>``, ``build:<job>:<label>`` (named by
  ``core.layout.build_function``, the one definition); ``stop:<worker>`` aborts a build.
- A build's ``unique`` is its id; its argument is a JSON object of strings.
- WORK_DATA: the first ``{name, number, manager, url}`` says the build started; later
  ``{"log": text}`` messages carry the build log. A worker whose host holds warm
  canonicals adds ``warm`` (their rows) to the first one and to WORK_COMPLETE
  (``gearman.warmpool``).
- WORK_STATUS ``n/d`` is progress; WORK_COMPLETE ``{"result": ...}`` ends the build.
  A completion without a result, WORK_FAIL or WORK_EXCEPTION means *retry*; so does a
  WORK_COMPLETE ``{"result": "ERROR", "retry": true, "message": why}``: an infra error
  the worker met (Docker daemon down, no suitable node...), not the change's fault.
"""
from __future__ import annotations

import json
import logging
import socket
from typing import Any, Mapping


RETRY = "retry"   # WORK_COMPLETE key: the result is an infra error, run the build again


def stop_function(worker: str) -> str:
    return f"stop:{worker}"


def job_of(function: str) -> str:
    """``build:<job>[:<label>]`` → ``<job>``."""
    parts = function.split(":")
    if len(parts) < 2 or parts[0] != "build":
        raise ValueError(f"not a build function: {function!r}")
    return parts[1]


def encode(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True).encode("utf-8")


def decode(data: bytes | None) -> dict[str, Any]:
    """A JSON object from a packet; anything else becomes ``{}``."""
    if not data:
        return {}
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def encode_parameters(params: Mapping[str, Any]) -> bytes:
    """Build parameters: every value a string, as Jenkins' gearman-plugin expects."""
    return encode({k: "" if v is None else str(v) for k, v in params.items()})


def started(name: str, number: str, manager: str, url: str,
            extra: Mapping[str, Any] | None = None) -> bytes:
    return encode({**(extra or {}), "name": name, "number": number, "manager": manager,
                   "url": url})


def log_chunk(text: str) -> bytes:
    return encode({"log": text})


def completed(result: str, extra: Mapping[str, Any] | None = None) -> bytes:
    return encode({**(extra or {}), "result": result})


def tls_options(tls: Any) -> dict[str, str]:
    """``gear``'s ``ssl_key``/``ssl_cert``/``ssl_ca`` keywords for ``pki.TlsFiles``
    (none without TLS)."""
    if tls is None:
        return {}
    return {"ssl_key": str(tls.key), "ssl_cert": str(tls.cert), "ssl_ca": str(tls.ca)}


def set_nodelay(sock: socket.socket | None) -> None:
    """Turn off Nagle's algorithm: a round trip costs ~1 ms instead of ~44 ms."""
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class QuietDisconnects(logging.Filter):
    """gear logs a full traceback when a server goes away while it (re)connects; a
    vanished server is routine (it reconnects by itself): one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and str(record.msg).startswith("Exception "):
            record.msg = f"{record.getMessage()}: {exc!r} (reconnecting)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


SWITCH_INTERVAL = 0.001


def tune_threads() -> None:
    """Hand the GIL between threads every millisecond instead of Python's 5 ms: a
    gatekeeper (and a worker) is many threads ping-ponging small Gearman packets, and
    with the embedded server in the same process this shortens every round trip
    (bench/dispatch.py: c=1 on the embedded server, ~900 → ~1,050 builds/s here)."""
    import sys
    sys.setswitchinterval(SWITCH_INTERVAL)
