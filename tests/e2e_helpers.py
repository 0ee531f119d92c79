"""Helpers for end-to-end tests: a real gatekeeper on real git repos and real Gearman."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import requests

from ccci_gate.app import Gatekeeper
from ccci_gate.settings import load_settings

from git_helpers import git, make_repo  # noqa: F401 - re-exported for tests
from waiting import free_port, wait_for  # noqa: F401 - re-exported for tests

def admin_pipeline(name: str, manager: str = "independent", retest_on_merge: bool = False) -> str:
    """Layout YAML of a pipeline fed only by the admin API, reporting to the log."""
    return textwrap.dedent(f"""
        pipelines:
          - name: {name}
            manager: {manager}
            retest-on-merge: {str(retest_on_merge).lower()}
            trigger:
              admin: []
            success:
              log: {{}}
            failure:
              log: {{}}
        """)


def write_layout(root: Path, pipelines: str, projects: str, jobs: str,
                 scripts: dict[str, str]) -> tuple[Path, Path]:
    """Write a layout dir and a jobs dir (with executable scripts); return both."""
    layouts, jobs_dir = root / "layouts", root / "jobs"
    (jobs_dir / "scripts").mkdir(parents=True)
    layouts.mkdir()
    (layouts / "main.yaml").write_text(textwrap.dedent(pipelines) + textwrap.dedent(projects))
    (jobs_dir / "jobs.yaml").write_text(textwrap.dedent(jobs))
    for name, body in scripts.items():
        path = jobs_dir / "scripts" / name
        path.write_text("#!/bin/sh\nset -eu\n" + textwrap.dedent(body))
        path.chmod(0o755)
    return layouts, jobs_dir


def start_gatekeeper(tmp: Path, layouts: Path, jobs_dir: Path, repos: Path,
                     **overrides: Any) -> Gatekeeper:
    raw: dict[str, Any] = {
        "state-dir": str(tmp / "state"), "listen": "127.0.0.1:0",
        "gearman-listen": "127.0.0.1:0", "layout": [str(layouts), str(jobs_dir)],
        "jobs-dir": str(jobs_dir), "repos": str(repos),
    }
    raw.update(overrides)
    gk = Gatekeeper(load_settings(None, raw))
    gk.start()
    return gk


def admin(gk: Gatekeeper, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(gk.web_url + path, json=body, timeout=10,
                         headers={"Authorization": f"Bearer {gk.admin_token}"})




def finished(gk: Gatekeeper, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Wait until ``count`` items finished; return their stored summaries, oldest first."""
    rows = wait_for(lambda: len(gk.store.history()) >= count and gk.store.history(),
                    timeout, f"{count} finished items")
    return [gk.store.item(r["id"]) for r in reversed(rows)]


def job_results(summary: dict[str, Any]) -> dict[str, str]:
    return {j["name"]: j["result"] for j in summary["jobs"]}


def worker_process(servers: str, jobs_dir: Path, workdir: Path, name: str,
                   *labels: str) -> subprocess.Popen:
    """``ccci-gate worker`` in its own process (a second host, as far as it knows)."""
    argv = [sys.executable, "-m", "ccci_gate.cli", "worker", "--gearman", servers,
            "--jobs", str(jobs_dir), "--workdir", str(workdir), "--name", name]
    for label in labels:
        argv += ["--label", label]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
