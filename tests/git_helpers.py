"""Real git repositories for tests: a project with ``main`` and pull request refs."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def make_repo(root: Path, project: str, pulls: dict[int, dict[str, str]] | None = None) -> Path:
    """A repository at ``root/project`` with ``main`` and ``refs/pull/N/head`` refs.

    ``pulls`` maps a PR number to files its one commit adds on top of main.
    """
    repo = root / project
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "compose.yml").write_text("version: '3.8'\nservices:\n  app:\n    image: x:1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    for number, files in (pulls or {}).items():
        git(repo, "checkout", "-q", "-b", f"pr{number}", "main")
        for name, text in files.items():
            (repo / name).write_text(text)
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"change {number}")
        git(repo, "update-ref", f"refs/pull/{number}/head", "HEAD")
        git(repo, "checkout", "-q", "main")
    return repo


