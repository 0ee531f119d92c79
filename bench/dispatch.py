"""No-op builds through the real dispatch layer and worker loop, beside stock gear.

Each configuration runs the same closed loop: ``--concurrency`` builds in flight, each
completion submitting the next, until ``--builds`` have completed; one worker process's
worth of threads answers every build with SUCCESS at once. Printed per configuration:
builds/s, round-trip p50/p99 (submit → completion event), and the ratio to stock gear.

    python3 bench/dispatch.py [--builds 3000] [--concurrency 8] [--workers 2]

Configurations:
- ``ours/embedded``: GearmanDispatcher + GearmanWorker + EmbeddedServer (TCP_NODELAY)
- ``ours/gearmand``: the same client and worker on Debian's gearmand (if installed)
- ``stock gear``: gear.Client + gear.Worker + gear.Server with gear's defaults
"""
from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import sys

import gear

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ccci_gate.gearman.protocol import tune_threads
from ccci_gate.core.actions import StartBuild
from ccci_gate.core.events import BuildCompleted
from ccci_gate.gearman.dispatcher import GearmanDispatcher
from ccci_gate.gearman.server import EmbeddedServer
from waiting import free_port  # noqa: E402
from ccci_gate.gearman.worker import GearmanWorker

FUNCTION = "build:noop"


class ClosedLoop:
    """Keeps ``concurrency`` builds in flight; records each round trip.

    Completions arrive on the Gearman client's thread; submits happen on one submitter
    thread, as in the gatekeeper (where the scheduler thread submits).
    """

    def __init__(self, total: int, concurrency: int, submit):
        self.total, self.concurrency, self.submit = total, concurrency, submit
        self.sent = 0
        self.done = 0
        self.started: dict[str, float] = {}
        self.rtts: list[float] = []
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.wakeups: "queue.Queue[int]" = queue.Queue()

    def run(self) -> float:
        t0 = time.perf_counter()
        submitter = threading.Thread(target=self._submitter, daemon=True)
        submitter.start()
        for _ in range(self.concurrency):
            self.wakeups.put(1)
        if not self.finished.wait(300):
            raise RuntimeError(f"only {self.done}/{self.total} builds completed")
        self.wakeups.put(0)
        return time.perf_counter() - t0

    def _submitter(self) -> None:
        while self.wakeups.get():
            if self.sent >= self.total:
                continue
            self.sent += 1
            build_id = f"{self.sent:032x}"
            with self.lock:
                self.started[build_id] = time.perf_counter()
            self.submit(build_id)

    def completed(self, build_id: str) -> None:
        now = time.perf_counter()
        with self.lock:
            self.rtts.append(now - self.started.pop(build_id))
            self.done += 1
            if self.done >= self.total:
                self.finished.set()
                return
        self.wakeups.put(1)


def noop_worker_threads(make_worker, count: int, stop: threading.Event) -> list[threading.Thread]:
    threads = []
    for i in range(count):
        worker = make_worker(f"bench-w{i}")

        def loop(worker=worker):
            while not stop.is_set():
                req = worker.get_build(0.5)
                if req is not None:
                    req.complete("SUCCESS")
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append((thread, worker))
    return threads


def run_ours(servers: list[tuple[str, int]], args) -> tuple[float, list[float]]:
    stop = threading.Event()
    loop_box: dict = {}

    def emit(event):
        if isinstance(event, BuildCompleted):
            loop_box["loop"].completed(event.build_id)

    dispatcher = GearmanDispatcher(servers, emit, Path(tempfile.mkdtemp()))
    dispatcher.wait_for_server(10)
    workers = noop_worker_threads(lambda n: GearmanWorker(servers, n, [FUNCTION]), args.workers, stop)
    for _, w in workers:
        w.wait_for_server(10)
    while dispatcher.pool()["functions"].get(FUNCTION, {}).get("workers", 0) < args.workers:
        time.sleep(0.05)
    loop = ClosedLoop(args.builds, args.concurrency,
                      lambda b: dispatcher.start(StartBuild(b, FUNCTION, {"ZUUL_UUID": b})))
    loop_box["loop"] = loop
    elapsed = loop.run()
    stop.set()
    for _, w in workers:
        w.shutdown()
    dispatcher.shutdown()
    return elapsed, loop.rtts


class _StockClient(gear.Client):
    def __init__(self, on_complete):
        super().__init__("stock")
        self.on_complete = on_complete

    def handleWorkComplete(self, packet):  # noqa: N802
        job = super().handleWorkComplete(packet)
        self.on_complete(job.unique.decode() if isinstance(job.unique, bytes) else job.unique)
        return job


def run_stock(args) -> tuple[float, list[float]]:
    server = gear.Server(0, host="127.0.0.1")
    stop = threading.Event()
    loop_box: dict = {}
    client = _StockClient(lambda b: loop_box["loop"].completed(b))
    client.addServer("127.0.0.1", server.port)
    client.waitForServer(10)
    workers = []
    for i in range(args.workers):
        w = gear.Worker(f"stock-w{i}")
        w.addServer("127.0.0.1", server.port)
        w.registerFunction(FUNCTION)
        w.waitForServer(10)

        def loop(w=w):
            while not stop.is_set():
                try:
                    job = w.getJob()
                except gear.InterruptedError:
                    return
                job.sendWorkComplete(b'{"result": "SUCCESS"}')
        threading.Thread(target=loop, daemon=True).start()
        workers.append(w)
    time.sleep(0.5)
    loop = ClosedLoop(args.builds, args.concurrency, lambda b: client.submitJob(
        gear.Job(FUNCTION.encode(), b"{}", unique=b.encode())))
    loop_box["loop"] = loop
    elapsed = loop.run()
    stop.set()
    for w in workers:
        w.shutdown()
    client.shutdown()
    server.shutdown()
    return elapsed, loop.rtts




def main() -> None:
    tune_threads()  # as `ccci-gate serve` and `ccci-gate worker` do
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=3000)
    parser.add_argument("--stock-builds", type=int, default=300,
                        help="builds for the (slow) stock gear run (default: 300)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    rows = []
    server = EmbeddedServer("127.0.0.1", 0)
    rows.append(("ours/embedded", *run_ours([("127.0.0.1", server.port)], args)))
    server.shutdown()

    gearmand = shutil.which("gearmand") or "/usr/sbin/gearmand"
    if Path(gearmand).exists():
        port = free_port()
        proc = subprocess.Popen([gearmand, "-L", "127.0.0.1", "-p", str(port), "--log-file", "none"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            rows.append(("ours/gearmand", *run_ours([("127.0.0.1", port)], args)))
        finally:
            proc.terminate()
            proc.wait(10)
    else:
        print("(gearmand not installed: skipping ours/gearmand)")

    stock_args = argparse.Namespace(**{**vars(args), "builds": args.stock_builds})
    stock = run_stock(stock_args)
    rows.append(("stock gear", *stock))
    stock_rate = len(stock[1]) / stock[0]

    print(f"no-op builds, concurrency {args.concurrency}, {args.workers} worker threads")
    print(f"{'configuration':<16} {'builds':>7} {'builds/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs stock':>9}")
    for name, elapsed, rtts in rows:
        rate = len(rtts) / elapsed
        q = statistics.quantiles(rtts, n=100)
        print(f"{name:<16} {len(rtts):>7} {rate:>10.0f} {statistics.median(rtts) * 1000:>8.2f} "
              f"{q[98] * 1000:>8.2f} {rate / stock_rate:>8.1f}x")


if __name__ == "__main__":
    main()
