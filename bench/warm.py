"""The quick lane beside the cold lane: ``recipe-systest`` of one pull request head, both
lanes in one run, on a recipe whose first boot on an empty volume is slow.

The recipe is the fault recipe of the tests (``tests/fault_recipes.py``: app + sidecar,
a volume, a secret, seed and verify hooks) whose app, on an empty volume, spends
``--init`` seconds initialising before it serves (as a database creating its cluster
would), and about a second on initialised data. Both lanes have the same settle window
(the recipe's ``ccci.settle=6``) and the same checks.

1. The canonical is seeded: a cold systest of the latest release (1.1.0+1) from the
   branch, which promotes it (not timed).
2. Then, ``--rounds`` times alternating: the cold systest of the head (1.2.0+1), and the
   quick one (reattach the canonical at its known-good, upgrade it in place).

It prints each round, the medians of both lanes and their ratio, and where each lane
spent its time (phases ended by the log lines of ``PHASES``).

Needs a Docker Engine in swarm mode and Debian's busybox-static; takes the Docker tests'
lock, so it never runs beside them.

    python3 bench/warm.py [--init 30] [--rounds 1]
"""
from __future__ import annotations

import argparse
import fcntl
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ccci_gate.swarm import warm  # noqa: E402
from ccci_gate.swarm.host import Host  # noqa: E402
from ccci_gate.swarm.port import SwarmPort  # noqa: E402
from ccci_gate.worker.kinds import get_kind  # noqa: E402
from fault_recipes import make_faulty  # noqa: E402
from recipe_helpers import checkout, context  # noqa: E402


def slow_first_boot(seconds: int):
    def base(compose: dict) -> None:
        app = compose["services"]["app"]
        app["command"] = ["sh", "-c", f"test -f /data/.initialised || {{ sleep {seconds}; "
                          f"echo done > /data/.initialised; }}; exec httpd -f -p 8080 -h /www"]
        app["healthcheck"]["start_period"] = f"{seconds + 30}s"
    return base


# where each phase of a lane ends, by the log line that ends it (the log's own words)
PHASES = {
    "cold": [("base deployed, first boot", "converged: "), ("seed", "ccci-seed passed"),
             ("upgrade", "upgraded in place"), ("settle", "settled: "),
             ("probe", "readiness: "), ("checks", "the recipe has no tests/ccci-check"),
             ("round trip", "round trip of"), ("teardown", "nothing of ")],
    "quick": [("refill volumes", "refilled "), ("reattach, healthy", "reattached "),
              ("upgrade", "upgraded in place"), ("settle", "settled: "),
              ("probe", "readiness: "), ("checks", "the recipe has no tests/ccci-check"),
              ("undeploy", "quick PASS")],
}
STAMP = re.compile(r"^\[\s*([0-9.]+)\] (.*)$")


def phases(lane: str, log: str) -> dict[str, float]:
    """Seconds spent in each phase of ``lane``, from the timestamps of its log."""
    stamps = [(float(m.group(1)), m.group(2)) for m in map(STAMP.match, log.splitlines()) if m]
    out, last = {}, 0.0
    for name, marker in PHASES[lane]:
        when = next((t for t, text in stamps if marker in text and t >= last), None)
        if when is not None:
            out[name], last = when - last, when
    return out


def systest(tmp: Path, host: Host, repo: Path, ref: str, name: str, **params) -> tuple[float, str]:
    ws = checkout(repo, tmp / f"ws-{name}", ref)
    ctx, lines = context(ws, "systest", recipe="faulty", CCCI_WARM="1", **params)
    began = time.monotonic()
    ctx.log = lambda text: lines.append(f"[{time.monotonic() - began:6.1f}] {text}")
    ctx.deadline = time.monotonic() + 900
    kind = get_kind("recipe-systest")
    kind._host = host
    started = time.monotonic()
    result = kind.run(ctx)
    elapsed = time.monotonic() - started
    if result != "SUCCESS":
        sys.exit(f"{name}: {result}\n" + "".join(lines))
    return elapsed, "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=int, default=30, help="first-boot seconds (default 30)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--logs", action="store_true", help="print each run's timed log")
    args = parser.parse_args()
    lock = open(os.path.join(tempfile.gettempdir(), "ccci-gate-docker-tests.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    port = SwarmPort()
    with tempfile.TemporaryDirectory(prefix="ccci-bench-warm-") as folder:
        tmp = Path(folder)
        os.environ["CCCI_WARM_ROOT"] = str(tmp / "warm")
        host = Host(tmp / "state", max_tests=1)
        repo, sha = make_faulty(tmp / "repos", base=slow_first_boot(args.init))
        try:
            seeded, log = systest(tmp, host, repo, "main", "seed")
            assert "promoted: the canonical" in log, log
            print(f"seeded the canonical (a cold systest of 1.1.0+1 that promotes) in "
                  f"{seeded:.1f}s")
            cold, quick = [], []
            split: dict[str, list[dict[str, float]]] = {"cold": [], "quick": []}
            for n in range(args.rounds):
                took, log = systest(tmp, host, repo, "refs/pull/1/head", f"cold{n}",
                                    ZUUL_CHANGE="1", ZUUL_COMMIT=sha)
                assert "lane: cold" in log and "the note survived" in log, log
                cold.append(took)
                cold_log = log
                split["cold"].append(phases("cold", log))
                took, log = systest(tmp, host, repo, "refs/pull/1/head", f"quick{n}",
                                    CCCI_QUICK="1", ZUUL_CHANGE="1", ZUUL_COMMIT=sha)
                assert "lane: quick" in log and "the note survived" in log, log
                quick.append(took)
                split["quick"].append(phases("quick", log))
                if args.logs:
                    print(cold_log + log)
                print(f"round {n + 1}: cold {cold[-1]:.1f}s, quick {quick[-1]:.1f}s "
                      f"= {quick[-1] / cold[-1]:.2f}x")
        finally:
            for canonical in warm.canonicals(tmp / "warm"):
                warm.drop(port, canonical)
    c, q = statistics.median(cold), statistics.median(quick)
    print(f"\nrecipe-systest of one head, first boot {args.init}s on an empty volume "
          f"(median of {args.rounds}):")
    print(f"  cold lane   {c:6.1f} s")
    print(f"  quick lane  {q:6.1f} s   = {q / c:.2f}x cold (target <= 0.40x)")
    for lane in ("cold", "quick"):
        names = [name for name, _ in PHASES[lane]]
        medians = {name: statistics.median(r.get(name, 0.0) for r in split[lane])
                   for name in names}
        print(f"  {lane} phases (medians, s): " + ", ".join(
            f"{name} {value:.1f}" for name, value in medians.items()))


if __name__ == "__main__":
    main()
