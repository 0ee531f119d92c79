"""Each build's parameters as dispatched, kept in the store for ``ccci-gate replay``.

A **secret** parameter is one whose name contains a word the worker redacts from logs
(``credentials.SECRET_WORDS``: TOKEN, SECRET, PASSWORD, PASSWD, KEY), such as the
per-build ``CCCI_RESULT_TOKEN``. Its value is never stored: only its name, so that a
replay knows it must find a fresh value or say it cannot.

:class:`RecordingDispatcher` wraps the ``Dispatcher`` port. It runs on the scheduler
thread, so it only queues the row; a thread of its own writes the rows in batches.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Mapping

from .core.actions import CancelBuild, StartBuild
from .store import Store
from .credentials import is_secret

log = logging.getLogger("ccci_gate.buildparams")

Row = tuple[str, str, dict[str, str], list[str]]


def split_secrets(params: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """``(parameters without secrets, names of the secret ones)``."""
    kept = {str(k): str(v) for k, v in params.items() if not is_secret(str(k))}
    return kept, sorted(str(k) for k in params if is_secret(str(k)))


class RecordingDispatcher:
    """The ``Dispatcher`` port, remembering each build's parameters (secrets left out)."""

    def __init__(self, inner: Any, store: Store):
        self.inner = inner
        self.store = store
        self._queue: "queue.Queue[Row | None]" = queue.Queue()
        self._thread = threading.Thread(target=self._write, name="build-params", daemon=True)
        self._thread.start()

    def start(self, action: StartBuild) -> None:
        kept, secrets = split_secrets(action.parameters)
        self._queue.put((action.build_id, action.function, kept, secrets))
        self.inner.start(action)

    def cancel(self, action: CancelBuild) -> None:
        self.inner.cancel(action)

    def pool(self, *args: Any, **kw: Any) -> Any:
        return self.inner.pool(*args, **kw)

    def stop(self) -> None:
        """Write what is queued, then end the writer thread."""
        self._queue.put(None)
        self._thread.join(5)

    def _write(self) -> None:
        while True:
            row = self._queue.get()
            rows: list[Row] = []
            while row is not None:
                rows.append(row)
                try:
                    row = self._queue.get_nowait()
                except queue.Empty:
                    break
            if rows:
                try:
                    self.store.save_params(rows)
                except Exception:  # noqa: BLE001 - a closed store at shutdown, a full disk
                    log.exception("cannot save the parameters of %d builds", len(rows))
            if row is None:
                return
