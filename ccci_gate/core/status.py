"""Plain-data snapshots of scheduler state, for reporters, the store and ``status.json``.

Snapshots are dicts of strings, numbers and lists only, so they can cross threads and
be serialised without touching live model objects.
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
    ahead = [i.change.describe() for i in item.items_ahead] if item in item.queue.items else []
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
        "items_ahead": ahead,
        "progress": {"done": done, "total": len(jobs)},
        "jobs": jobs,
        "status_url": f"{web_url.rstrip('/')}/items/{item.id}" if web_url else f"/items/{item.id}",
        **(extra or {}),
    }
