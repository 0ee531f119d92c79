"""Warm canonicals: one known-good, data-warm deployment per enrolled recipe on a host.

The **warm root** (``CCCI_WARM_ROOT``, default ``<CCCI_SWARM_STATE>/warm``) holds, per
recipe, a folder ``<root>/<recipe>/``:

- ``record.json``: the registry record (recipe, version, commit, domain, stack, status,
  time, and what the last run on it did). ``status`` is ``ready``, ``seeding``,
  ``quick`` (a quick run holds it) or ``broken`` (a restore failed: quick falls back to
  cold until a promotion re-seeds it).
- ``snapshots/``: the known-good snapshot (``swarm.snapshot``: every volume tarred while
  undeployed, ``current`` swapped atomically). Its ``meta.json`` names the **good**
  beside it, so the snapshot and what it needs can never disagree.
- ``goods/<id>/``: what redeploys the known-good: ``bundle.tar.gz`` (the recipe files of
  its version, the publish bundle format), ``secrets.json`` (the app's generated
  secrets, mode 0600: the data in the volumes may depend on them) and ``hook-state.tar``
  (what ``tests/ccci-seed`` left for ``tests/ccci-verify``).
- ``last_good.json``: the last completed promotion; written only after a swap succeeded,
  never by a snapshot, so a failed or half-done promotion leaves it as it was.
- ``lock``: a ``flock`` held by whoever touches the canonical (a quick run, a
  promotion, ``warm drop``): two runs never touch one canonical at once.

The canonical's app is ``warm-<recipe>.<base domain>`` (stack ``warm-<recipe>_ci_local``):
short enough for swarm's 64-character secret names and never a cold run's name (those
are ``<recipe[:4]>-<6 hex>``). No lease is ever taken for it, so the janitor never
reaps it.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..disk import tree_bytes
from .host import default_state
from .port import SwarmError, SwarmPort
from .recipe import Recipe, stack_name
from .snapshot import current

SLUG_MAX = 16
COLD = re.compile(r"^[a-z0-9]{1,4}-[0-9a-f]{6}$")   # recipe.run_domain's first label


class WarmError(SwarmError):
    """The canonical is missing, locked or broken; the message says which."""


def default_root() -> Path:
    return Path(os.environ.get("CCCI_WARM_ROOT") or default_state() / "warm")


def slug(recipe: str) -> str:
    """A recipe name as a short DNS label: ``[a-z0-9-]``, at most 16 characters (a
    longer name keeps its start and a hash of the whole)."""
    text = re.sub(r"[^a-z0-9-]+", "-", recipe.lower()).strip("-") or "app"
    if len(text) > SLUG_MAX:
        text = text[:SLUG_MAX - 5].rstrip("-") + "-" + hashlib.sha256(recipe.encode()).hexdigest()[:4]
    return text


def canonical_domain(recipe: str, base: str = "ci.local") -> str:
    """``warm-<recipe>.<base>``; never the shape of a cold run's domain."""
    label = f"warm-{slug(recipe)}"
    if COLD.match(label):          # "warm-" + six hex digits: a cold run of recipe "warm"
        label += "-w"
    return f"{label}.{base}"


def tree_digest(root: Path) -> str:
    """A digest of a folder's names, modes and bytes."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(oct(path.lstat().st_mode).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def volumes_digest(port: SwarmPort, stack: str) -> dict[str, str]:
    return {name: tree_digest(path) for name, path in sorted(port.volumes(stack).items())}


def _write_json(path: Path, data: Mapping[str, Any], mode: int = 0o644) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def secret_names(recipe: Recipe) -> list[str]:
    """The external secrets the recipe's compose config names (what ``App.create_secrets``
    would generate)."""
    config, _ = recipe.render()
    names = []
    for key, spec in sorted((config.get("secrets") or {}).items()):
        spec = spec or {}
        if spec.get("external"):
            names.append(spec.get("name") or f"{recipe.stack}_{key}")
    return names


@dataclass
class Canonical:
    """One recipe's canonical under a warm root."""

    root: Path
    recipe: str

    @property
    def dir(self) -> Path:
        return self.root / slug(self.recipe)

    @property
    def snapshots(self) -> Path:
        return self.dir / "snapshots"

    def domain(self, base: str = "ci.local") -> str:
        return canonical_domain(self.recipe, base)

    def stack(self, base: str = "ci.local") -> str:
        return stack_name(self.domain(base))

    # --- the registry record ---------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        return _read_json(self.dir / "record.json")

    def set_record(self, **fields: Any) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        record = {**self.record(), "recipe": self.recipe, **fields, "time": time.time()}
        _write_json(self.dir / "record.json", record)
        return record

    def last_good(self) -> dict[str, Any]:
        return _read_json(self.dir / "last_good.json")

    # --- the known-good -----------------------------------------------------------------------

    def known_good(self) -> dict[str, Any] | None:
        """The current snapshot's meta (recipe, version, commit, domain, good, volumes),
        or None when there is no complete known-good."""
        snap = current(self.snapshots)
        if snap is None:
            return None
        meta = _read_json(snap / "meta.json")
        good = self.dir / "goods" / str(meta.get("good", ""))
        if not meta.get("good") or not (good / "bundle.tar.gz").is_file():
            return None
        return {**meta, "snapshot": str(snap), "good_dir": str(good)}

    def unusable(self) -> str:
        """Why a quick run cannot use this canonical ('' when it can)."""
        if not self.dir.is_dir():
            return f"no canonical of {self.recipe} on this host (never seeded here)"
        if self.known_good() is None:
            return f"the canonical of {self.recipe} has no complete known-good snapshot"
        if self.record().get("status") == "broken":
            return (f"the canonical of {self.recipe} is broken ({self.record().get('why', '')});"
                    f" a promotion re-seeds it")
        return ""

    def new_good(self, bundle: bytes, secret_values: Mapping[str, str], hook_state: Path
                 ) -> str:
        """Store what redeploys a new known-good; returns its id (named in the snapshot)."""
        good_id = f"g{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}"
        good = self.dir / "goods" / good_id
        good.mkdir(parents=True)
        (good / "bundle.tar.gz").write_bytes(bundle)
        _write_json(good / "secrets.json", dict(secret_values), mode=0o600)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(str(hook_state), arcname=".")
        (good / "hook-state.tar").write_bytes(buf.getvalue())
        return good_id

    def prune_goods(self) -> None:
        """Remove goods no snapshot names any more (a superseded or failed promotion)."""
        keep = (self.known_good() or {}).get("good")
        for good in (self.dir / "goods").glob("*") if (self.dir / "goods").is_dir() else []:
            if good.name != keep:
                shutil.rmtree(good, ignore_errors=True)

    def promoted(self, meta: Mapping[str, Any]) -> None:
        """Record a completed promotion (after the snapshot swap)."""
        fields = {k: meta.get(k, "") for k in ("version", "commit", "domain", "stack", "good")}
        _write_json(self.dir / "last_good.json", {"recipe": self.recipe, **fields,
                                                 "time": time.time()})
        self.set_record(**fields, status="ready", why="")

    # --- the lock -------------------------------------------------------------------------------

    @contextmanager
    def lock(self, wait: Callable[[], bool] = lambda: True, timeout: float = 600.0,
             log: Callable[[str], None] = print) -> Iterator[None]:
        """Hold the canonical alone; waits while another run holds it, up to ``timeout``
        (then ``WarmError``); ``wait()`` False gives up at once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            deadline = time.monotonic() + timeout
            said = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not said:
                        log(f"waiting for the canonical of {self.recipe}: another run holds it\n")
                        said = True
                    if not wait() or time.monotonic() > deadline:
                        raise WarmError(f"the canonical of {self.recipe} stayed locked by "
                                        f"another run for {timeout:.0f}s") from None
                    time.sleep(0.3)
            yield
        finally:
            os.close(fd)   # releases the flock


def canonicals(root: Path) -> list[Canonical]:
    """Every canonical under ``root`` (by its record's recipe name)."""
    found = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        record = _read_json(folder / "record.json")
        if folder.is_dir() and record.get("recipe"):
            found.append(Canonical(root, record["recipe"]))
    return found


def disk_usage(path: Path) -> int:
    """Bytes of the files under ``path`` (:func:`ccci_gate.disk.tree_bytes`: symlinks not
    followed, a file removed during the walk skipped)."""
    return tree_bytes(path)


USAGE_TTL = 600.0       # seconds a cached disk use is trusted even if nothing changed
_usage: dict[Path, tuple[tuple[int, ...], float, int]] = {}


def canonical_bytes(canonical: Canonical) -> int:
    """``disk_usage`` of the canonical's folder, cached in this process: walked again
    only when the folder, its ``goods/`` or ``snapshots/`` changed (a promotion, a quick
    run's record, a drop: each replaces an entry there) or after ``USAGE_TTL``."""
    folder = canonical.dir
    key = tuple(_mtime(p) for p in (folder, folder / "goods", folder / "snapshots"))
    cached = _usage.get(folder)
    if cached is not None and cached[0] == key and time.monotonic() - cached[1] < USAGE_TTL:
        return cached[2]
    size = disk_usage(folder) if folder.is_dir() else 0
    _usage[folder] = (key, time.monotonic(), size)
    return size


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def restore_secrets(port: SwarmPort, stack: str, good: Path) -> list[str]:
    """Create the known-good's secrets with their stored values, on a stack purged
    (volumes kept) just before: the values the data in the volumes was made with."""
    values = _read_json(good / "secrets.json")
    for name, value in sorted(values.items()):
        port.create_secret(name, value.encode(), stack)
    return sorted(values)


def unpack_hook_state(good: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(good / "hook-state.tar") as tar:
        tar.extractall(dest, filter="data")
    return dest


def drop(port: SwarmPort, canonical: Canonical, base: str = "ci.local") -> list[str]:
    """Remove a canonical: its app, volumes and secrets, and its folder; returns what
    was freed."""
    with canonical.lock(timeout=60):
        stack = canonical.record().get("stack") or canonical.stack(base)
        left = port.leftovers(stack)
        port.purge(stack)
        size = disk_usage(canonical.dir)
        shutil.rmtree(canonical.dir)
    return [f"{kind}: {', '.join(names)}" for kind, names in sorted(left.items())] + [
        f"{size} bytes of warm data"]


def listing(root: Path) -> list[dict[str, Any]]:
    """What ``ccci-gate warm list`` shows: each canonical's record, known-good and disk use."""
    rows = []
    for canonical in canonicals(root):
        record, good = canonical.record(), canonical.known_good() or {}
        rows.append({"recipe": canonical.recipe, "status": record.get("status", ""),
                     "stack": record.get("stack", ""), "domain": record.get("domain", ""),
                     "version": good.get("version", ""), "commit": good.get("commit", ""),
                     "time": record.get("time", 0), "last_good": canonical.last_good(),
                     "last_quick": record.get("last_quick", {}),
                     "bytes": canonical_bytes(canonical)})
    return rows


def enrolled_recipes(layout: Any) -> set[str]:
    """The recipes a layout enrols: the last path part of each ``warm: true`` project
    (the ``RECIPE`` the shipped jobs give builds)."""
    return recipes_of(layout.enrolled())


def recipes_of(projects: Iterable[str]) -> set[str]:
    """The recipe names of enrolled projects (``owner/name`` → ``name``)."""
    return {name.rsplit("/", 1)[-1] for name in projects if name}


def prune(port: SwarmPort, root: Path, enrolled: set[str],
          log: Callable[[str], None] = print) -> list[str]:
    """Drop the canonical of every recipe not in ``enrolled`` (its app, volumes, secrets
    and warm data), logging what was freed; returns the recipes dropped."""
    dropped = []
    for canonical in canonicals(root):
        if canonical.recipe in enrolled:
            continue
        for line in drop(port, canonical):
            log(f"prune: {canonical.recipe} is no longer enrolled: freed {line}\n")
        dropped.append(canonical.recipe)
    return dropped
