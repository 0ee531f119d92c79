"""The command line as an operator uses it: serve, enqueue, status, SIGHUP, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from conftest import free_port
from e2e_helpers import make_repo, wait_for, write_layout
from test_gatekeeper_e2e import JOBS, PIPELINES, PROJECTS, SCRIPTS

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccci_gate.cli", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


# the check pipeline also reports to a gitea that this gatekeeper has no connection to
GITEA_PIPELINES = PIPELINES.replace("log: {}", "log: {}\n      gitea: {}")


def test_serve_enqueue_status_reload_and_stop(tmp_path):
    make_repo(tmp_path / "repos", "org/recipe", {1: {"README.md": "one\n"}})
    assert "gitea: {}" in GITEA_PIPELINES
    layouts, jobs_dir = write_layout(tmp_path, GITEA_PIPELINES, PROJECTS, JOBS, SCRIPTS)
    port, gport = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "ccci_gate.cli", "serve", "--state-dir", str(tmp_path / "state"),
         "--listen", f"127.0.0.1:{port}", "--gearman-listen", f"127.0.0.1:{gport}",
         "--layout", str(layouts), "--layout", str(jobs_dir), "--jobs-dir", str(jobs_dir),
         "--repos", str(tmp_path / "repos")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = serve.stdout.readline()
        assert f"ccci-gate serving on {url}" in first, first + serve.stderr.read()
        client = ("--url", url, "--state-dir", str(tmp_path / "state"))
        done = cli("enqueue", "--pipeline", "check", "--project", "org/recipe", "--change", "1", *client)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: requests.get(url + "/history.json", timeout=5).json()["items"], 60,
                 "the item to finish")
        [item] = requests.get(url + "/history.json", timeout=5).json()["items"]
        assert item["result"] == "SUCCESS"
        status = cli("status", *client)
        assert status.returncode == 0 and "check [independent]" in status.stdout
        assert "build:build" in status.stdout  # the pool
        # the finished item stays visible, with its result and its page
        recent = status.stdout.split("recently finished\n", 1)[1].splitlines()[0]
        assert "org/recipe#1" in recent and "SUCCESS" in recent, status.stdout
        assert recent.endswith(f"{url}/items/{item['id']}"), status.stdout
        # a second run reports to the unconfigured gitea again
        assert cli("enqueue", "--pipeline", "check", "--project", "org/recipe", "--change", "1",
                   *client).returncode == 0
        wait_for(lambda: len(requests.get(url + "/history.json", timeout=5).json()["items"]) == 2,
                 60, "the second item to finish")
        # `ccci-gate status | head -0`: the reader is gone before the status is printed
        piped = subprocess.Popen([sys.executable, "-m", "ccci_gate.cli", "status", *client],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        piped.stdout.close()
        stderr = piped.stderr.read().decode()
        assert piped.wait(30) == 141 and stderr == "", stderr
        raw = json.loads(cli("status", "--json", *client).stdout)
        assert raw["pipelines"][0]["name"] == "check"
        bad = cli("enqueue", "--pipeline", "nope", "--project", "org/recipe", "--change", "1", *client)
        assert bad.returncode == 1 and "no pipeline 'nope'" in bad.stderr
        no_token = cli("enqueue", "--pipeline", "check", "--project", "org/recipe", "--change", "1",
                       "--url", url, "--state-dir", str(tmp_path / "elsewhere"))
        assert no_token.returncode != 0 and "admin token" in no_token.stderr
        stale = tmp_path / "old-state"
        stale.mkdir()
        (stale / "admin.token").write_text("from-an-older-gatekeeper\n")
        refused = cli("dequeue", "--project", "org/recipe", "--change", "1", "--url", url,
                      "--state-dir", str(stale))
        assert refused.returncode == 1, refused.stderr
        assert f"refused the admin token from {stale / 'admin.token'}" in refused.stderr
        (layouts / "main.yaml").write_text((layouts / "main.yaml").read_text().replace(
            "name: check", "name: check\n    description: after sighup"))
        serve.send_signal(signal.SIGHUP)
        wait_for(lambda: requests.get(url + "/status.json", timeout=5).json()["pipelines"][0]
                 ["description"] == "after sighup", 20, "SIGHUP reload")
        assert cli("reconfigure", *client).returncode == 0
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(30) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
    log = serve.stderr.read()
    # said once at start, not once per report (two items reported start/success above)
    assert log.count("report to 'gitea', which is not configured") == 1, log
    assert "reports to 'gitea'" not in log
    assert " INFO gear." not in log      # gear's per-packet lines are quiet without -v


def test_validate_and_worker_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelines:\n  - name: check\n    manager: nope\n")
    out = cli("validate", str(bad))
    assert out.returncode == 1 and "bad.yaml:3: pipeline check: manager: manager must be one of" in out.stderr
    assert cli("validate", "layouts", "jobs", cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0
    worker = cli("worker", "--gearman", "not-a-port:x", "--jobs", "jobs")
    assert worker.returncode == 2 and "bad port" in worker.stderr


def test_a_busy_port_stops_serve_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for listen, gearman, reason in (
                (f"127.0.0.1:{port}", "127.0.0.1:0",
                 f"HTTP listener on 127.0.0.1:{port}: Address already in use"),
                ("127.0.0.1:0", f"127.0.0.1:{port}", f"embedded Gearman server on 127.0.0.1:{port}")):
            out = cli("serve", "--state-dir", str(tmp_path / "state"), "--listen", listen,
                      "--gearman-listen", gearman, "--no-worker", "--layout", str(ROOT / "layouts"),
                      "--layout", str(ROOT / "jobs"))
            assert out.returncode == 2, out.stderr
            assert out.stderr.startswith(f"ccci-gate: cannot start: {reason}"), out.stderr
            assert out.stderr.count("\n") == 1, out.stderr
