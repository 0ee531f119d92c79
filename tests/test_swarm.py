"""The Swarm job kinds on a real Docker Engine in swarm mode, with a real test recipe
(offline images from ``docker import``). After every test the swarm holds nothing of
the runs. Under CI these fail, not skip, when Docker is missing."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ccci_gate.swarm.host import Host
from ccci_gate.swarm.recipe import Recipe, run_domain
from ccci_gate.swarm.snapshot import SnapshotError, current, restore, snapshot
from ccci_gate.worker.kinds import get_kind

from e2e_helpers import admin, admin_pipeline, finished, git, job_results, start_gatekeeper, wait_for, worker_process
from recipe_helpers import CRASH, TRY, UNHEALTHY, build_image, checkout, commit_head, context, make_recipe, run_graph

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.docker


# --- lint --------------------------------------------------------------------------------

def test_lint_lists_every_problem(tmp_path, docker_swarm):
    repo = make_recipe(tmp_path)
    recipe = Recipe(repo, "hello", domain=run_domain("hello"))
    assert recipe.lint() == []
    assert recipe.version() == "1.1.0+1" and recipe.timeout() == 60
    (repo / "compose.yml").write_text((repo / "compose.yml").read_text()
                                      .replace("ccci-test/busybox:2", "ccci-test/busybox:latest")
                                      .replace("1.1.0+1", "1.2")
                                      .replace("healthcheck:", "x-health:")
                                      .replace("${SECRET_DB_PASSWORD_VERSION}", "${NOPE}"))
    problems = recipe.lint()
    assert any("latest" in p for p in problems)
    assert any("not X.Y.Z+upstream" in p for p in problems)
    assert any("no healthcheck" in p for p in problems)
    assert any("${NOPE} is not set" in p for p in problems)
    assert len(problems) == 4, problems


# --- the default graph through the gatekeeper -----------------------------------------------

def test_default_graph_runs_a_real_recipe(tmp_path, port, monkeypatch):
    monkeypatch.setenv("CCCI_SWARM_STATE", str(tmp_path / "swarm-state"))
    repos = tmp_path / "repos"
    repo = make_recipe(repos)
    commit_head(repo, "1.2.0+1", build_image("3"))
    item = run_graph(tmp_path, repos, 1)
    assert job_results(item) == {"build": "SUCCESS", "publish": "SUCCESS",
                                 "install": "SUCCESS", "systest": "SUCCESS"}, item["logs"]
    assert "deploying the published bundle" in item["logs"]["install"]
    assert "answered 200 to a probe on the stack's network" in item["logs"]["install"]
    systest = item["logs"]["systest"]
    assert "upgrade base: 1.1.0+1" in systest
    assert "the head runs" in systest and "app-level data survival: UNVERIFIED" in systest
    assert "round trip of 1 volume(s): identical" in systest
    assert "recipe check of hell-" in systest and "own tests/ccci-check passed" in systest


def test_a_lint_error_fails_build_and_skips_the_rest(tmp_path, port, monkeypatch):
    monkeypatch.setenv("CCCI_SWARM_STATE", str(tmp_path / "swarm-state"))
    repos = tmp_path / "repos"
    repo = make_recipe(repos)
    commit_head(repo, "1.2.0+1", "ccci-test/busybox:latest")
    item = run_graph(tmp_path, repos, 1)
    assert job_results(item) == {"build": "FAILURE", "publish": "SKIPPED",
                                 "install": "SKIPPED", "systest": "SKIPPED"}
    assert "uses the latest tag" in item["logs"]["build"]


# --- systest: the upgrade must not lie ---------------------------------------------------------

@pytest.mark.parametrize("command,why", [(CRASH, "non-zero exit (3)"),
                                         (UNHEALTHY, "unhealthy")], ids=["exits", "unhealthy"])
def test_swarm_rollback_fails_systest_with_the_true_reason(tmp_path, port, host, monkeypatch,
                                                           command, why):
    repo = make_recipe(tmp_path / "repos")
    sha = commit_head(repo, "1.2.0+1", build_image("3"), command=command)
    monkeypatch.chdir(tmp_path)   # a relative workspace, as `ccci-gate worker` gets by default
    ws = checkout(repo, Path("ws"), "refs/pull/1/head")
    ctx, lines = context(ws, "systest", ZUUL_COMMIT=sha)
    kind = get_kind("recipe-systest")
    kind._host = host
    assert kind.run(ctx) == "FAILURE"
    text = "".join(lines)
    assert "head applied, then swarm rolled back" in text, text
    assert why in text
    assert "nothing of" in text


# --- snapshots ----------------------------------------------------------------------------------

def fill(path: Path, seed: int, files: int = 20, size: int = 50_000) -> None:
    rng = random.Random(seed)
    (path / "sub").mkdir(exist_ok=True)
    for n in range(files):
        (path / ("sub" if n % 2 else ".") / f"f{n}").write_bytes(rng.randbytes(size))


def digest(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_snapshot_restore_round_trip_is_byte_identical(tmp_path, port):
    stack = "snapt-" + os.urandom(3).hex()
    try:
        mount = port.create_volume(f"{stack}_data", stack)
        fill(mount, 1)
        original = digest(mount)
        snap = snapshot(port, stack, tmp_path / "snaps", {"recipe": "hello"})
        assert current(tmp_path / "snaps") == snap.resolve()
        meta = json.loads((snap / "meta.json").read_text())
        assert meta["volumes"] == [f"{stack}_data"] and meta["recipe"] == "hello"
        fill(mount, 2, files=3)
        (mount / "extra").write_text("x")
        restore(port, stack, snap)
        assert digest(mount) == original
        with pytest.raises(SnapshotError, match="missing"):
            port.purge(stack)
            restore(port, stack, snap)
    finally:
        port.purge(stack)


def test_snapshot_of_a_deployed_stack_is_refused(tmp_path, port, host):
    repo = make_recipe(tmp_path / "repos")
    from ccci_gate.swarm.deploy import App
    app = App(port, Recipe(repo, "hello", domain=run_domain("hello")), log=lambda _: None)
    try:
        app.create_secrets()
        app.deploy()
        app.wait_converged(60)
        with pytest.raises(SnapshotError, match="deployed"):
            snapshot(port, app.stack, tmp_path / "snaps", {})
    finally:
        app.teardown()


SNAPSHOT_CHILD = """
import sys
from pathlib import Path
from ccci_gate.swarm.port import SwarmPort
from ccci_gate.swarm.snapshot import snapshot
snapshot(SwarmPort(), sys.argv[1], Path(sys.argv[2]), {"trial": sys.argv[3]})
"""


def test_a_killed_snapshot_always_leaves_the_previous_one_intact(tmp_path, port):
    stack = "snapk-" + os.urandom(3).hex()
    root = tmp_path / "snaps"
    argv = [sys.executable, "-c", SNAPSHOT_CHILD, stack, str(root)]
    try:
        mount = port.create_volume(f"{stack}_data", stack)
        fill(mount, 3, files=40, size=1_000_000)
        started = time.monotonic()
        subprocess.run(argv + ["full"], check=True)
        full = time.monotonic() - started
        good_bytes = (current(root) / f"{stack}_data.tar").read_bytes()
        previous = "full"
        rng = random.Random(7)
        outcomes = {"killed": 0, "completed": 0}
        for trial in range(16):
            proc = subprocess.Popen(argv + [str(trial)])
            time.sleep(rng.uniform(0.2, 1.1) * full)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            snap = current(root)
            assert snap is not None, "no current snapshot after a kill"
            now = json.loads((snap / "meta.json").read_text())["trial"]
            assert now in (previous, str(trial)), (now, previous, trial)
            assert (snap / f"{stack}_data.tar").read_bytes() == good_bytes  # complete, intact
            outcomes["completed" if now == str(trial) else "killed"] += 1
            previous = now
        assert outcomes["killed"] >= 3, outcomes   # the kills really hit mid-snapshot
    finally:
        port.purge(stack)


# --- capacity and the janitor -----------------------------------------------------------------

def test_host_slots_bound_concurrent_apps(tmp_path):
    host = Host(tmp_path, max_tests=1)
    order = []

    def run(name):
        with host.slot(log=lambda _: None):
            order.append(f"{name}+")
            time.sleep(0.3)
            order.append(f"{name}-")

    threads = [threading.Thread(target=run, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])


def test_janitor_reaps_what_a_killed_worker_left(tmp_path, port, monkeypatch):
    state = tmp_path / "swarm-state"
    monkeypatch.setenv("CCCI_SWARM_STATE", str(state))
    repos = tmp_path / "repos"
    repo = make_recipe(repos)
    commit_head(repo, "1.2.0+1", build_image("3"))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "try.yaml").write_text(TRY + textwrap.dedent("""
        projects:
          - name: coop-cloud/hello
            try: [install-alone]
        """))
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "install.yaml").write_text("jobs:\n  - {name: install-alone, kind: recipe-install}\n")
    gk = start_gatekeeper(tmp_path, extra, jobs, repos, layout=[str(jobs), str(extra)],
                          worker={"enabled": False})
    proc = None
    try:
        servers = ",".join(f"{h}:{p}" for h, p in gk.servers)
        proc = worker_process(servers, jobs, tmp_path / "w", "doomed")
        wait_for(lambda: gk.dispatcher.pool()["functions"].get("build:install-alone", {}).get("workers"),
                 30, "the worker to register")
        admin(gk, "/admin/enqueue", {
            "pipeline": "try", "project": "coop-cloud/hello", "change": 1})
        lease = wait_for(lambda: list((state / "leases").glob("*.json")), 60, "a run's lease")
        stack = json.loads(lease[0].read_text())["stack"]
        wait_for(lambda: port.services(stack), 60, "the app to be deployed")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert port.leftovers(stack), "the kill should leave the app behind"
        janitor = [sys.executable, "-m", "ccci_gate.cli", "janitor", "--state", str(state)]
        reply = subprocess.run(janitor, capture_output=True, text=True, check=True).stdout
        assert f"{stack} was left by build" in reply and "1 stack(s) removed" in reply
        assert port.leftovers(stack) == {}
        assert "0 stack(s) removed" in subprocess.run(janitor, capture_output=True, text=True,
                                                      check=True).stdout
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        gk.stop()
