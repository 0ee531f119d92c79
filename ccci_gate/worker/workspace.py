"""A build's workspace: a fresh directory with the project checked out at ``ZUUL_REF``.

The ref is fetched from ``ZUUL_URL/ZUUL_PROJECT`` over the network (the gatekeeper's
git HTTP endpoint), never through a shared filesystem.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Mapping

from ..git import GitError, check_project, check_ref, git, out


class WorkspaceError(RuntimeError):
    """The workspace could not be prepared (an infra problem, not the change's)."""


def prepare_workspace(path: Path, params: Mapping[str, str], log: Callable[[str], None]) -> None:
    """Create ``path`` and, when the build has a ref, check the project out there."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    url, project, ref = params.get("ZUUL_URL"), params.get("ZUUL_PROJECT"), params.get("ZUUL_REF")
    if not (url and project and ref):
        return
    try:
        check_project(project)
        check_ref(ref)
        git(None, "init", "-q", str(path))
        git(path, "fetch", "-q", "--no-tags", "--", f"{url.rstrip('/')}/{project}", ref,
            timeout=600)
        git(path, "checkout", "-q", "--detach", "FETCH_HEAD")
        head = out(path, "rev-parse", "HEAD")
    except GitError as exc:
        raise WorkspaceError(str(exc)) from None
    expected = params.get("ZUUL_COMMIT")
    if expected and head != expected:
        raise WorkspaceError(f"fetched {head}, expected {expected}")
    log(f"checked out {project} {ref} at {head}\n")
