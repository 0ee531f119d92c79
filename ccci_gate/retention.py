"""Retention: the gatekeeper's janitor pass over logs, artifacts and history.

Settings (``retention:`` in the settings file; every key optional, ``off`` disables one):

- ``max-age`` (default ``30d``): finished builds' logs and finished items' artifacts
  older than this are removed;
- ``max-bytes`` (default ``10G``): when logs and artifacts together take more, the
  oldest finished logs and artifacts go first until they fit;
- ``history-max-age`` (default ``365d``, at least ``max-age``): items finished longer
  ago leave the history with their builds, parameters and whatever they left on disk;
- ``interval`` (default ``1h``): time between passes (the first runs at start).

A log removed while its build stays in the history is **expired**: the store records
when and why, the build's JSON and its item say so, ``GET /logs/<id>`` answers 410.
Never removed: a running log (``<id>.log``: only finished, compressed logs are
candidates), the artifacts of a buildset whose item is still in a queue (or that were
written in the last ``IDLE`` seconds, before the store knew their item).

Each pass also compresses a running log whose build has a result and which has not
grown for ``IDLE`` seconds (its compression was missed: a restart), and measures disk
use by kind (:attr:`Janitor.disk`, served in ``/status.json``): walking a big tree
happens here, on the janitor's thread, never per request.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .disk import tree_bytes
from .logstore import LogStore
from .store import Store

log = logging.getLogger("ccci_gate.retention")

IDLE = 300.0              # seconds a finished build's plain log stays still before a pass packs it
DISK_EVERY = 300.0        # seconds between disk measurements (passes measure too)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(value: Any) -> float | None:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or seconds → seconds; ``off`` → None."""
    if value is None or str(value).strip().lower() == "off":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", str(value).strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30d, 12h, 90m, 45s, or off)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_size(value: Any) -> int | None:
    """``10G``, ``500M``, ``64k``, ``1T`` (powers of 1024, ``B``/``iB`` optional) or bytes
    → bytes; ``off`` → None."""
    if value is None or str(value).strip().lower() == "off":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", str(value).strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a size (use e.g. 10G, 500M, 64k, or off)")
    return int(float(match.group(1)) * _SIZES[match.group(2)])


@dataclass(frozen=True)
class Policy:
    """Retention settings in seconds and bytes (None: no limit)."""

    max_age: float | None = 30 * 86400
    max_bytes: int | None = 10 << 30
    history_max_age: float | None = 365 * 86400
    interval: float = 3600.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "Policy":
        """From the ``retention:`` mapping; ValueError naming the key and what is wrong."""
        raw = dict(raw or {})
        known = {"max-age", "max-bytes", "history-max-age", "interval"}
        if set(raw) - known:
            raise ValueError(f"retention: unknown key(s) {', '.join(sorted(set(raw) - known))}"
                             f" (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for key, parse in (("max-age", parse_duration), ("max-bytes", parse_size),
                           ("history-max-age", parse_duration), ("interval", parse_duration)):
            if key in raw:
                try:
                    values[key.replace("-", "_")] = parse(raw[key])
                except ValueError as exc:
                    raise ValueError(f"retention.{key}: {exc}") from None
        policy = cls(**values)
        if policy.interval is None:
            raise ValueError("retention.interval: cannot be off (passes must run)")
        if (policy.history_max_age is not None and policy.max_age is not None
                and policy.history_max_age < policy.max_age):
            raise ValueError(f"retention.history-max-age ({_age(policy.history_max_age)}) is "
                             f"shorter than max-age ({_age(policy.max_age)}): history would "
                             f"be removed before its logs")
        return policy


class Janitor:
    """Runs retention passes on a thread of its own and keeps the disk-use snapshot."""

    def __init__(self, policy: Policy, logs: LogStore, store: Store, artifacts: Path,
                 measure: Mapping[str, Callable[[], Path | list[Path] | None]],
                 clock: Callable[[], float] = time.time):
        self.policy = policy
        self.logs = logs
        self.store = store
        self.artifacts = Path(artifacts)
        self.measure = measure       # kind → the path(s) whose size is its disk use
        self.clock = clock
        self.disk: dict[str, Any] = {"measured_at": None}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        next_pass = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_pass:
                    self.run_pass()
                    next_pass = time.monotonic() + self.policy.interval
                else:
                    self.measure_disk()
            except Exception:  # noqa: BLE001 - a pass that fails must not end the janitor
                log.exception("retention pass failed")
            self._stop.wait(min(DISK_EVERY, max(0.1, next_pass - time.monotonic())))

    def measure_disk(self) -> dict[str, Any]:
        """Bytes per kind; published whole (readers never see a half-made snapshot)."""
        disk: dict[str, Any] = {}
        for kind, where in self.measure.items():
            paths = where()
            if paths is None:
                continue
            disk[kind] = sum(tree_bytes(Path(p)) for p in
                             (paths if isinstance(paths, list) else [paths]))
        disk["measured_at"] = self.clock()
        self.disk = disk
        return disk

    def run_pass(self) -> dict[str, int]:
        """One pass; what it freed (also logged)."""
        now = self.clock()
        freed = {"logs": 0, "log_bytes": 0, "artifacts": 0, "artifact_bytes": 0, "items": 0,
                 "packed": 0}
        idle = [f.build_id for f in self.logs.files() if not f.finished and now - f.mtime > IDLE]
        for build_id in self.store.finished_builds(idle):
            freed["packed"] += int(self.logs.finish(build_id))
        if self.policy.history_max_age is not None:
            items, builds, buildsets = self.store.forget_items(now - self.policy.history_max_age)
            freed["items"] = len(items)
            for build_id in builds:
                self._count(freed, "logs", self.logs.remove(build_id))
            for buildset in buildsets:
                self._count(freed, "artifacts", self._remove_artifacts(self.artifacts / buildset))
        live = self.store.live_buildsets()
        artifact_sets = self._artifact_sets()
        candidates = [(f.mtime, "log", f.build_id, f.bytes) for f in self.logs.files()
                      if f.finished]
        candidates += [(mtime, "artifacts", name, size) for name, mtime, size
                       in artifact_sets if name not in live and now - mtime > IDLE]
        candidates.sort()
        expired: dict[str, list[str]] = {}
        artifacts_left = sum(size for _n, _m, size in artifact_sets)
        freed_so_far = freed["artifact_bytes"]
        if self.policy.max_age is not None:
            reason = f"older than {_age(self.policy.max_age)}"
            keep = []
            for cand in candidates:
                if now - cand[0] > self.policy.max_age:
                    self._drop(cand, freed, expired.setdefault(reason, []))
                else:
                    keep.append(cand)
            candidates = keep
        if self.policy.max_bytes is not None:
            artifacts_left -= freed["artifact_bytes"] - freed_so_far   # removed for their age
            total = self.logs.disk_use() + artifacts_left
            reason = f"over the {_size(self.policy.max_bytes)} budget"
            for cand in candidates:
                if total <= self.policy.max_bytes:
                    break
                total -= cand[3]
                self._drop(cand, freed, expired.setdefault(reason, []))
        for reason, ids in expired.items():
            if ids:
                self.store.expire_logs(ids, reason)
        disk = self.measure_disk()
        log.info("retention pass freed %d logs (%s), %d artifact sets (%s), %d history items;"
                 " packed %d logs; disk: %s", freed["logs"], _size(freed["log_bytes"]),
                 freed["artifacts"], _size(freed["artifact_bytes"]), freed["items"],
                 freed["packed"], ", ".join(f"{k} {_size(v)}" for k, v in disk.items()
                                            if k != "measured_at"))
        return freed

    def _drop(self, cand: tuple[float, str, str, int], freed: dict[str, int],
              expired: list[str]) -> None:
        _mtime, kind, name, _size_ = cand
        if kind == "log":
            self._count(freed, "logs", self.logs.remove(name))
            expired.append(name)
        else:
            self._count(freed, "artifacts", self._remove_artifacts(self.artifacts / name))

    @staticmethod
    def _count(freed: dict[str, int], kind: str, size: int | None) -> None:
        if size:
            freed[kind] += 1
            freed["log_bytes" if kind == "logs" else "artifact_bytes"] += size

    def _artifact_sets(self) -> list[tuple[str, float, int]]:
        """``(buildset id, mtime, bytes)`` of each buildset's artifact folder."""
        out = []
        try:
            entries = list(os.scandir(self.artifacts))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                try:
                    out.append((entry.name, entry.stat().st_mtime, tree_bytes(Path(entry.path))))
                except FileNotFoundError:
                    continue
        return out

    @staticmethod
    def _remove_artifacts(path: Path) -> int:
        size = tree_bytes(path)
        if not path.is_dir():
            return 0
        shutil.rmtree(path, ignore_errors=True)
        return size


def _age(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def _size(n: int) -> str:
    for unit, step in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= step:
            return f"{n / step:.1f}{unit}"
    return f"{n}B"
