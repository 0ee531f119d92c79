"""Autohold on a real Docker Swarm: a failing install of a held job stays deployed past
its worker, the janitor leaves it alone while the hold stands, and removes it once it is
released (a pass triggered by the release) or expired; a passing run, and a run once
the request's count is spent, are torn down as usual. Under CI these fail, not skip,
when Docker is missing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from e2e_helpers import admin, finished, start_gatekeeper, wait_for, worker_process
from recipe_helpers import CRASH, TRY, build_image, commit_head, make_recipe

pytestmark = pytest.mark.docker


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccci_gate.cli", *args], capture_output=True,
                          text=True, timeout=300)


class World:
    """A gatekeeper (no local worker), a `ccci-gate worker` process, a recipe whose pull
    request 1 installs fine and whose pull request 2 crashes."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.tmp = tmp_path
        self.state = tmp_path / "swarm-state"
        monkeypatch.setenv("CCCI_SWARM_STATE", str(self.state))
        monkeypatch.setenv("CCCI_JANITOR_INTERVAL", "3600")   # only the passes we ask for
        monkeypatch.setenv("CCCI_MAX_TESTS", "1")   # a held app takes no slot: runs go on
        repos = tmp_path / "repos"
        repo = make_recipe(repos)
        commit_head(repo, "1.2.0+1", build_image("3"), number=1)
        commit_head(repo, "1.2.0+1", build_image("3"), command=CRASH, number=2)
        extra, self.jobs = tmp_path / "extra", tmp_path / "jobs"
        extra.mkdir()
        self.jobs.mkdir()
        (extra / "try.yaml").write_text(TRY + textwrap.dedent("""
            projects:
              - name: coop-cloud/hello
                try: [install-alone]
            """))
        (self.jobs / "install.yaml").write_text(
            "jobs:\n  - {name: install-alone, kind: recipe-install}\n")
        self.gk = start_gatekeeper(tmp_path, extra, self.jobs, repos,
                                   layout=[str(self.jobs), str(extra)], worker={"enabled": False})
        self.client = ("--url", self.gk.web_url, "--state-dir", str(tmp_path / "state"))
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start_worker(self) -> None:
        servers = ",".join(f"{h}:{p}" for h, p in self.gk.servers)
        self.proc = worker_process(servers, self.jobs, self.tmp / "w", "w1")
        wait_for(lambda: self.gk.dispatcher.pool()["functions"].get(
            "build:install-alone", {}).get("workers"), 30, "the worker to register")

    def kill_worker(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def run(self, change: int) -> tuple[str, str]:
        """Enqueue pull request ``change``; its install's result and log."""
        reply = admin(self.gk, "/admin/enqueue", {"pipeline": "try", "project": "coop-cloud/hello",
                                                  "change": change})
        assert reply.status_code in (200, 202), reply.text
        self.runs += 1
        item = finished(self.gk, self.runs, timeout=240)[-1]
        [job] = item["jobs"]
        logs = self.gk.logs
        wait_for(lambda: logs.state(job["id"]) == "finished", 30, "the log")
        return job["result"], (logs.read(job["id"]) or b"").decode("utf-8", "replace")

    def leases(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.state / "leases").glob("*.json"))]

    def janitor(self) -> str:
        done = cli("janitor", "--state", str(self.state))
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        self.kill_worker()
        self.gk.stop()


def gone(port, stack: str) -> bool:
    """Nothing of ``stack`` is left (False while another process is removing it: a
    container listed can be gone before it is inspected)."""
    import docker.errors
    try:
        return not port.leftovers(stack)
    except docker.errors.NotFound:
        return False


@pytest.fixture
def world(tmp_path, port, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.stop()


def test_a_held_install_stays_until_released(world, port):
    made = cli("autohold", "--project", "coop-cloud/hello", "--job", "install-alone",
               "--for", "1h", "--reason", "why does it crash", *world.client)
    assert made.returncode == 0, made.stderr
    world.start_worker()

    result, log = world.run(1)                      # a passing run is never held
    assert result == "SUCCESS" and "AUTOHOLD" not in log and "nothing of" in log
    assert world.leases() == []
    assert "held 0/1" in cli("autohold", "list", *world.client).stdout

    result, log = world.run(2)                      # the failing one is
    assert result == "FAILURE", log
    [lease] = world.leases()
    stack = lease["stack"]
    assert lease["hold"]["request"] == "1" and "nothing of" not in log
    assert f"AUTOHOLD (request 1): {stack} stays deployed" in log
    assert port.services(stack)
    listed = wait_for(lambda: (text := cli("autohold", "list", *world.client).stdout)
                      and f"held app {stack}" in text and text, 30, "the hold to be listed")
    assert "request 1    used      coop-cloud/hello install-alone  held 1/1" in listed
    assert f"log: {world.gk.web_url}/logs/" in listed and "(worker w1)" in listed
    command = next(line.split("services: ", 1)[1] for line in listed.splitlines()
                   if "services: " in line)
    shown = subprocess.run(command.split(), capture_output=True, text=True, check=True).stdout
    assert f"{stack}_app" in shown                   # the listed command reaches it
    tasks = subprocess.run(["docker", "service", "ps", "--no-trunc", f"{stack}_app"],
                           capture_output=True, text=True, check=True).stdout
    assert "non-zero exit (3)" in tasks              # why it failed, as operating.md says

    world.kill_worker()                             # a held lease outlives its worker
    assert "0 stack(s) removed" in world.janitor() and port.services(stack)
    world.start_worker()                            # whose successor's janitor keeps it too

    result, log = world.run(2)                      # count spent: torn down as usual
    assert result == "FAILURE" and "AUTOHOLD" not in log and "nothing of" in log
    assert [lease["stack"] for lease in world.leases()] == [stack]

    released = cli("autohold", "release", "1", *world.client)
    assert released.returncode == 0 and f"removing {stack}" in released.stdout
    wait_for(lambda: gone(port, stack) and not world.leases(), 150,
             "the released app to be removed")
    assert "0 stack(s) removed" in world.janitor()


def test_a_held_install_goes_when_its_hold_expires(world, port, monkeypatch):
    made = cli("autohold", "--project", "coop-cloud/hello", "--job", "install-alone",
               "--change", "2", "--for", "40s", *world.client)
    assert made.returncode == 0, made.stderr
    monkeypatch.setenv("CCCI_JANITOR_INTERVAL", "2")   # the worker's own pass, not the gatekeeper's
    world.start_worker()
    result, log = world.run(2)
    assert result == "FAILURE", log
    [lease] = world.leases()
    stack, until = lease["stack"], lease["hold"]["until"]
    assert until - lease["hold"]["held_at"] == pytest.approx(40)
    reply = world.janitor()                         # asks the gatekeeper: still held
    assert "0 stack(s) removed" in reply
    time.sleep(max(0.0, until - time.time() - 4))   # the worker's passes meanwhile keep it
    assert time.time() < until, "the run took too long to test the hold before it expired"
    assert port.services(stack) and world.leases() == [lease]
    # the lease goes right after the stack (it must outlive it)
    wait_for(lambda: gone(port, stack) and not world.leases(), 60,
             "the worker's janitor to remove it")
    assert "0 stack(s) removed" in world.janitor()


def test_a_failing_systest_keeps_its_upgraded_app_until_the_gatekeeper_releases_it(
        tmp_path, port, host, monkeypatch):
    from ccci_gate.swarm import holds
    from ccci_gate.worker.kinds import get_kind
    from recipe_helpers import checkout, context
    repo = make_recipe(tmp_path / "repos")
    sha = commit_head(repo, "1.2.0+1", build_image("3"), command=CRASH)
    monkeypatch.chdir(tmp_path)
    ws = checkout(repo, Path("ws"), "refs/pull/1/head")
    build = "cd" * 16
    ctx, lines = context(ws, "systest", ZUUL_COMMIT=sha, ZUUL_UUID=build,
                         **{holds.REQUEST: "7", holds.FOR: "600", holds.URL: ""})
    kind = get_kind("recipe-systest")
    kind._host = host
    assert kind.run(ctx) == "FAILURE"
    text = "".join(lines)
    assert "head applied, then swarm rolled back" in text and "nothing of" not in text
    report = ctx.report["autohold"]
    stack = report["stack"]
    assert report["request"] == "7" and report["until"] - report["held_at"] == pytest.approx(600)
    assert report["networks"] == [f"{stack}_default"] and report["domain"].endswith(".ci.local")
    assert [s.name for s in port.services(stack)] == [f"{stack}_app"]   # the base, rolled back to
    assert host.janitor(port, log=lambda _: None, ask=lambda hold: "held") == []
    assert host.janitor(port, log=lambda _: None, ask=lambda hold: None) == []   # unreachable
    assert port.services(stack)
    said: list[str] = []
    assert host.janitor(port, log=said.append, ask=lambda hold: "released") == [stack]
    assert said == [f"janitor: {stack} was held for build {build}: its hold was released "
                    f"(request 7); removing it\n"]
    assert port.leftovers(stack) == {} and host.leases() == []
