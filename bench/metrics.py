"""What a ``/metrics`` scrape costs beside a ``/status.json`` answer, for a big queue.

The status (``tests/fixtures/status/small.json``'s item, copied ``--items`` times over
``--pipelines`` pipelines) is what the scheduler would publish; the scrape's observed
histograms hold one series per job and result of ``--jobs`` jobs. Printed side by side
from the same run: the time to encode ``/status.json`` (what the status API does per
request: ``Response.json`` of the snapshot) and the time of a scrape (``generate_latest``
of the gatekeeper's registry, every collector included).

    python3 bench/metrics.py [--items 500] [--jobs 20] [--rounds 50]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from prometheus_client import generate_latest

from ccci_gate.alerts import Alerts
from ccci_gate.web.metrics import GateMetrics
from ccci_gate.web.routes import Response
from ccci_gate.web.snapshot import Snapshot

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "status" / "small.json"


def status_of(items: int, pipelines: int) -> dict:
    data = json.loads(FIXTURE.read_text())
    item = data["pipelines"][0]["queues"][0]["items"][0]
    data["pipelines"] = [
        {"name": f"p{p}", "manager": "independent", "paused": False, "description": "",
         "queues": [{"name": f"q{i}", "window": 0, "items": [copy.deepcopy(item)]}
                    for i in range(items // pipelines)]} for p in range(pipelines)]
    return data


def timed(fn, rounds: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--pipelines", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    status = status_of(args.items, args.pipelines)
    metrics = GateMetrics()
    for j in range(args.jobs):
        for result in ("SUCCESS", "FAILURE"):
            metrics.durations.labels(f"job{j}", result).observe(30.0)
        metrics.taken(f"build:job{j}", 0.1)
    for kind in ("EnqueueRequest", "BuildStarted", "BuildCompleted", "RefPrepared"):
        metrics.handled(kind, 0.001)
    pool = Snapshot("pool", lambda: status["pool"])
    metrics.watch(lambda: status, lambda: 0, Alerts(lambda: status, pool))
    encode = timed(lambda: Response.json(status), args.rounds)
    scrape = timed(lambda: generate_latest(metrics.registry), args.rounds)
    size = len(generate_latest(metrics.registry))
    print(f"{args.items} items in {args.pipelines} pipelines, {args.jobs} jobs, "
          f"{args.rounds} rounds")
    print(f"{'what':<34} {'ms':>8}")
    print(f"{'/status.json encoding (baseline)':<34} {encode * 1000:>8.2f}")
    print(f"{'/metrics scrape':<34} {scrape * 1000:>8.2f}   {scrape / encode:.2f}x, "
          f"{size} bytes")


if __name__ == "__main__":
    main()
