"""Items per second end to end through the scheduler, for a one-job no-op pipeline.

Each item goes the whole way: enqueue event → engine → speculative ref → StartBuild on
the real dispatcher → embedded Gearman server → worker threads (answering SUCCESS at
once) → BuildCompleted → report → SQLite. Printed side by side from the same run:

- ``no store``: persistence off (the baseline: what SQLite costs)
- ``store``: persistence on (SQLite WAL file), merger answering at once
- ``store + metrics``: persistence on, and ``/metrics``' observers (``web/metrics.py``:
  event times, items and builds counted from each batch, dispatch latency)
- ``store + git merger``: also the real git merger building a speculative ref per item
  (a merge of the change onto the tip, in a bare mirror) — the merger's own cost

    python3 bench/scheduler.py [--items 2000] [--workers 2]
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ccci_gate.gearman.protocol import tune_threads
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig
from ccci_gate.core.model import Change
from ccci_gate.gearman.dispatcher import GearmanDispatcher
from ccci_gate.gearman.server import EmbeddedServer
from ccci_gate.gearman.worker import GearmanWorker
from ccci_gate.merger import GitMerger
from ccci_gate.scheduler import Scheduler
from ccci_gate.store import Store
from ccci_gate.web.metrics import GateMetrics

LAYOUT = Layout(
    pipelines={"check": PipelineConfig("check", triggers={"admin": ()},
                                       reporters={"success": {"count": {}}, "failure": {"count": {}}})},
    projects={"org/bench": ProjectConfig("org/bench", pipelines={"check": ("noop",)})},
    jobs={"noop": JobConfig("noop")})


class InstantMerger:
    def __init__(self):
        self.put = None

    def prepare(self, action):
        self.put(ev.RefPrepared(action.buildset_id, f"refs/zuul/main/Z{action.buildset_id}", "0" * 40))

    def url(self):
        return ""


class Counter:
    def __init__(self, total: int):
        self.total, self.count = total, 0
        self.done = threading.Event()
        self.results: dict[str, int] = {}

    def report(self, action):
        self.count += 1
        result = action.summary.get("result")
        self.results[result] = self.results.get(result, 0) + 1
        if self.count >= self.total:
            self.done.set()


def upstream_repo(root: Path, items: int) -> Path:
    """A repo with ``items`` pull request refs, one small commit each."""
    repo = root / "up" / "org" / "bench"
    repo.mkdir(parents=True)
    env_git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "base").write_text("base\n")
    subprocess.run(env_git + ["add", "."], check=True)
    subprocess.run(env_git + ["commit", "-qm", "base"], check=True)
    # one fast-import stream for every PR commit
    lines = []
    for i in range(1, items + 1):
        data = f"change {i}\n"
        lines += [f"commit refs/pull/{i}/head", f"mark :{i}",
                  "committer b <b@b> 1700000000 +0000", "data 2", "c", "from refs/heads/main",
                  f"M 644 inline f{i}", f"data {len(data)}", data.rstrip("\n")]
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"],
                   input=("\n".join(lines) + "\n").encode(), check=True)
    return repo


def run(items: int, workers: int, persist: bool, git_merger: bool, tmp: Path,
        metrics: bool = False) -> tuple[float, dict]:
    server = EmbeddedServer("127.0.0.1", 0)
    servers = [("127.0.0.1", server.port)]
    counter = Counter(items)
    store = Store(tmp / f"state-{persist}-{git_merger}.sqlite") if persist else None
    holder: dict = {}
    emit = lambda event: holder["scheduler"].put(event)  # noqa: E731
    observer = GateMetrics() if metrics else None
    dispatcher = GearmanDispatcher(servers, emit, tmp / "logs",
                                   **({"on_taken": observer.taken} if observer else {}))
    if git_merger:
        upstream_repo(tmp / "g", items)
        merger = GitMerger(tmp / "g" / "merger", lambda p: str(tmp / "g" / "up" / p), emit, "")
    else:
        merger = InstantMerger()
        merger.put = emit
    scheduler = Scheduler(Engine(LAYOUT), merger, dispatcher, store, reporters={"count": counter},
                          observer=observer)
    holder["scheduler"] = scheduler
    stop = threading.Event()
    ws = []
    for i in range(workers):
        w = GearmanWorker(servers, f"w{i}", ["build:noop"])
        w.wait_for_server(10)
        ws.append(w)

        def loop(w=w):
            while not stop.is_set():
                req = w.get_build(0.5)
                if req is not None:
                    req.started(w.name)
                    req.complete("SUCCESS")
        threading.Thread(target=loop, daemon=True).start()
    dispatcher.wait_for_server(10)
    while dispatcher.pool()["functions"].get("build:noop", {}).get("workers", 0) < workers:
        time.sleep(0.05)
    scheduler.start()
    t0 = time.perf_counter()
    for i in range(1, items + 1):
        scheduler.put(ev.EnqueueRequest("check", Change("org/bench", "main", f"refs/pull/{i}/head",
                                                        number=i)))
    if not counter.done.wait(600):
        raise RuntimeError(f"only {counter.count}/{items} items reported")
    elapsed = time.perf_counter() - t0
    scheduler.stop()
    stop.set()
    for w in ws:
        w.shutdown()
    dispatcher.shutdown()
    server.shutdown()
    if store is not None:
        assert len(store.history(limit=items)) == items, "not every item reached the store"
        store.close()
    return elapsed, counter.results


def main() -> None:
    tune_threads()  # as `ccci-gate serve` and `ccci-gate worker` do
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--git-items", type=int, default=300,
                        help="items for the run with the real git merger (default: 300)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, persist, git, metrics, count in (
                ("no store", False, False, False, args.items),
                ("store", True, False, False, args.items),
                ("store + metrics", True, False, True, args.items),
                ("store + git merger", True, True, False, args.git_items)):
            elapsed, results = run(count, args.workers, persist, git, Path(tmp) / name.replace(" ", ""),
                                   metrics)
            rows.append((name, count, count / elapsed, results))
    base = rows[0][2]
    print(f"one-job no-op pipeline, {args.workers} worker threads, embedded Gearman server")
    print(f"{'configuration':<20} {'items':>6} {'items/s':>9} {'vs no store':>12}  results")
    for name, count, rate, results in rows:
        print(f"{name:<20} {count:>6} {rate:>9.0f} {rate / base:>11.2f}x  {results}")


if __name__ == "__main__":
    main()
