"""Running git safely: argv lists only, no prompts, a fixed identity, clear errors.

The one home of the git helpers the merger (speculative refs) and the worker (build
workspaces, recipe job kinds) both use; neither imports the other for them.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "ccci-gate", "GIT_AUTHOR_EMAIL": "ccci-gate@localhost",
    "GIT_COMMITTER_NAME": "ccci-gate", "GIT_COMMITTER_EMAIL": "ccci-gate@localhost",
    "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
}


class GitError(RuntimeError):
    """A git command failed; the message has its stderr."""


def check_project(name: str) -> str:
    """A project name safe to use as a path below a root (no ``..``, no leading ``/`` or ``-``)."""
    if not PROJECT_NAME.match(name) or ".." in name.split("/") or name.endswith(".."):
        raise GitError(f"invalid project name {name!r}")
    return name


def check_ref(ref: str) -> str:
    """A ref name git accepts (user text: branch names come from webhooks)."""
    if ref.startswith("-") or subprocess.run(
            ["git", "check-ref-format", "--allow-onelevel", ref],
            capture_output=True).returncode != 0:
        raise GitError(f"invalid ref name {ref!r}")
    return ref


def git(repo: Path | None, *args: str, timeout: float = 300, check: bool = True,
        input: bytes | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    """Run ``git -C repo args...``; raise :class:`GitError` on failure when ``check``.
    ``env`` adds variables (e.g. commit dates) to the fixed git environment."""
    argv = ["git"] + (["-C", str(repo)] if repo is not None else []) + list(args)
    env = {**os.environ, **GIT_ENV, **(env or {})}
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, input=input)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed: {' / '.join(err[-3:]) or proc.returncode}")
    return proc


def out(repo: Path | None, *args: str, **kwargs) -> str:
    return git(repo, *args, **kwargs).stdout.decode("utf-8", "replace").strip()
