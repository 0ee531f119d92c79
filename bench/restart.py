"""Gatekeeper restarts under load: the restart rows of the fault table (issue 10).

Each trial (``tests/restart_harness.py``): a ``ccci-gate serve`` process and a
``ccci-gate worker`` process, 30 pull requests (20 check, 10 gate, two shell jobs each)
against the fake Gitea; the gatekeeper is stopped mid-run and started again on the same
state. Per fault: trials, items finished, lost, reported twice, wrong verdicts, orphans
(the last four must be 0), and the slowest stop.

    python3 bench/restart.py [--trials 3]
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from restart_harness import Tally, Trial  # noqa: E402

FAULTS = [("gatekeeper SIGTERM, embedded server", "embedded", signal.SIGTERM),
          ("gatekeeper SIGKILL, embedded server", "embedded", signal.SIGKILL),
          ("gatekeeper SIGKILL, gearmand", "gearmand", signal.SIGKILL)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    gearmand = shutil.which("gearmand") or "/usr/sbin/gearmand"
    print(f"{'fault':<38} {'trials':>6} {'finished':>9} {'lost':>5} {'twice':>6} {'wrong':>6} "
          f"{'orphans':>8} {'max stop s':>10}")
    for name, server, sig in FAULTS:
        total, slowest = Tally(), 0.0
        for _ in range(args.trials):
            tmp = tempfile.mkdtemp(prefix="ccci-restart-")
            trial = Trial(Path(tmp), server, gearmand)
            try:
                tally = trial.run(sig)
            finally:
                trial.close()
            if tally.problems or tally.lost:
                print(f"  {name}: logs kept in {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            for key in ("finished", "lost", "reported_twice", "wrong", "orphans"):
                setattr(total, key, getattr(total, key) + getattr(tally, key))
            slowest = max(slowest, tally.stop_seconds)
            for problem in tally.problems:
                print(f"  {name}: {problem}", file=sys.stderr)
        print(f"{name:<38} {args.trials:>6} {total.finished:>9} {total.lost:>5} "
              f"{total.reported_twice:>6} {total.wrong:>6} {total.orphans:>8} {slowest:>10.1f}")


if __name__ == "__main__":
    main()
