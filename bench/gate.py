"""Gate strategies under scarce capacity, simulated through the real scheduler engine.

A stream of changes (each bad with probability ``--failure-rate``; a build fails when
its speculative ref holds a bad change) flows through the real ``Engine`` and its
dependent manager. Simulated workers run at most ``--capacity`` builds at once, each
taking ``--job-minutes``; cancelled builds free their slot at once; the merger and the
source answer at once, and every merge is checked to land exactly a tested combination. Printed from the same run, for each strategy: merges per hour and
worker runs per merge, and the ratios to the speculative window and to one at a time.

- one at a time: a dependent pipeline with a window of 1
- speculative window: Zuul's defaults (20 / floor 3 / +1 / ÷2)
- batching + bisection: ``batch: true``

Also times the engine resetting a 500-item queue after a failure at its head.

    python3 bench/gate.py [--changes 200] [--capacity 2] [--failure-rate 0.1] [--seeds 3]
"""
from __future__ import annotations

import argparse
import gc
import heapq
import random
import statistics
import time

from ccci_gate.core import actions as act
from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig, WindowConfig
from ccci_gate.core.model import Change

STRATEGIES = {
    "one at a time": dict(window=WindowConfig(start=1, floor=1, increase=0, decrease_factor=1)),
    "speculative window": dict(window=WindowConfig()),
    "batching + bisection": dict(window=WindowConfig(), batch=True),
}


def layout(window: WindowConfig, batch: bool = False) -> Layout:
    return Layout(
        pipelines={"gate": PipelineConfig("gate", manager="dependent", window=window, batch=batch,
                                          triggers={"admin": ()})},
        projects={"org/r": ProjectConfig("org/r", pipelines={"gate": ("test",)})},
        jobs={"test": JobConfig("test")})


class Simulation:
    """Discrete-event world around an engine: time is simulated minutes."""

    def __init__(self, lay: Layout, bad: set[int], capacity: int, minutes: float):
        self.now = 0.0
        self.engine = Engine(lay, clock=lambda: self.now)
        self.bad, self.capacity, self.minutes = bad, capacity, minutes
        self.waiting: list[act.StartBuild] = []
        self.running: dict[str, float] = {}      # build id → finish time
        self.holds: dict[str, set[int]] = {}
        self.finishing: list[tuple[float, int, str]] = []  # (end, order started, build)
        self.runs = 0
        self.merged = 0
        self.landed: list[int] = []           # the branch: merged changes in order
        self.commits: dict[str, tuple] = {}   # step commit → (tip it was built on, changes)

    def handle(self, event: ev.Event) -> None:
        pending = list(self.engine.handle(event))
        while pending:
            action = pending.pop(0)
            if isinstance(action, act.PrepareRef):
                numbers = [c.number for c in action.changes]
                # a step commit says which tip it was built on and what it adds to it
                steps = tuple((len(self.landed), tuple(numbers[:k + 1])) for k in range(len(numbers)))
                self.commits.update({repr(step): step for step in steps})
                pending += self.engine.handle(ev.RefPrepared(
                    action.buildset_id, "r", repr(steps[-1]), "t", tuple(map(repr, steps))))
            elif isinstance(action, act.StartBuild):
                self.holds[action.build_id] = {
                    int(p.rsplit("/", 2)[-2]) for p in action.parameters["ZUUL_CHANGES"].split("^")}
                self.waiting.append(action)
            elif isinstance(action, act.CancelBuild):
                self.waiting = [w for w in self.waiting if w.build_id != action.build_id]
                self.running.pop(action.build_id, None)
            elif isinstance(action, act.MergeChange):
                self.check_tested(action)
                self.landed.append(action.change.number)
                self.merged += 1
                pending += self.engine.handle(ev.ItemMerged(action.item_id))
        self._dispatch()

    def check_tested(self, action: act.MergeChange) -> None:
        """Every merge lands exactly a combination that was tested."""
        tip, held = self.commits[action.commit or ""]
        landed = (*self.landed[tip:], action.change.number)
        assert tuple(n for n in held if n not in self.landed[:tip]) == landed, (held, landed)

    def _dispatch(self) -> None:
        while self.waiting and len(self.running) < self.capacity:
            build = self.waiting.pop(0)
            self.runs += 1
            end = self.now + self.minutes
            self.running[build.build_id] = end
            heapq.heappush(self.finishing, (end, self.runs, build.build_id))

    def run(self, changes: int) -> float:
        for n in range(1, changes + 1):
            self.handle(ev.EnqueueRequest("gate", Change("org/r", "main", f"refs/pull/{n}/head",
                                                         number=n, patchset=f"s{n}", sha=f"s{n}")))
        while self.finishing:
            end, _, build_id = heapq.heappop(self.finishing)
            if self.running.get(build_id) != end:
                continue  # cancelled
            del self.running[build_id]
            self.now = end
            result = "FAILURE" if self.holds.pop(build_id) & self.bad else "SUCCESS"
            self.handle(ev.BuildCompleted(build_id, result))
        return self.now


def simulate(name: str, changes: int, capacity: int, rate: float, minutes: float, seed: int):
    rng = random.Random(seed)
    bad = {n for n in range(1, changes + 1) if rng.random() < rate}
    sim = Simulation(layout(**STRATEGIES[name]), bad, capacity, minutes)
    elapsed = sim.run(changes)
    assert sim.merged == changes - len(bad), (name, sim.merged, changes, len(bad))
    return sim.merged / (elapsed / 60.0), sim.runs / max(1, sim.merged)


def reset_time(items: int = 500) -> float:
    """Seconds for the engine to handle a failure at the head of an ``items`` queue."""
    window = WindowConfig(start=items, floor=3, increase=1, decrease_factor=2)
    sim = Simulation(layout(window), set(), capacity=items, minutes=1)
    for n in range(1, items + 1):
        sim.handle(ev.EnqueueRequest("gate", Change("org/r", "main", f"refs/pull/{n}/head",
                                                    number=n, patchset=f"s{n}", sha=f"s{n}")))
    head = next(b for b in sim.running if 1 in sim.holds[b] and len(sim.holds[b]) == 1)
    gc.collect()   # the set-up's garbage is not the reset's cost
    t0 = time.perf_counter()
    out = sim.engine.handle(ev.BuildCompleted(head, "FAILURE"))
    elapsed = time.perf_counter() - t0
    resets = sum(isinstance(a, act.PrepareRef) for a in out)
    assert resets >= 2, resets  # everything behind the head was reset
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=2)
    parser.add_argument("--failure-rate", type=float, default=0.1)
    parser.add_argument("--job-minutes", type=float, default=30.0)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows = {}
    for name in STRATEGIES:
        results = [simulate(name, args.changes, args.capacity, args.failure_rate,
                            args.job_minutes, seed) for seed in range(args.seeds)]
        rows[name] = (statistics.mean(r[0] for r in results), statistics.mean(r[1] for r in results))
    one, window = rows["one at a time"][0], rows["speculative window"][0]
    print(f"{args.changes} changes, capacity {args.capacity}, failure rate {args.failure_rate:.0%}, "
          f"{args.job_minutes:g}-minute job, mean of {args.seeds} seeds")
    print(f"{'strategy':<22} {'merges/hour':>12} {'runs/merge':>11} {'vs window':>10} {'vs one':>8}")
    for name, (mph, runs) in rows.items():
        print(f"{name:<22} {mph:>12.2f} {runs:>11.2f} {mph / window:>9.2f}x {mph / one:>7.2f}x")
    times = sorted(reset_time() for _ in range(5))
    print(f"engine: reset of a 500-item queue after a failure at its head: "
          f"{times[len(times) // 2] * 1000:.1f} ms (median of 5)")


if __name__ == "__main__":
    main()
