"""Fault-injection recipes: a two-service recipe (``app`` serving HTTP, a ``sidecar``)
built from a Python description, so each test states one fault as one change of the
head against the base. Images come from ``docker import`` (``recipe_helpers``).

The recipe ships ``tests/ccci-seed`` and ``tests/ccci-verify`` that write a note
through the running app and read it back: data survival asked of the app."""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Callable

import yaml

from git_helpers import git
from recipe_helpers import build_image

SERVE = ["httpd", "-f", "-p", "8080", "-h", "/www"]
IDLE = ["sh", "-c", "while true; do sleep 1; done"]
HEALTH = {"interval": "1s", "timeout": "2s", "retries": 2}

SEED = """\
#!/bin/sh
# seed a note through the running app
set -e
c=$(docker ps -q -f "label=com.docker.swarm.service.name=${STACK_NAME}_app" | head -n1)
docker exec "$c" sh -c 'echo kept > /data/note'
echo "seeded a note in ${STACK_NAME}"
"""
VERIFY = """\
#!/bin/sh
# the note seeded before the upgrade, read back through the app
c=$(docker ps -q -f "label=com.docker.swarm.service.name=${STACK_NAME}_app" | head -n1)
test "$(docker exec "$c" cat /data/note)" = kept || { echo "the note is gone"; exit 1; }
echo "the note survived"
"""


def build_health_image(test: list[str], interval: int, retries: int) -> str:
    """``ccci-test/busybox:3`` with a ``HEALTHCHECK`` of its own (none in the compose),
    built offline by the classic builder; idempotent."""
    import hashlib
    import json
    digest = hashlib.sha256(json.dumps(test).encode()).hexdigest()[:8]
    name = f"ccci-test/busybox:health-{interval}x{retries}-{digest}"
    if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
        return name
    dockerfile = (f"FROM {build_image('3')}\nHEALTHCHECK --interval={interval}s --timeout=2s "
                  f"--retries={retries} CMD {json.dumps(test)}\n")
    subprocess.run(["docker", "build", "-q", "-t", name, "-"], input=dockerfile.encode(),
                   check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return name


def base_compose(version: str, image: str, settle: int = 6) -> dict[str, Any]:
    """Release ``version``: app (httpd on :8080, volume data at /data, a secret) and a
    sidecar, both with healthchecks and ``failure_action: rollback``."""
    update = {"failure_action": "rollback", "monitor": "4s", "order": "stop-first"}
    return {
        "version": "3.8",
        "services": {
            "app": {
                "image": image, "command": list(SERVE), "stop_grace_period": "1s",
                "healthcheck": {"test": ["CMD", "wget", "-q", "-O", "/dev/null",
                                         "http://127.0.0.1:8080/"], **HEALTH},
                "volumes": ["data:/data"], "secrets": ["db_password"],
                "deploy": {"update_config": dict(update), "labels": [
                    f"coop-cloud.${{STACK_NAME}}.version={version}",
                    "coop-cloud.${STACK_NAME}.timeout=60",
                    f"ccci.settle={settle}",
                    "traefik.http.services.${STACK_NAME}.loadbalancer.server.port=8080"]},
            },
            "sidecar": {
                "image": image, "command": list(IDLE), "stop_grace_period": "1s",
                "healthcheck": {"test": ["CMD", "true"], **HEALTH},
                "deploy": {"update_config": dict(update)},
            },
        },
        "volumes": {"data": None},
        "secrets": {"db_password": {"external": True, "name":
                                    "${STACK_NAME}_db_password_${SECRET_DB_PASSWORD_VERSION}"}},
    }


def write(repo: Path, compose: dict[str, Any], version: str, files: dict[str, str] | None = None,
          env: str = "") -> None:
    (repo / "compose.yml").write_text(yaml.safe_dump(compose, sort_keys=False))
    (repo / ".env.sample").write_text(textwrap.dedent("""\
        TYPE=faulty
        DOMAIN=faulty.example.com
        COMPOSE_FILE="compose.yml"
        SECRET_DB_PASSWORD_VERSION=v1
        """) + env)
    (repo / "release").mkdir(exist_ok=True)
    (repo / "release" / version).write_text(f"Release {version}.\n")
    tests = repo / "tests"
    tests.mkdir(exist_ok=True)
    for name, text in (("ccci-seed", SEED), ("ccci-verify", VERIFY)):
        (tests / name).write_text(text)
        (tests / name).chmod(0o755)
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)


def make_faulty(root: Path, fault: Callable[[dict[str, Any]], None] | None = None,
                files: dict[str, str] | None = None, env: str = "",
                base_files: dict[str, str] | None = None,
                base: Callable[[dict[str, Any]], None] | None = None,
                base_env: str = "") -> tuple[Path, str]:
    """A recipe repo with releases 1.0.0+1, 1.1.0+1 (images :1, :2) and a pull request
    ``refs/pull/1/head`` at 1.2.0+1 (image :3) with ``fault`` applied to its compose
    (``base``/``base_files``/``base_env`` shape every commit, ``files``/``env`` the head).
    Returns the repo and the head's sha."""
    repo = root / "coop-cloud" / "faulty"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for version, tag in (("1.0.0+1", "1"), ("1.1.0+1", "2")):
        compose = base_compose(version, build_image(tag))
        if base:
            base(compose)
        write(repo, compose, version, base_files, base_env)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"release {version}")
        git(repo, "tag", version)
    git(repo, "checkout", "-q", "-B", "pr1", "main")
    compose = base_compose("1.2.0+1", build_image("3"))
    if base:
        base(compose)
    if fault:
        fault(compose)
    write(repo, compose, "1.2.0+1", {**(base_files or {}), **(files or {})}, env)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the change under test")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", "refs/pull/1/head", sha)
    git(repo, "checkout", "-q", "main")
    return repo, sha
