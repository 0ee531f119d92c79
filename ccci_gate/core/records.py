"""Engine state as plain data and back: what must survive a restart.

A **record** is made of dicts, lists, strings, numbers, booleans and ``None`` only, so
it can be written as JSON and read back. ``Engine.to_record()`` collects one per
pipeline (``PipelineManager.to_record``: its queues, items, buildsets and builds, and
what the manager keeps beside them, like the batching state) plus the last reported
runs; ``Engine.take_delta()`` gives what changed since it was last asked, the way the
store keeps it (each item on its own row, queues naming their items by id, each
pipeline's own state apart: ``state_record``); ``Engine.from_record(layout, record)`` rebuilds an engine that carries on exactly
where the recorded one was. What every walk recomputes (the refs items should hold) is
not recorded.

Changes are interned when read back (:class:`Changes`): a change held by an item and by
the buildsets that contain it is one object again, as it was when recorded.
"""
from __future__ import annotations

from typing import Any

from .jobgraph import JobGraph
from .layout import JobConfig
from .model import (Build, BuildSet, BuildState, Change, ChangeQueue, Item, ItemState,
                    MergeState, Result)

RECORD_VERSION = 1
Record = dict[str, Any]


def change_record(change: Change) -> Record:
    return {"project": change.project, "branch": change.branch, "ref": change.ref,
            "number": change.number, "patchset": change.patchset, "sha": change.sha,
            "oldrev": change.oldrev, "url": change.url, "title": change.title,
            "author": change.author,
            "files": list(change.files) if change.files is not None else None}


class Changes:
    """Reads change records back, one object per distinct change."""

    def __init__(self) -> None:
        self._seen: dict[Change, Change] = {}

    def __call__(self, data: Record) -> Change:
        files = data.get("files")
        change = Change(**{**data, "files": tuple(files) if files is not None else None})
        return self._seen.setdefault(change, change)


def job_record(job: JobConfig) -> Record:
    return {"name": job.name, "kind": job.kind, "run": job.run, "requires": list(job.requires),
            "voting": job.voting, "attempts": job.attempts, "timeout": job.timeout,
            "label": job.label, "branches": list(job.branches), "files": list(job.files),
            "parameters": dict(job.parameters), "description": job.description}


def job_from_record(data: Record) -> JobConfig:
    return JobConfig(**{**data, "requires": tuple(data["requires"]),
                        "branches": tuple(data["branches"]), "files": tuple(data["files"]),
                        "parameters": dict(data["parameters"])})


def build_record(build: Build) -> Record:
    return {"job": build.job, "buildset_id": build.buildset_id, "id": build.id,
            "attempt": build.attempt, "state": build.state.value,
            "result": build.result.value if build.result else None, "voting": build.voting,
            "worker": build.worker, "url": build.url, "log_url": build.log_url,
            "earlier_logs": list(build.earlier_logs), "progress": list(build.progress), "enqueued_at": build.enqueued_at,
            "started_at": build.started_at, "finished_at": build.finished_at,
            "message": build.message}


def build_from_record(data: Record) -> Build:
    return Build(**{**data, "state": BuildState(data["state"]),
                    "result": Result(data["result"]) if data["result"] else None,
                    "progress": tuple(data["progress"]),
                    "earlier_logs": tuple(data.get("earlier_logs", ()))})


def buildset_record(bs: BuildSet) -> Record:
    return {"item_id": bs.item_id, "id": bs.id, "graph": [job_record(j) for j in bs.graph.jobs],
            "changes": [change_record(c) for c in bs.changes],
            "merge_state": bs.merge_state.value, "ref": bs.ref, "commit": bs.commit,
            "tip": bs.tip, "steps": list(bs.steps), "merge_message": bs.merge_message,
            "merge_attempts": bs.merge_attempts, "reason": bs.reason,
            "builds": {job: build_record(b) for job, b in bs.builds.items()}}


def buildset_from_record(data: Record, changes: Changes) -> BuildSet:
    return BuildSet(
        item_id=data["item_id"], id=data["id"],
        graph=JobGraph(tuple(job_from_record(j) for j in data["graph"])),
        changes=tuple(changes(c) for c in data["changes"]),
        merge_state=MergeState(data["merge_state"]), ref=data["ref"], commit=data["commit"],
        tip=data["tip"], steps=tuple(data["steps"]), merge_message=data["merge_message"],
        merge_attempts=data["merge_attempts"], reason=data["reason"],
        builds={job: build_from_record(b) for job, b in data["builds"].items()})


def item_record(item: Item) -> Record:
    return {"id": item.id, "change": change_record(item.change), "pipeline": item.pipeline,
            "queue": item.queue.name, "enqueued_at": item.enqueued_at,
            "state": item.state.value, "quick": item.quick,
            "failing_reason": item.failing_reason,
            "result": item.result.value if item.result else None, "message": item.message,
            "buildset": buildset_record(item.buildset) if item.buildset else None}


def item_from_record(data: Record, queue: ChangeQueue, changes: Changes) -> Item:
    bs = data["buildset"]
    return Item(change=changes(data["change"]), pipeline=data["pipeline"], queue=queue,
                id=data["id"], enqueued_at=data["enqueued_at"], state=ItemState(data["state"]),
                buildset=buildset_from_record(bs, changes) if bs else None, quick=data["quick"],
                failing_reason=data["failing_reason"],
                result=Result(data["result"]) if data["result"] else None,
                message=data["message"])


def queue_record(queue: ChangeQueue) -> Record:
    return {"pipeline": queue.pipeline, "name": queue.name, "window": queue.window,
            "id": queue.id, "merged": [change_record(c) for c in queue.merged],
            "items": [item_record(i) for i in queue.items]}


def queue_skeleton(queue: ChangeQueue) -> Record:
    """A queue record naming its items by id (the store saves items on their own rows;
    :func:`queue_with_items` puts them back)."""
    return {"pipeline": queue.pipeline, "name": queue.name, "window": queue.window,
            "id": queue.id, "merged": [change_record(c) for c in queue.merged],
            "items": [i.id for i in queue.items]}


def queue_with_items(skeleton: Record, items: dict[str, Record]) -> Record:
    """The :func:`queue_record` a skeleton stands for (items not in ``items`` dropped)."""
    return {**skeleton, "items": [items[i] for i in skeleton["items"] if i in items]}


def queue_from_record(data: Record, changes: Changes) -> ChangeQueue:
    queue = ChangeQueue(data["pipeline"], data["name"], window=data["window"], id=data["id"],
                        merged=[changes(c) for c in data["merged"]])
    queue.items = [item_from_record(i, queue, changes) for i in data["items"]]
    return queue
