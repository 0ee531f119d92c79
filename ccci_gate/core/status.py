"""Plain-data snapshots of scheduler state, for reporters, the store and ``status.json``.

Snapshots are dicts of strings, numbers and lists only, so they can cross threads and
be serialised without touching live model objects.

An item's place in its queue is O(1) in its summary, whatever the queue's length:
``items_ahead`` is the **count** of items ahead of it in its queue, and ``item_ahead``
the change (``Change.describe()``) of the one directly ahead, or None at the head. (What
a dependent item's speculative ref holds, failing items ahead left out, is its
``buildset.changes``.) Summaries stored before carry ``items_ahead`` as the list of
every change ahead: :func:`place_of` reads both forms.
"""
from __future__ import annotations

from typing import Any, Mapping

from .model import Build, Change, Item


def change_summary(change: Change) -> dict[str, Any]:
    return {
        "project": change.project, "branch": change.branch, "ref": change.ref,
        "number": change.number, "patchset": change.patchset, "sha": change.sha,
        "oldrev": change.oldrev, "url": change.url, "title": change.title,
        "author": change.author, "id": change.describe(),
    }


def build_summary(build: Build, now: float) -> dict[str, Any]:
    end = build.finished_at if build.finished_at is not None else now
    duration = end - build.started_at if build.started_at is not None else None
    return {
        "id": build.id, "name": build.job, "state": build.state.value,
        "result": build.result.value if build.result else None,
        "voting": build.voting, "attempt": build.attempt, "worker": build.worker,
        "url": build.url, "log_url": build.log_url,
        "logs": [*build.earlier_logs, build.log_url],   # every attempt's log, oldest first
        "progress": list(build.progress), "enqueued_at": build.enqueued_at,
        "started_at": build.started_at, "finished_at": build.finished_at,
        "duration": duration, "message": build.message,
    }


def item_summary(item: Item, now: float, web_url: str = "",
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An item as plain data; ``extra`` is what its manager adds (``describe``)."""
    bs = item.buildset
    jobs = []
    if bs is not None:
        for job in bs.graph.jobs:
            build = bs.builds.get(job.name)
            if build is not None:
                jobs.append(build_summary(build, now))
            else:
                jobs.append({"name": job.name, "state": "WAITING", "result": None,
                             "voting": job.voting, "attempt": 0, "duration": None,
                             "log_url": "", "logs": [], "url": "", "id": None})
    done = sum(1 for j in jobs if j["result"])
    position = _position(item)
    ahead = item.queue.items[position - 1].change.describe() if position else None
    return {
        "item_id": item.id,
        "pipeline": item.pipeline,
        "queue": item.queue.name,
        "state": item.state.value,
        "active": item.active,
        "quick": item.quick,
        "result": item.result.value if item.result else None,
        "failing_reason": item.failing_reason,
        "message": item.message,
        "enqueued_at": item.enqueued_at,
        "change": change_summary(item.change),
        "buildset": {
            "id": bs.id if bs else None,
            "merge_state": bs.merge_state.value if bs else None,
            "ref": bs.ref if bs else None,
            "commit": bs.commit if bs else None,
            "changes": [c.describe() for c in bs.changes] if bs else [],
            "reason": bs.reason if bs else "",   # why this buildset (a reset's cause)
        },
        "items_ahead": position,
        "item_ahead": ahead,
        "progress": {"done": done, "total": len(jobs)},
        "jobs": jobs,
        "status_url": f"{web_url.rstrip('/')}/items/{item.id}" if web_url else f"/items/{item.id}",
        **(extra or {}),
    }


def _position(item: Item) -> int:
    """How many items are ahead of ``item`` in its queue (0 when it left it)."""
    try:
        return item.queue.items.index(item)
    except ValueError:
        return 0


def place_of(summary: Mapping[str, Any]) -> tuple[int, str | None]:
    """``(items ahead, the change directly ahead)`` of an item summary, of this form or
    of one stored with ``items_ahead`` as the list of every change ahead."""
    ahead = summary.get("items_ahead")
    if isinstance(ahead, list):
        return len(ahead), (str(ahead[-1]) if ahead else None)
    count = ahead if isinstance(ahead, int) and ahead > 0 else 0
    direct = summary.get("item_ahead")
    return count, (str(direct) if count and direct else None)
