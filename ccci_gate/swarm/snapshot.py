"""Snapshots of a stack's volumes, swapped in atomically; restore refills them.

A **snapshot** is a directory holding one ``<volume>.tar`` per volume of a stack and a
``meta.json`` (recipe, domain, version, commit, volumes, time). Snapshots of one app
live under a **snapshot root**; ``<root>/current`` is a symlink to the known-good one.
A new snapshot is written beside it and ``current`` is replaced by ``os.replace`` of a
new symlink — atomic — so a crash at any point leaves either the previous snapshot or
the new complete one as ``current``, never a partial one. Leftovers of a crashed
attempt are removed by the next snapshot.

Both refuse to touch a deployed stack: a volume in use is not a consistent copy.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from .port import SwarmError, SwarmPort

CURRENT = "current"


class SnapshotError(SwarmError):
    """A snapshot or restore was refused or failed; nothing known-good was touched."""


def current(root: Path) -> Path | None:
    link = root / CURRENT
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


def _tar(*argv: str) -> None:
    proc = subprocess.run(["tar", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SnapshotError(f"tar {' '.join(argv[:2])}: {proc.stderr.strip()}")


def _refuse_if_deployed(port: SwarmPort, stack: str, what: str) -> None:
    if port.services(stack):
        raise SnapshotError(f"refusing to {what} {stack}: it is deployed (undeploy it first)")


def snapshot(port: SwarmPort, stack: str, root: Path, meta: Mapping[str, Any]) -> Path:
    """Tar every volume of the undeployed ``stack`` into a new snapshot under ``root``
    and make it ``current``; returns its directory."""
    _refuse_if_deployed(port, stack, "snapshot")
    volumes = port.volumes(stack)
    if not volumes:
        raise SnapshotError(f"stack {stack} has no volumes to snapshot")
    root.mkdir(parents=True, exist_ok=True)
    keep = current(root)
    for stale in root.glob("snap-*"):
        if stale.resolve() != keep:
            shutil.rmtree(stale, ignore_errors=True)  # a crashed attempt, or the one before
    new = root / f"snap-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}"
    new.mkdir()
    for name, mountpoint in sorted(volumes.items()):
        _tar("-C", str(mountpoint), "-cf", str(new / f"{name}.tar"), ".")
        _settle(new / f"{name}.tar")
    info = {**meta, "stack": stack, "volumes": sorted(volumes), "time": time.time()}
    (new / "meta.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    _settle(new / "meta.json")
    _fsync_dir(new)
    link = root / f".{CURRENT}.{os.getpid()}"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(new.name)
    os.replace(link, root / CURRENT)   # the atomic swap
    _fsync_dir(root)
    if keep is not None and keep != new.resolve():
        shutil.rmtree(keep, ignore_errors=True)
    return new


def restore(port: SwarmPort, stack: str, snap: Path) -> dict[str, Any]:
    """Clear and refill every volume the snapshot holds; returns its meta."""
    _refuse_if_deployed(port, stack, "restore")
    meta = json.loads((snap / "meta.json").read_text())
    volumes = port.volumes(stack)
    missing = [v for v in meta["volumes"] if v not in volumes]
    if missing:
        raise SnapshotError(f"refusing to restore {stack}: volume(s) {', '.join(missing)} missing")
    for name in meta["volumes"]:
        mountpoint = volumes[name]
        for child in mountpoint.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        _tar("-C", str(mountpoint), "-xpf", str(snap / f"{name}.tar"))
    return meta


def _settle(path: Path) -> None:
    """On disk before the swap (a power cut must not leave ``current`` pointing at
    empty files), and out of the page cache: a snapshot is read again only to restore,
    and its cached pages would otherwise slow the writing of the next one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
