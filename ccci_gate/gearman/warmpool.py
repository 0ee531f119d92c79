"""Warm canonicals as the gatekeeper sees them: where to send a build that wants one,
and what the workers holding canonicals last said about them.

- **Routing.** A ``StartBuild`` may ``prefer`` functions (``build:<job>:warm:<recipe>``,
  ``core.layout.warm_function``): the workers registering one hold that recipe's
  canonical. :func:`route` picks the first preferred function some worker has
  registered, else the job's own function (any worker: a quick run there finds no
  canonical and runs cold, saying so), and says which in a line the dispatcher writes
  at the top of the build's log.
- **Reports.** A worker whose host holds canonicals adds ``warm`` (its
  ``ccci-gate warm list --json`` rows) to the first WORK_DATA of each build and to its
  WORK_COMPLETE. :class:`WarmReports` keeps the last report of each worker, and
  ``rows`` joins it with the live registry: ``registered`` says whether the worker
  registers ``warm:<recipe>`` right now (what routing uses); the other fields are as of
  ``reported`` (the start or end of that worker's last build; none before its first
  build since the gatekeeper started).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, Mapping

FIELDS = ("recipe", "status", "version", "commit", "stack", "domain", "time", "last_good",
          "last_quick", "bytes")
MAX_ROWS = 200          # per worker: a report is bounded whatever a worker sends


def label_of(action_function: str, preferred: str) -> str:
    """``warm:hello`` from ``build:systest:warm:hello`` (the job's function + label)."""
    return preferred[len(action_function) + 1:] if preferred.startswith(action_function + ":") \
        else preferred


def route(function: str, prefer: Iterable[str], registered: Callable[[str], bool]
          ) -> tuple[str, str]:
    """The function to submit a build as, and the log line that says why."""
    prefer = tuple(prefer)
    if not prefer:
        return function, ""
    for candidate in prefer:
        if registered(candidate):
            return candidate, (f"dispatch: as {candidate}: a worker labelled "
                               f"{label_of(function, candidate)} holds the canonical\n")
    labels = ", ".join(label_of(function, p) for p in prefer)
    return function, (f"dispatch: no worker has the label {labels} (no host holds a usable "
                      f"canonical): as {function}, on any worker; a quick run there falls "
                      f"back to cold\n")


def _clean(row: Any) -> dict[str, Any] | None:
    if not isinstance(row, Mapping) or not isinstance(row.get("recipe"), str):
        return None
    out = {}
    for key in FIELDS:
        if key not in row:
            continue
        value = row[key]
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, Mapping):   # last_good, last_quick: flat records
            out[key] = {str(k): v for k, v in value.items()
                        if isinstance(v, (str, int, float, bool)) or v is None}
    return out


class WarmReports:
    """The last ``warm`` report of each worker (any thread may note or read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_worker: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def note(self, worker: str, rows: Any) -> None:
        """A worker's report; anything but a list of canonical rows is ignored."""
        if not worker or not isinstance(rows, list):
            return
        clean = [r for r in (_clean(row) for row in rows[:MAX_ROWS]) if r is not None]
        with self._lock:
            self._by_worker[worker] = (time.time(), clean)

    def rows(self, workers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One row per (worker, canonical): the last report, plus ``registered`` from
        the live worker listing (``functions`` per worker name)."""
        live: dict[str, set[str]] = {}
        for worker in workers:
            labels = live.setdefault(str(worker.get("name", "")), set())
            for function in worker.get("functions") or ():
                head, sep, recipe = str(function).partition(":warm:")
                if sep:
                    labels.add(recipe)
        with self._lock:
            reports = dict(self._by_worker)
        out = []
        for worker, (reported, rows) in sorted(reports.items()):
            for row in rows:
                out.append({"worker": worker, **row, "reported": reported,
                            "registered": row["recipe"] in live.get(worker, set())})
        seen = {(row["worker"], row["recipe"]) for row in out}
        for worker, recipes in sorted(live.items()):   # labelled, no report yet
            out += [{"worker": worker, "recipe": recipe, "reported": None, "registered": True}
                    for recipe in sorted(recipes) if (worker, recipe) not in seen]
        return out
