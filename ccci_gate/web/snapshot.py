"""Values an HTTP handler needs from a slow part, without waiting on that part.

A :class:`Snapshot` computes ``fn()`` on its own background thread when asked, and
coalesces: a hundred status requests at once cost one question to the Gearman servers.
A handler asks ``get(max_age)``: a value taken no earlier than ``max_age`` seconds before
the call, waiting at most ``wait`` seconds for it; if the part does not answer in time it
gets the last value (``fresh`` False) or ``None`` before the first one. So a handler is
never held by a slow Gearman server for longer than ``wait``
(``tests/test_web_server.py``: ``test_status_does_not_wait_for_a_slow_gearman_server``).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

log = logging.getLogger("ccci_gate.web")

T = TypeVar("T")


@dataclass(frozen=True)
class Taken(Generic[T]):
    value: T
    asked_at: float      # time.monotonic() when the value was asked for
    fresh: bool = True

    @property
    def age(self) -> float:
        return max(0.0, time.monotonic() - self.asked_at)


class Snapshot(Generic[T]):
    def __init__(self, name: str, fn: Callable[[], T], wait: float = 1.0):
        self.name = name
        self.fn = fn
        self.wait = wait
        self._cond = threading.Condition()
        self._last: Taken[T] | None = None
        self._wanted = False
        self._thread: threading.Thread | None = None

    def get(self, max_age: float = 0.0) -> Taken[T] | None:
        start = time.monotonic()
        oldest = start - max_age
        with self._cond:
            last = self._last
            if last is not None and last.asked_at >= oldest:
                return last
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"snapshot-{self.name}",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._last is not None and self._last.asked_at >= oldest,
                                timeout=self.wait)
            last = self._last
        if last is None or last.asked_at >= oldest:
            return last
        return Taken(last.value, last.asked_at, fresh=False)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted)
                self._wanted = False
            asked = time.monotonic()
            try:
                value = self.fn()
            except Exception as exc:  # noqa: BLE001 - keep the last value, say why in the log
                log.warning("%s snapshot failed: %r", self.name, exc)
                continue
            with self._cond:
                self._last = Taken(value, asked)
                self._cond.notify_all()
