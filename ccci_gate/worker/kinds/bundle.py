"""The recipe bundle: what ``publish`` stores and ``install``/``systest`` deploy.

A **bundle** is a reproducible ``tar.gz`` of everything a deploy reads from the recipe —
the compose files ``COMPOSE_FILE`` names (every overlay), each file they reference
(``configs``/``secrets`` ``file:``, ``env_file``), ``.env.sample``, ``abra.sh``,
``release/`` and ``tests/`` — plus a ``SHA256SUMS`` manifest checked on unpacking. It
lives in the gatekeeper's artifact store (``CCCI_ARTIFACTS``, write-once, written with
the buildset's ``CCCI_ARTIFACTS_TOKEN``: ``web/artifacts.py``), so every host deploys
exactly what build checked.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import requests

from ...swarm.recipe import Recipe, RecipeError

BUNDLE = "recipe-bundle.tar.gz"


def bundle_files(recipe: Recipe) -> list[Path]:
    """The files of the bundle, each inside the recipe folder."""
    root = recipe.path.resolve()
    files = [p for p in recipe.compose_files() if p.exists()]
    for name in [".env.sample", "abra.sh", *recipe.referenced_files()]:
        path = (recipe.path / name)
        if not path.resolve().is_relative_to(root):
            raise RecipeError(f"{name}: referenced by the compose files but outside the recipe")
        if path.is_file():
            files.append(path)
    for folder in ("release", "tests"):
        if (recipe.path / folder).is_dir():
            files += sorted(p for p in (recipe.path / folder).rglob("*") if p.is_file())
    return sorted(set(files), key=lambda p: str(p.relative_to(recipe.path)))


def make_bundle(recipe: Recipe) -> bytes:
    """A reproducible tar.gz of the recipe's deployable files plus ``SHA256SUMS``."""
    files = bundle_files(recipe)
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(recipe.path)}\n"
                   for p in files)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            _add(tar, str(path.relative_to(recipe.path)), path.read_bytes(),
                 executable=os.access(path, os.X_OK))
        _add(tar, "SHA256SUMS", sums.encode())
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o755 if executable else 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def unpack_bundle(data: bytes, dest: Path) -> None:
    """Extract a bundle and check every file against its ``SHA256SUMS``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    for line in (dest / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        if hashlib.sha256((dest / name).read_bytes()).hexdigest() != digest:
            raise RecipeError(f"bundle file {name} does not match its checksum")


class StoreError(RuntimeError):
    """The artifact store is missing or failed (an infrastructure error)."""


def publish(url: str, data: bytes, token: str) -> str:
    """Store a bundle at ``<url>/recipe-bundle.tar.gz`` with the buildset's write token;
    returns where it went."""
    if not url.startswith(("http://", "https://")):
        raise StoreError("no artifact store (CCCI_ARTIFACTS) to publish to")
    try:
        reply = requests.put(f"{url}/{BUNDLE}", data=data, timeout=60,
                             headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        raise StoreError(f"publishing failed: {exc}") from None
    if reply.status_code not in (201, 409):
        raise StoreError(f"the artifact store answered {reply.status_code}: {reply.text[:200]}")
    return f"{url}/{BUNDLE}"


def fetch(url: str) -> bytes | None:
    """The published bundle, or None when none was published."""
    if not url.startswith(("http://", "https://")):
        return None
    try:
        reply = requests.get(f"{url}/{BUNDLE}", timeout=60)
    except requests.RequestException as exc:
        raise StoreError(f"fetching the bundle failed: {exc}") from None
    return reply.content if reply.status_code == 200 else None
