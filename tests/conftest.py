"""Shared test fixtures: the real-component guards used by every area's tests."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def require(condition: bool, what: str) -> None:
    """Skip when ``what`` is missing on a laptop; fail under CI, where it must exist."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI but is not available")
    pytest.skip(f"{what} not available")


def docker_ready() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "active"


@pytest.fixture
def gearmand_bin() -> str:
    path = shutil.which("gearmand") or ("/usr/sbin/gearmand" if os.path.exists("/usr/sbin/gearmand") else None)
    require(path is not None, "gearmand (Debian gearman-job-server)")
    return path  # type: ignore[return-value]


@pytest.fixture
def docker_swarm() -> None:
    require(docker_ready(), "a Docker Engine with an active swarm")
