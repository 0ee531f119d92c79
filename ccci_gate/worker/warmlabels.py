"""A worker's automatic ``warm:<recipe>`` labels and its report of its host's canonicals.

For each canonical in the host's warm root (``swarm.warm``) that a quick run can use
(a complete known-good, not broken), the worker registers, beside each function of a
canonical-using job (``core.layout.WARM_KINDS``) it registers anyway, that function
with the label ``warm:<recipe>`` (``build:systest:warm:hello``). The gatekeeper sends a
quick build of an enrolled recipe there (``gearman.warmpool.route``). The labels are
looked at again after every build and every ``REFRESH`` seconds while idle (a
promotion, ``ccci-gate warm drop`` or a broken restore changes them).

The worker also reports the canonicals (the rows of ``ccci-gate warm list --json``)
with the start and the completion of each build; the gatekeeper shows them in
``/status.json`` (``pool.warm``).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from ..core.layout import WARM_KINDS, JobConfig, warm_function
from ..swarm import warm

log = logging.getLogger("ccci_gate.worker.warm")

REFRESH = 10.0     # seconds between looks at the warm root while idle


class WarmLabels:
    """What a worker registers and reports for the canonicals under ``root``."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else warm.default_root()
        self._lock = threading.Lock()
        self._looked = 0.0
        self._recipes: tuple[str, ...] = ()

    def recipes(self) -> tuple[str, ...]:
        """The recipes whose canonical here a quick run can use (as last looked at)."""
        return self._recipes

    def look(self) -> bool:
        """Read the warm root again; True when the usable recipes changed."""
        try:
            found = tuple(sorted(c.recipe for c in warm.canonicals(self.root)
                                 if not c.unusable()))
        except OSError as exc:
            log.warning("cannot read the warm root %s: %s", self.root, exc)
            found = ()
        with self._lock:
            self._looked = time.monotonic()
            changed, self._recipes = found != self._recipes, found
        return changed

    def due(self) -> bool:
        return time.monotonic() - self._looked >= REFRESH

    def functions(self, jobs: Mapping[str, JobConfig], registered: list[str]) -> list[str]:
        """``<function>:warm:<recipe>`` for each canonical-using job among ``registered``
        and each usable canonical."""
        out = []
        for job in jobs.values():
            if job.kind in WARM_KINDS and job.function in registered:
                out += [f for f in (warm_function(job.function, r) for r in self._recipes) if f]
        return sorted(out)

    def report(self) -> dict[str, Any]:
        """``{"warm": rows}`` for the worker's messages (``{}`` if the root is unreadable)."""
        try:
            rows = warm.listing(self.root)
        except OSError as exc:
            log.warning("cannot list the warm root %s: %s", self.root, exc)
            return {}
        return {"warm": rows}
