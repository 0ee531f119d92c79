"""Review: ``ccci-gate replay`` promises exit 3 when the worker running the build is lost
(``commands/replay.py``, doc/operating.md). On gear.Server a lost worker is a WORK_FAIL;
on gearmand the job goes back to the queue, and with no other worker registering its
function the replay waited forever. A real worker process is killed mid-build on both.
And a replay pointed at something that is not a gatekeeper says so in one line."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from e2e_helpers import make_repo, start_gatekeeper, worker_process, write_layout
from e2e_helpers import admin_pipeline
from test_replay import JOBS, PROJECTS, SCRIPTS, blocking_replay


@pytest.fixture
def world(tmp_path, gearman_server):
    host, port = gearman_server
    repos = tmp_path / "repos"
    make_repo(repos, "org/app", {1: {"README.md": "one\n"}})
    layouts, jobs_dir = write_layout(tmp_path, admin_pipeline("check"), PROJECTS, JOBS, SCRIPTS)
    gk = start_gatekeeper(tmp_path, layouts, jobs_dir, repos, gearman=[f"{host}:{port}"],
                          worker={"enabled": False})
    worker = worker_process(f"{host}:{port}", jobs_dir, tmp_path / "workdir", "doomed")
    yield gk, f"{host}:{port}", worker, jobs_dir, tmp_path
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(10)
    gk.stop()


def test_a_replay_whose_worker_dies_ends_with_no_result(world):
    gk, gearman, worker, jobs_dir, tmp_path = world
    replay, build = blocking_replay(gk, gearman)
    pid = None
    try:
        line = replay.stdout.readline().decode()
        while "blocking pid" not in line:
            assert line, replay.stderr.read().decode()
            line = replay.stdout.readline().decode()
        pid = int(re.search(r"blocking pid (\d+)", line).group(1))
        os.killpg(worker.pid, signal.SIGKILL)   # the worker's host goes down
        worker.wait(10)
        started = time.monotonic()
        try:
            code = replay.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail("the replay still waits 60 s after its worker died")
        err = replay.stderr.read().decode()
        assert code == 3, err
        assert "NO RESULT" in err and "lost" in err, err
        print(f"replay ended {time.monotonic() - started:.1f} s after its worker died")
        # the lost build must not wait in the queue for the next worker to come
        heir = worker_process(gearman, jobs_dir, tmp_path / "heir", "heir")
        try:
            time.sleep(8)
            ran = [p.name for p in (tmp_path / "heir").glob("*") if not p.name.startswith(".")]
        finally:
            os.killpg(heir.pid, signal.SIGTERM)
            heir.wait(10)
        assert not ran, f"the lost build ran on the next worker: {ran}"
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait(10)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass



def test_a_replay_pointed_at_something_else_says_so_in_one_line(tmp_path):
    """Review: a ``--url`` that is not a gatekeeper (a typo, a proxy's HTML page) made
    ``replay`` die with a JSONDecodeError traceback; it exits 2 and says what it got."""
    import http.server
    import threading
    import uuid

    (tmp_path / "builds").mkdir()
    build = uuid.uuid4().hex
    (tmp_path / "builds" / f"{build}.json").write_text("<html>login first</html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for build_id in (uuid.uuid4().hex, build):   # an HTML 404, then HTML with a 200
            out = subprocess.run([sys.executable, "-m", "ccci_gate.cli", "replay", build_id,
                                  "--url", url, "--print"], capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 2, out.stderr
            assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
            assert "not a gatekeeper's answer" in out.stderr, out.stderr
    finally:
        server.shutdown()
