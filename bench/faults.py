"""The gate under faults: real gatekeepers, real worker processes, gear.Server and gearmand.

Prints one row per fault: trials, items (or builds) finished, lost, reported twice,
wrong verdicts, orphans. The last four must be 0.

    python3 bench/faults.py [--quick] [--only NAME ...]

Faults:
- ``cancel-race/<server>``: builds started and, every other one, canceled at once or a
  few ms later (racing the submit, the worker taking it, its first WORK_DATA) on the
  dispatcher with three worker threads. finished = builds that ended as they should
  (the kept ones SUCCESS, the canceled ones never run or stopped); orphans = canceled
  builds a worker ran to the end, or builds left in the dispatcher.
- ``gate-resets/<server>``: gates of 12 changes (8 with ``--quick``; every third fails),
  16 rounds (1), on a gatekeeper with
  two ``ccci-gate worker`` processes: each failure resets the items behind it, canceling
  their builds while others start. wrong = a verdict other than expected (bad changes
  FAILURE, good SUCCESS, none NOT_REGISTERED), or a bad change merged / a good one not.
- ``worker-sigkill``: a one-worker pool; the build's script forks a child and a
  ``setsid`` grandchild; the worker is SIGKILLed mid-build, then a new worker starts on
  the same workdir. orphans = build processes alive afterwards; the item must pass on
  the retry (it waits for the new worker instead of NOT_REGISTERED).
- ``gearmand-restart``: 8 changes in a check pipeline on gearmand, two worker
  processes; gearmand is killed mid-run and restarted a second later.
- ``two-servers``: two gearmands, 10 changes; one gearmand is killed mid-run for good.
- ``outage``: the only gearmand is down while changes are enqueued; /status.json must
  keep answering (its slowest answer is printed); gearmand comes back, all pass.

Worker tracebacks (stderr) are counted in the notes.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ccci_gate.app import Gatekeeper  # noqa: E402
from ccci_gate.core.actions import CancelBuild, StartBuild  # noqa: E402
from ccci_gate.core.events import BuildCompleted  # noqa: E402
from ccci_gate.gearman.dispatcher import GearmanDispatcher  # noqa: E402
from ccci_gate.gearman.server import EmbeddedServer  # noqa: E402
from ccci_gate.gearman.worker import GearmanWorker  # noqa: E402
from ccci_gate.settings import load_settings  # noqa: E402
from git_helpers import git, make_repo  # noqa: E402
from waiting import free_port, wait_for  # noqa: E402

GEARMAND = shutil.which("gearmand") or ("/usr/sbin/gearmand" if os.path.exists("/usr/sbin/gearmand")
                                        else None)


@dataclass
class Row:
    fault: str
    trials: int
    finished: int = 0
    lost: int = 0
    twice: int = 0
    wrong: int = 0
    orphans: int = 0
    note: str = ""
    kinds: collections.Counter = field(default_factory=collections.Counter)  # what was wrong


# --- plumbing ---------------------------------------------------------------------------



def gearmand(port: int | None = None) -> tuple[subprocess.Popen, int]:
    port = port or free_port()
    proc = subprocess.Popen([GEARMAND, "-L", "127.0.0.1", "-p", str(port), "--log-file", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(up, 20, f"gearmand on {port}")
    return proc, port


def stop(proc: subprocess.Popen | None, group: bool = False) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM) if group else proc.terminate()
        proc.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        proc.kill()


class World:
    """A temp dir with a repo of ``changes`` PRs, a layout and shell jobs."""

    def __init__(self, tmp: Path, changes: dict[int, dict[str, str]], pipeline: str,
                 manager: str, script: str, extra_params: str = ""):
        self.tmp = tmp
        self.repos = tmp / "repos"
        self.upstream = make_repo(self.repos, "org/app", changes)
        git(self.upstream, "config", "receive.denyCurrentBranch", "updateInstead")
        self.layouts, self.jobs = tmp / "layouts", tmp / "jobs"
        (self.jobs / "scripts").mkdir(parents=True)
        self.layouts.mkdir()
        (self.layouts / "main.yaml").write_text(textwrap.dedent(f"""
            pipelines:
              - name: {pipeline}
                manager: {manager}
                trigger:
                  admin: []
                success:
                  log: {{}}
                failure:
                  log: {{}}
            projects:
              - name: org/app
                {pipeline}: [t]
            """))
        (self.jobs / "jobs.yaml").write_text(textwrap.dedent(f"""
            jobs:
              - name: t
                run: scripts/t.sh
                attempts: 5
            {extra_params}"""))
        path = self.jobs / "scripts" / "t.sh"
        path.write_text("#!/bin/sh\nset -eu\n" + textwrap.dedent(script))
        path.chmod(0o755)
        self.logs = tmp / "worker-logs"
        self.logs.mkdir()

    def gatekeeper(self, **raw: Any) -> "Gate":
        settings = {"state-dir": str(self.tmp / "state"), "listen": "127.0.0.1:0",
                    "gearman-listen": "127.0.0.1:0",
                    "layout": [str(self.layouts), str(self.jobs)], "jobs-dir": str(self.jobs),
                    "repos": str(self.repos), "worker": {"enabled": False}}
        settings.update(raw)
        return Gate(Gatekeeper(load_settings(None, settings)))

    def worker(self, servers: str, name: str, workdir: Path | None = None,
               max_builds: int = 2) -> subprocess.Popen:
        argv = [sys.executable, "-m", "ccci_gate.cli", "worker", "--jobs", str(self.jobs),
                "--workdir", str(workdir or self.tmp / f"ws-{name}"), "--name", name,
                "--max-builds", str(max_builds)]
        for server in servers.split(","):
            argv += ["--gearman", server]
        err = open(self.logs / f"{name}.err", "a")
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)

    def tracebacks(self) -> int:
        count = 0
        for path in self.logs.glob("*.err"):
            text = path.read_text()
            if "Traceback" in text:
                count += text.count("Traceback")
                print(f"--- {path.name}:\n{text[text.index('Traceback') - 300:][:3000]}",
                      file=sys.stderr)
        return count


class Gate:
    """A started gatekeeper whose reports are counted per item and phase."""

    def __init__(self, gk: Gatekeeper):
        self.gk = gk
        self.reports: collections.Counter = collections.Counter()
        inner = gk.scheduler.reporters["log"]
        outer = self

        class Counting:
            def report(self, action: Any) -> None:
                if action.phase != "start":
                    outer.reports[(action.item_id, action.phase)] += 1
                inner.report(action)
        gk.scheduler.reporters["log"] = Counting()
        gk.start()

    @property
    def servers(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.gk.servers)

    def enqueue(self, pipeline: str, change: int) -> None:
        reply = requests.post(self.gk.web_url + "/admin/enqueue", timeout=30,
                              json={"pipeline": pipeline, "project": "org/app", "change": change},
                              headers={"Authorization": f"Bearer {self.gk.admin_token}"})
        reply.raise_for_status()

    def finished(self, count: int, timeout: float) -> list[dict[str, Any]]:
        try:
            wait_for(lambda: len(self.gk.store.history(limit=1000)) >= count, timeout,
                     f"{count} items")
        except TimeoutError:
            pass
        return [self.gk.store.item(r["id"]) for r in self.gk.store.history(limit=1000)]

    def twice(self) -> int:
        return sum(1 for n in self.reports.values() if n > 1)

    def wait_workers(self, function: str, count: int, timeout: float = 60) -> None:
        wait_for(lambda: self.gk.dispatcher.pool(max_age=0)["functions"].get(function, {})
                 .get("workers", 0) >= count, timeout, f"{count} workers of {function}")

    def stop(self) -> None:
        self.gk.stop()


# --- faults -------------------------------------------------------------------------------

def cancel_race(server: str, trials: int) -> Row:
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    proc = embedded = None
    if server == "gearmand":
        proc, port = gearmand()
    else:
        embedded = EmbeddedServer("127.0.0.1", 0)
        port = embedded.port
    servers = [("127.0.0.1", port)]
    events: "collections.deque" = collections.deque()
    d = GearmanDispatcher(servers, events.append, tmp / "logs", grace=5)
    ran_out: list[str] = []
    stops: dict[str, threading.Event] = collections.defaultdict(threading.Event)
    workers, running = [], [True]

    def work(w: GearmanWorker, name: str) -> None:
        while running[0]:
            req = w.get_build(0.5)
            if req is None:
                continue
            req.started(name)
            if req.parameters.get("HOLD") == "1" and not stops[req.build_id].wait(20):
                ran_out.append(req.build_id)
            req.complete("ABORTED" if stops[req.build_id].is_set() else "SUCCESS")
    for i in range(3):
        w = GearmanWorker(servers, f"w{i}", ["build:job"], on_stop=lambda b: stops[b].set())
        workers.append(w)
        threading.Thread(target=work, args=(w, f"w{i}"), daemon=True).start()
    rnd = random.Random(7)
    try:
        d.wait_for_server(10)
        wait_for(lambda: d.pool(max_age=0)["functions"].get("build:job", {}).get("workers", 0) >= 3,
                 20, "workers")
        kept = []
        for n in range(trials):
            build_id = f"{n:032x}"
            hold = n % 2 == 0
            d.start(StartBuild(build_id, "build:job", {"HOLD": "1" if hold else "0"}))
            if hold:
                time.sleep(rnd.choice((0, 0, 0.0005, 0.002, 0.01)))
                d.cancel(CancelBuild(build_id))
            else:
                kept.append(build_id)
        done = lambda: [e for e in list(events) if isinstance(e, BuildCompleted)]  # noqa: E731
        try:
            wait_for(lambda: len({e.build_id for e in done()} & set(kept)) >= len(kept), 120,
                     "kept builds")
        except TimeoutError:
            pass

        def idle() -> bool:
            f = d.pool(max_age=0)["functions"].get("build:job", {})
            return not f.get("running") and not f.get("queued") and not d._builds
        try:
            wait_for(idle, 30, "idle workers")
        except TimeoutError:
            pass
        completions = collections.Counter(e.build_id for e in done())
        results = {e.build_id: e for e in done()}
        ok = sum(1 for b in kept if results.get(b) is not None and results[b].result == "SUCCESS")
        canceled_ok = trials - len(kept) - len(ran_out)
        stuck = 0 if idle() else 1
        return Row(f"cancel-race/{server}", trials, ok + canceled_ok,
                   lost=sum(1 for b in kept if b not in results),
                   twice=sum(1 for n in completions.values() if n > 1),
                   wrong=sum(1 for b in kept if b in results and results[b].result != "SUCCESS"),
                   orphans=len(ran_out) + stuck,
                   note=f"{d.stats['canceled']} cancels, {d.stats['unqueued']} unqueued, "
                        f"{d.stats['stops']} stops")
    finally:
        running[0] = False
        for w in workers:
            w.shutdown()
        d.shutdown()
        if embedded:
            embedded.shutdown()
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def gate_resets(server: str, rounds: int, size: int = 8) -> Row:
    row = Row(f"gate-resets/{server}", 0)
    resets = 0
    for _ in range(rounds):
        tmp = Path(tempfile.mkdtemp(prefix="faults-"))
        proc = None
        changes = {n: {f"c{n}.txt": f"{n}\n", **({"bad": "x\n"} if n % 3 == 2 else {})}
                   for n in range(1, size + 1)}
        world = World(tmp, changes, "gate", "dependent", """
            sleep "0.$(od -An -N1 -tu1 /dev/urandom | tr -d ' ' | cut -c1)"
            if [ -f bad ]; then echo "bad change in this ref" >&2; exit 1; fi
            echo ok
            """)
        raw: dict[str, Any] = {}
        if server == "gearmand":
            proc, port = gearmand()
            raw["gearman"] = [f"127.0.0.1:{port}"]
        gate = world.gatekeeper(**raw)
        workers = [world.worker(gate.servers, f"w{i}", max_builds=3) for i in (1, 2)]
        try:
            gate.wait_workers("build:t", 2)
            for n in changes:
                gate.enqueue("gate", n)
            items = gate.finished(len(changes), 300)
            row.trials += len(changes)
            verdicts = {i["change"]["number"]: i["result"] for i in items}
            expected = {n: ("FAILURE" if "bad" in files else "SUCCESS")
                        for n, files in changes.items()}
            row.finished += len(verdicts)
            row.lost += len(changes) - len(verdicts)
            bad_verdicts = {n: v for n, v in verdicts.items() if v != expected[n]}
            tree = git(world.upstream, "ls-tree", "--name-only", "main").split()
            bad_merges = [n for n in changes if (f"c{n}.txt" in tree) != (expected[n] == "SUCCESS")]
            row.wrong += len(bad_verdicts) + len(bad_merges)
            row.kinds.update(f"{expected[n]}->{v}" for n, v in bad_verdicts.items())
            row.kinds.update(f"merged-{expected[n]}" for n in bad_merges)
            if bad_verdicts or bad_merges:
                print(f"  wrong: verdicts {bad_verdicts}, merged wrongly {bad_merges}",
                      [(i["change"]["number"], i["result"], i.get("message"),
                        [(j["name"], j["result"], j.get("message")) for j in i["jobs"]])
                       for i in items if i["change"]["number"] in bad_verdicts], file=sys.stderr)
            row.twice += gate.twice()
            resets += gate.gk.dispatcher.stats["canceled"]
        finally:
            for w in workers:
                stop(w, group=True)
            gate.stop()
            stop(proc)
            row.note = f"{resets} builds canceled by resets; worker tracebacks {world.tracebacks()}"
            shutil.rmtree(tmp, ignore_errors=True)
    return row


def worker_sigkill(trials: int) -> Row:
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    pidfile = tmp / "pids"
    world = World(tmp, {n: {f"c{n}.txt": "x\n"} for n in range(1, trials + 1)}, "check",
                  "independent", f"""
        echo $$ >> {pidfile}
        if [ "$BUILD_ATTEMPT" = 1 ]; then
          sleep 300 &
          echo $! >> {pidfile}
          setsid sh -c 'echo $$ >> {pidfile}; exec sleep 300' &
          wait
        fi
        """)
    gate = world.gatekeeper()
    workdir = tmp / "host"
    worker = world.worker(gate.servers, "w0", workdir, max_builds=1)
    row = Row("worker-sigkill", trials)
    try:
        for n in range(1, trials + 1):
            pidfile.write_text("")
            gate.enqueue("check", n)
            wait_for(lambda: len(pidfile.read_text().split()) >= 3, 60, "build processes")
            pids = [int(p) for p in pidfile.read_text().split()]
            os.killpg(worker.pid, signal.SIGKILL)   # the worker, not the build's session
            worker.wait(10)
            time.sleep(3)
            row.orphans += sum(1 for p in pids if _alive(p))
            for p in pids:
                if _alive(p):
                    os.kill(p, signal.SIGKILL)
            worker = world.worker(gate.servers, f"w{n}", workdir, max_builds=1)
            items = gate.finished(n, 90)
            item = next((i for i in items if i["change"]["number"] == n), None)
            if item is None:
                row.lost += 1
                continue
            row.finished += 1
            row.wrong += item["result"] != "SUCCESS"
        row.twice = gate.twice()

        def left() -> list[Path]:
            return [p for p in workdir.iterdir() if not p.name.startswith(".")]
        try:   # the worker removes a workspace just after it reports the build
            wait_for(lambda: not left(), 10, "workspaces removed")
        except TimeoutError:
            pass
        row.note = (f"retries waited for the next worker; worker tracebacks {world.tracebacks()}"
                    f"; workspaces left {len(left())}")
    finally:
        stop(worker, group=True)
        gate.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


SLOW = """
    sleep 5
    echo ok
    """


def _check_run(name: str, count: int, servers_of: Callable[[], list], fault: Callable,
               workers: int = 2) -> Row:
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    world = World(tmp, {n: {f"c{n}.txt": "x\n"} for n in range(1, count + 1)}, "check",
                  "independent", SLOW)
    procs = servers_of()
    raw = {"gearman": [f"127.0.0.1:{port}" for _, port in procs]}
    gate = world.gatekeeper(**raw)
    ws = [world.worker(gate.servers, f"w{i}", max_builds=2) for i in range(workers)]
    row = Row(name, count)
    try:
        gate.wait_workers("build:t", workers * len(procs))
        note = fault(gate, procs, world, lambda: [gate.enqueue("check", n)
                                                  for n in range(1, count + 1)])
        items = gate.finished(count, 240)
        row.finished = len(items)
        row.lost = count - len(items)
        row.wrong = sum(1 for i in items if i["result"] != "SUCCESS")
        row.twice = gate.twice()
        row.note = (note or "") + f"; lost attempts retried {gate.gk.dispatcher.stats['lost']}, " \
                                  f"worker tracebacks {world.tracebacks()}"
    finally:
        for w in ws:
            stop(w, group=True)
        gate.stop()
        for p, _ in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def gearmand_restart(count: int) -> Row:
    def fault(gate: Gate, procs: list, world: World, enqueue: Callable) -> str:
        enqueue()
        wait_for(lambda: gate.gk.dispatcher.pool(max_age=0)["functions"].get("build:t", {})
                 .get("running", 0) >= 2, 60, "builds running")
        proc, port = procs[0]
        proc.kill()
        proc.wait(10)
        time.sleep(1)
        procs[0] = gearmand(port)
        return "gearmand killed with builds running, back 1 s later"
    return _check_run("gearmand-restart", count, lambda: [gearmand()], fault)


def two_servers(count: int) -> Row:
    def fault(gate: Gate, procs: list, world: World, enqueue: Callable) -> str:
        enqueue()
        wait_for(lambda: gate.gk.dispatcher.pool(max_age=0)["functions"].get("build:t", {})
                 .get("running", 0) >= 2, 60, "builds running")
        procs[0][0].kill()
        return "one of two gearmands killed with builds running, for good"
    return _check_run("two-servers", count, lambda: [gearmand(), gearmand()], fault)


def outage(count: int) -> Row:
    def fault(gate: Gate, procs: list, world: World, enqueue: Callable) -> str:
        proc, port = procs[0]
        proc.kill()
        proc.wait(10)
        enqueue()
        slowest = 0.0
        until = time.monotonic() + 5
        while time.monotonic() < until:
            t0 = time.monotonic()
            requests.get(gate.gk.web_url + "/status.json", timeout=30).raise_for_status()
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.1)
        procs[0] = gearmand(port)
        return f"5 s without gearmand: /status.json slowest {slowest * 1000:.0f} ms"
    return _check_run("outage", count, lambda: [gearmand()], fault)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials (as the tests do)")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    q = args.quick
    faults: dict[str, Callable[[], Row]] = {
        "cancel-race/embedded": lambda: cancel_race("embedded", 40 if q else 400),
        "gate-resets/embedded": lambda: gate_resets("embedded", 1 if q else 16, 8 if q else 12),
        "worker-sigkill": lambda: worker_sigkill(2 if q else 20),
    }
    if GEARMAND:
        faults.update({
            "cancel-race/gearmand": lambda: cancel_race("gearmand", 40 if q else 400),
            "gate-resets/gearmand": lambda: gate_resets("gearmand", 1 if q else 16, 8 if q else 12),
            "gearmand-restart": lambda: gearmand_restart(4 if q else 8),
            "two-servers": lambda: two_servers(4 if q else 10),
            "outage": lambda: outage(2 if q else 4),
        })
    else:
        print("gearmand not installed: its faults are skipped", file=sys.stderr)
    print(f"{'fault':<22} {'trials':>6} {'finished':>8} {'lost':>5} {'twice':>5} "
          f"{'wrong':>5} {'orphans':>7}  note", flush=True)
    bad = 0
    for name, run in faults.items():
        if args.only and name not in args.only:
            continue
        row = run()
        bad += row.lost + row.twice + row.wrong + row.orphans
        print(f"{row.fault:<22} {row.trials:>6} {row.finished:>8} {row.lost:>5} {row.twice:>5} "
              f"{row.wrong:>5} {row.orphans:>7}  {row.note}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
