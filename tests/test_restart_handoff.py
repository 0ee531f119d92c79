"""A build that finishes while the gatekeeper is down is not run again: its worker hands
the result over HTTP, by build id, to the gatekeeper that comes back (``handoff.py``).

On gearmand, which outlives the gatekeeper: a build is running, the gatekeeper stops, the
build ends (its WORK_COMPLETE finds no client: gearmand drops it), a gatekeeper starts on
the same state and address — and the item finishes on that one run.
"""
from __future__ import annotations

import socket
import subprocess

import requests

from waiting import free_port
from e2e_helpers import (admin, admin_pipeline, finished, make_repo, start_gatekeeper,
                         wait_for, worker_process, write_layout)

PROJECTS = """
projects:
  - name: org/a
    check: [hold]
"""
JOBS = """
jobs:
  - name: hold
    run: scripts/hold.sh
"""




def test_a_build_that_ends_while_the_gatekeeper_is_down_is_not_run_again(tmp_path, gearmand_bin):
    runs, hold = tmp_path / "runs", tmp_path / "hold"
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), PROJECTS, JOBS, {
        "hold.sh": f'echo "$ZUUL_UUID" >> "{runs}"\n'
                   f'while [ -e "{hold}" ]; do sleep 0.05; done\necho done\n'})
    repos = tmp_path / "repos"
    make_repo(repos, "org/a", {1: {"a.txt": "a\n"}})
    gport, web = free_port(), free_port()
    gearmand = subprocess.Popen([gearmand_bin, "-L", "127.0.0.1", "-p", str(gport),
                                 "--log-file", "none"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    settings = {"gearman": [f"127.0.0.1:{gport}"], "listen": f"127.0.0.1:{web}",
                "worker": {"enabled": False}}
    gk = None
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", gport)) == 0, 10, "gearmand")
        worker = worker_process(f"127.0.0.1:{gport}", jobs_dir, tmp_path / "work", "w1")
        gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, **settings)
        wait_for(lambda: gk.dispatcher.pool()["functions"].get("build:hold", {}).get("workers"),
                 30, "the worker")
        hold.touch()
        assert admin(gk, "/admin/enqueue", {"pipeline": "check", "project": "org/a",
                                             "change": 1}).status_code == 202
        wait_for(runs.exists, 30, "the build to start")
        gk.stop()                                  # the gatekeeper goes away...
        hold.unlink()                              # ... and the build ends meanwhile
        gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, **settings)
        [item] = finished(gk, 1, timeout=60)
        assert item["result"] == "SUCCESS"
        assert len(runs.read_text().split()) == 1, "the build ran again"
        [job] = item["jobs"]
        assert job["message"] == "result handed over HTTP"
    finally:
        hold.unlink(missing_ok=True)
        if gk is not None:
            gk.stop()
        for proc in (worker, gearmand):
            if proc is not None:
                proc.kill()
                proc.wait(10)


def test_the_result_endpoint_wants_the_builds_own_token(tmp_path):
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), PROJECTS, JOBS,
                                     {"hold.sh": "true\n"})
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, tmp_path / "repos",
                          worker={"enabled": False})
    try:
        build = "a" * 32
        url = f"{gk.web_url}/builds/{build}/result"
        good = {"Authorization": f"Bearer {gk.handoff.token(build)}"}
        assert requests.post(url, json={"result": "SUCCESS"}, timeout=5).status_code == 403
        other = {"Authorization": f"Bearer {gk.handoff.token('b' * 32)}"}
        assert requests.post(url, json={"result": "SUCCESS"}, headers=other,
                             timeout=5).status_code == 403
        assert requests.post(url, json={"result": "GREAT"}, headers=good,
                             timeout=5).status_code == 400
        assert requests.post(url, json={"result": "SUCCESS"}, headers=good,
                             timeout=5).status_code == 202   # unknown build: ignored
        assert requests.post(f"{gk.web_url}/builds/x/result", timeout=5).status_code == 404
    finally:
        gk.stop()


def test_a_restarted_gatekeeper_sees_workers_on_a_tls_pool(tmp_path):
    """``registered_workers`` (what a restart waits on) speaks TLS with the gatekeeper's
    certificate when the pool uses TLS, and sees a worker of the pool."""
    from ccci_gate import pki
    from ccci_gate.app import registered_workers
    from ccci_gate.gearman.server import EmbeddedServer
    from ccci_gate.gearman.worker import GearmanWorker
    from ccci_gate.pki import TlsFiles

    gk = pki.init(tmp_path / "gk")
    (tmp_path / "w1").mkdir()
    csr = pki.request("w1", tmp_path / "w1")
    (tmp_path / "w1" / "worker.crt").write_bytes(pki.sign(csr.read_bytes(), tmp_path / "gk"))
    (tmp_path / "w1" / "ca.crt").write_bytes((tmp_path / "gk" / "ca.crt").read_bytes())
    server = EmbeddedServer("127.0.0.1", 0, tls=gk)
    worker = GearmanWorker([("127.0.0.1", server.port)], "w1", ["build:hold"],
                           tls=TlsFiles.in_dir(tmp_path / "w1", "worker").check())
    try:
        where = ("127.0.0.1", server.port)
        assert wait_for(lambda: registered_workers(where, gk).get("build:hold"), 10, "the worker")
        assert registered_workers(where) == {}      # no certificate: nothing
    finally:
        worker.shutdown()
        server.shutdown()
