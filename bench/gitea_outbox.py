"""How soon Gitea hears the gate's results after an outage: the outbox's backlog, drained.

Writes (statuses and PR comments, in the proportions of a busy gate) pile up while a
fake Gitea (``tests/fake_gitea.py``, which checks each request against Gitea's API
description) answers 503 for a simulated ``--minutes`` outage; then Gitea comes back and
the clock runs until the last write is accepted. Printed side by side from the same
run: the wait before the first try after the outage under the old policy (delay
``2**attempts`` up to 300 s) and ours (capped at ``MAX_DELAY``), the time to drain the
backlog once a try is made, and whether every write arrived once, in order.

    python3 bench/gitea_outbox.py [--writes 1000] [--minutes 20]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_gitea import FakeGitea  # noqa: E402

from ccci_gate.drivers.gitea.api import GiteaAPI  # noqa: E402
from ccci_gate.drivers.gitea.reporter import MAX_DELAY, Outbox  # noqa: E402
from ccci_gate.drivers.gitea.store import GiteaStore  # noqa: E402

REPO = "org/bench"
OLD_MAX_DELAY = 300.0


def attempts_after(minutes: float, cap: float) -> int:
    """How many tries a doubling delay, capped at ``cap``, makes in ``minutes``."""
    elapsed, attempts = 0.0, 0
    while elapsed < minutes * 60:
        elapsed += min(cap, 2.0 ** attempts)
        attempts += 1
    return attempts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=20.0)
    args = parser.parse_args()
    fake = FakeGitea().start()
    fake.add_pull(REPO, 1, "a" * 40)
    store = GiteaStore(Path(tempfile.mkdtemp()) / "gitea.sqlite")
    outbox = Outbox(GiteaAPI(fake.url, fake.token, retries=0), store, threading.Event())
    fake.down_status, fake.down = 503, True
    for n in range(args.writes):
        if n % 10 == 9:
            store.push("comment", REPO, f"1/p{n}", {"body": f"result {n}"})
        else:
            store.push("status", REPO, "a" * 40, {"state": "success", "context": f"ccci/c{n}",
                                                  "description": f"status {n}", "target_url": ""})
    logging.disable(logging.WARNING)
    outbox.flush_one()                                   # one real failed try (the head)
    tries = attempts_after(args.minutes, MAX_DELAY)
    store._run("UPDATE outbox SET attempts = ? WHERE id = (SELECT MIN(id) FROM outbox)", (tries,))
    old_wait = min(OLD_MAX_DELAY, 2.0 ** attempts_after(args.minutes, OLD_MAX_DELAY))
    our_wait = min(MAX_DELAY, 2.0 ** tries)
    fake.down = False
    store._run("UPDATE outbox SET next_at = 0")          # skip the wait itself: measured above
    start = time.perf_counter()
    while outbox.flush_one():
        pass
    drain = time.perf_counter() - start
    sent = [b["description"] for _, _, b in fake.statuses]
    expected = [f"status {n}" for n in range(args.writes) if n % 10 != 9]
    comments = len([c for c in fake.comments.values() if c["user"] == fake.bot])
    ok = sent == expected and comments == args.writes // 10 and not fake.violations
    print(f"backlog after a {args.minutes:g}-minute outage: {args.writes} writes")
    print(f"  wait before the first try after Gitea returns, at most: old {old_wait:.0f} s, "
          f"ours {our_wait:.0f} s ({old_wait / our_wait:.0f}x sooner)")
    print(f"  drain once tried: {drain:.2f} s ({args.writes / drain:.0f} writes/s); "
          f"worst case from Gitea's return: old {old_wait + drain:.0f} s, ours {our_wait + drain:.0f} s")
    print(f"  every write once, in order: {'yes' if ok else 'NO'}")
    store.close()
    fake.stop()


if __name__ == "__main__":
    main()
