"""A build's log as server-sent events, followed while the build runs.

Logs are kept by the :class:`~ccci_gate.logstore.LogStore`: ``<build-id>.log`` appended
while the build runs, ``<build-id>.log.gz`` once finished; :meth:`LogStore.read` reads
either at an offset. :class:`LogStream` is a response body (an iterable of bytes the
listener sends chunk by chunk, ``web/server.py``) that reads on every ``POLL`` seconds —
it holds no lock of the scheduler's and never asks it — and sends:

- ``retry: 2000`` first (how long a browser waits before it reconnects);
- each complete new line as ``data: <line>``, one event per line; the last event of a
  read carries ``id: <byte offset>``, so a browser that reconnects (``Last-Event-ID``)
  goes on where it was;
- ``: keep-alive`` after ``HEARTBEAT`` seconds of silence: writing is how a client that
  went away is noticed, which ends the iteration and frees the thread;
- ``event: end`` with ``data: <result>`` once the build has a result (asked every
  ``CHECK`` seconds) and a read ``POLL`` seconds after that found nothing more; then the
  body ends. A finished build's log is sent whole, then ``end``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from ..logstore import LogStore

POLL = 0.2          # seconds between reads of a running build's log
CHECK = 1.0         # seconds between asks whether the build finished
HEARTBEAT = 2.0     # seconds of silence before a keep-alive comment
READ = 256 * 1024   # bytes read at most per poll


def event(line: bytes, event_id: int | None = None) -> bytes:
    """One server-sent event carrying one log line (a ``\\r`` or invalid UTF-8 cannot
    break the framing)."""
    text = line.decode("utf-8", "replace").replace("\r", "")
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {text}\n\n".encode()


class LogStream:
    """The body of ``GET /stream/<build-id>``: iterate it once; ``close()`` frees its slot
    (``done``) whether or not it was iterated."""

    def __init__(self, logs: LogStore, build_id: str, result_of: Callable[[str], str | None],
                 stopping: threading.Event, offset: int = 0,
                 done: Callable[[], None] = lambda: None):
        self.logs = logs
        self.build_id = build_id
        self.result_of = result_of
        self.stopping = stopping
        self.offset = offset
        self._done = done
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._done()

    def __iter__(self) -> Iterator[bytes]:
        yield b"retry: 2000\n\n"
        offset, partial = self.offset, b""
        said, checked = time.monotonic(), float("-inf")
        result: str | None = None
        seen_done = 0
        while not self.stopping.is_set() and not self._closed:
            chunk = self.logs.read(self.build_id, offset, offset + READ) or b""
            if chunk:
                offset += len(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                if lines:
                    yield b"".join(event(line) for line in lines[:-1]) + event(
                        lines[-1], offset - len(partial))
                    said = time.monotonic()
                if len(chunk) == READ:
                    continue
            now = time.monotonic()
            if now - checked >= CHECK or seen_done:
                checked = now
                result = self.result_of(self.build_id)
                seen_done = seen_done + 1 if result is not None else 0
                if seen_done >= 2 and not chunk:
                    if partial:
                        yield event(partial, offset)
                    yield f"event: end\ndata: {result}\n\n".encode()
                    return
            if now - said >= HEARTBEAT:
                yield b": keep-alive\n\n"
                said = now
            self.stopping.wait(POLL)
