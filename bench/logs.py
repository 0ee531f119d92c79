"""Logs at rest: what compressing a finished log saves and costs, beside the plain log
it replaces (the baseline: how logs were kept before), in one run.

A build log is synthesised (worker-like lines: timestamps, docker service states, task
ids, sha fragments; ``--mb`` megabytes) and served by the real listener with the
``/logs`` routes (``web/logs.py``) twice: as a running log (plain ``<id>.log``) and as a
finished one (``<id>.log.gz``). For each it measures bytes on disk, the whole log
fetched by a client that accepts gzip (bytes on the wire, p50 of 5), and ``Range: bytes=-4096``
(the tail ``logs -f`` or a browser asks for), p50 of ``--requests`` requests.

    python3 bench/logs.py [--mb 50] [--requests 50]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from log_helpers import item_summary, serve_logs  # noqa: E402


def synthetic_log(size: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    words = ["converged", "healthy", "starting", "pulling", "running", "settled", "probe ok",
             "snapshot", "volume", "network", "secret", "upgrade", "rollback?", "no"]
    lines, total, n = [], 0, 0
    while total < size:
        n += 1
        line = (f"2026-11-26 09:{n // 60 % 60:02d}:{n % 60:02d}.{rng.randrange(1000):03d} "
                f"[{rng.choice(['app', 'db', 'web', 'worker'])}] "
                f"task {rng.getrandbits(48):012x} {rng.choice(words)} "
                f"{rng.randrange(1, 4)}/{rng.randrange(1, 4)} "
                f"sha {rng.getrandbits(32):08x} step {n}\n")
        lines.append(line)
        total += len(line)
    return "".join(lines)


def p50(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args()
    text = synthetic_log(int(args.mb * 1e6))
    with tempfile.TemporaryDirectory() as tmp:
        web, logs, store = serve_logs(Path(tmp))
        build = uuid.uuid4().hex
        store.save_items([item_summary([{"id": build}])], finished=True)
        logs.append(build, text)
        url = f"{web.url}/logs/{build}"
        http = requests.Session()
        rows = []
        for label in ("running (plain, before)", "finished (gzip at rest)"):
            if label.startswith("finished"):
                t = time.perf_counter()
                logs.finish(build)
                compress = time.perf_counter() - t
            disk = (logs.packed(build) if logs.state(build) == "finished"
                    else logs.plain(build)).stat().st_size
            wire = 0

            def fetch_whole() -> None:
                nonlocal wire
                whole = http.get(url, headers={"Accept-Encoding": "gzip"}, stream=True,
                                 timeout=60)
                wire = len(whole.raw.read())
            fetch = p50(fetch_whole, 5)
            tail = p50(lambda: http.get(url, headers={"Range": "bytes=-4096"}, timeout=60),
                       args.requests)
            rows.append((label, disk, wire, fetch, tail))
        web.shutdown()
        store.close()
    print(f"log of {len(text) / 1e6:.1f} MB (synthetic worker lines); compressing it took "
          f"{compress:.2f} s")
    print("| log | on disk | whole log on the wire (gzip client) | whole log p50 ms | "
          "tail 4 KiB p50 ms |")
    print("|---|---|---|---|---|")
    for label, disk, wire, fetch, tail in rows:
        print(f"| {label} | {disk / 1e6:.2f} MB | {wire / 1e6:.2f} MB | {fetch:.0f} | "
              f"{tail:.2f} |")
    (_, d0, w0, _, t0), (_, d1, w1, _, t1) = rows
    print(f"ratios finished/running: disk {d1 / d0:.3f}, wire {w1 / w0:.3f}, tail {t1 / t0:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
