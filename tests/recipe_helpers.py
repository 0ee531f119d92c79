"""A Co-op Cloud test recipe for the Swarm job kinds: an offline image built with
``docker import`` from Debian's busybox-static, and a recipe git repository with two
release tags, ``release/`` notes, a healthcheck, a volume, a secret and abra's labels."""
from __future__ import annotations

import io
import subprocess
import tarfile
import textwrap
import time
from pathlib import Path

from ccci_gate.core.layout import JobConfig
from ccci_gate.worker.kinds import BuildContext

from e2e_helpers import admin, admin_pipeline, finished, start_gatekeeper, wait_for
from git_helpers import git

IMAGE = "ccci-test/busybox"
APPLETS = ("sh", "httpd", "wget", "cat", "echo", "mkdir", "sleep", "test", "ls", "true",
           "false", "tar", "rm")

COMPOSE = """\
version: "3.8"
services:
  app:
    image: {image}
    command: {command}
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 2
    stop_grace_period: 1s
    volumes:
      - data:/data
    secrets:
      - db_password
    deploy:
      update_config:
        failure_action: rollback
        monitor: 4s
        order: stop-first
      labels:
        - "coop-cloud.${{STACK_NAME}}.version={version}"
        - "coop-cloud.${{STACK_NAME}}.timeout=60"
        - "ccci.settle=5"
        - "traefik.http.services.${{STACK_NAME}}.loadbalancer.server.port=8080"
volumes:
  data:
secrets:
  db_password:
    external: true
    name: ${{STACK_NAME}}_db_password_${{SECRET_DB_PASSWORD_VERSION}}
"""
GOOD = '["httpd", "-f", "-p", "8080", "-h", "/www"]'
CRASH = '["sh", "-c", "exit 3"]'
UNHEALTHY = '["httpd", "-f", "-p", "9090", "-h", "/www"]'   # the healthcheck asks :8080


def build_image(tag: str) -> str:
    """``<IMAGE>:<tag>``, imported offline (idempotent)."""
    name = f"{IMAGE}:{tag}"
    if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
        return name
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for directory in ("tmp", "data", "www", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(info)
        page = f"hello from {tag}\n".encode()
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    subprocess.run(["docker", "import", "-", name], input=buf.getvalue(), check=True,
                   capture_output=True)
    return name


def write_release(repo: Path, version: str, image: str, command: str = GOOD,
                  extra_env: str = "") -> None:
    (repo / "compose.yml").write_text(COMPOSE.format(image=image, command=command, version=version))
    (repo / ".env.sample").write_text(textwrap.dedent(f"""\
        TYPE=hello
        DOMAIN=hello.example.com
        COMPOSE_FILE="compose.yml"
        SECRET_DB_PASSWORD_VERSION=v1
        {extra_env}"""))
    (repo / "abra.sh").write_text("export APP_ENTRYPOINT_VERSION=v1\n")
    (repo / "release").mkdir(exist_ok=True)
    (repo / "release" / version).write_text(f"Release {version}.\n")
    check = repo / "tests" / "ccci-check"     # the recipe's own check, run by systest
    check.parent.mkdir(exist_ok=True)
    check.write_text('#!/bin/sh\necho "recipe check of $STACK_NAME at $DOMAIN"\n'
                     'test -n "$STACK_NAME"\n')
    check.chmod(0o755)


def make_recipe(root: Path, name: str = "hello") -> Path:
    """A recipe repo: tags 1.0.0+1 and 1.1.0+1 on main (images :1 and :2)."""
    repo = root / "coop-cloud" / name
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for version, tag in (("1.0.0+1", "1"), ("1.1.0+1", "2")):
        write_release(repo, version, build_image(tag))
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"release {version}")
        git(repo, "tag", version)
    return repo


def commit_head(repo: Path, version: str, image: str, command: str = GOOD,
                number: int = 1, message: str = "a change") -> str:
    """A pull request head on top of main: ``refs/pull/<number>/head``."""
    git(repo, "checkout", "-q", "-B", f"pr{number}", "main")
    write_release(repo, version, image, command)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", f"refs/pull/{number}/head", sha)
    git(repo, "checkout", "-q", "main")
    return sha


def checkout(repo: Path, dest: Path, ref: str) -> Path:
    """A workspace as the worker makes it: the project checked out at ``ref``."""
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True)
    git(dest, "fetch", "-q", "origin", f"+{ref}:refs/ccci/head")
    git(dest, "checkout", "-q", "--detach", "refs/ccci/head")
    return dest


def context(workspace: Path, job: str, recipe: str = "hello", **params: str
            ) -> tuple[BuildContext, list[str]]:
    """A build context for a kind run directly; the log lands in the returned list."""
    lines: list[str] = []
    ctx = BuildContext(JobConfig(job), {"RECIPE": recipe, "ZUUL_BRANCH": "main", **params},
                       workspace, lines.append, deadline=time.monotonic() + 300)
    return ctx, lines


TRY = admin_pipeline("try")
ROOT = Path(__file__).resolve().parents[1]


def run_graph(tmp_path: Path, repo_root: Path, number: int,
              project: str = "coop-cloud/hello") -> dict:
    """The default graph (build → publish → install → systest) of ``project``'s pull
    request ``number`` through a real gatekeeper; the finished item, with its logs."""
    extra = tmp_path / "extra"
    extra.mkdir(exist_ok=True)
    (extra / "try.yaml").write_text(TRY + textwrap.dedent(f"""
        projects:
          - name: {project}
            try: [build, publish, install, systest]
        """))
    gk = start_gatekeeper(tmp_path, extra, ROOT / "jobs", repo_root,
                          layout=[str(ROOT / "jobs"), str(extra)])
    try:
        reply = admin(gk, "/admin/enqueue", {"pipeline": "try", "project": project,
                                             "change": number})
        assert reply.status_code in (200, 202), reply.text
        [item] = finished(gk, timeout=300)
        ids = [j["id"] for j in item["jobs"] if j["id"] and gk.logs.state(j["id"])]
        # the last chunk may come after the result handed over HTTP: until it is finished
        wait_for(lambda: all(gk.logs.state(i) == "finished" for i in ids), 30, "the logs")
        item["logs"] = {j["name"]: gk.logs.read(j["id"]).decode("utf-8", "replace")
                        for j in item["jobs"] if j["id"] in ids}
        return item
    finally:
        gk.stop()
