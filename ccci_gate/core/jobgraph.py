"""The job graph: jobs and their ``requires``.

A job is *ready* when every job it requires finished with SUCCESS; a job whose
ancestor finished with anything else is SKIPPED and never dispatched. Jobs with no
path between them run in parallel. Non-voting jobs never fail the item, but their
children still wait on them (a failed non-voting parent SKIPs its children).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .layout import JobConfig


class CycleError(ValueError):
    """``requires`` forms a cycle; ``cycle`` lists the jobs in it, in order."""

    def __init__(self, cycle: list[str]):
        super().__init__("cycle in requires: " + " -> ".join(cycle))
        self.cycle = cycle


def find_cycle(requires: Mapping[str, Iterable[str]]) -> list[str] | None:
    """The first cycle in ``requires`` (job → parents), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for parent in requires.get(node, ()):
            if state.get(parent) == 1:
                return stack[stack.index(parent):] + [parent]
            if parent not in state and parent in requires:
                found = visit(parent)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in requires:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@dataclass(frozen=True)
class JobGraph:
    """An immutable set of jobs closed under ``requires``, in a stable order."""

    jobs: tuple[JobConfig, ...]

    def __post_init__(self) -> None:
        cycle = find_cycle({j.name: j.requires for j in self.jobs})
        if cycle:
            raise CycleError(cycle)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.jobs)

    def job(self, name: str) -> JobConfig:
        for j in self.jobs:
            if j.name == name:
                return j
        raise KeyError(name)

    def ready(self, results: Mapping[str, str], started: Iterable[str]) -> list[JobConfig]:
        """Jobs not yet started whose parents all succeeded.

        ``results`` maps finished jobs to their result string; ``started`` names every
        job that has a build already (running or finished).
        """
        started = set(started)
        return [j for j in self.jobs if j.name not in started
                and all(results.get(r) == "SUCCESS" for r in j.requires)]

    def to_skip(self, results: Mapping[str, str], started: Iterable[str]) -> list[JobConfig]:
        """Jobs never started that can no longer run: an ancestor did not succeed."""
        started = set(started)
        blocked: set[str] = {n for n, r in results.items() if r != "SUCCESS"}
        out: list[JobConfig] = []
        changed = True
        while changed:
            changed = False
            for j in self.jobs:
                if j.name in blocked or j.name in started:
                    continue
                if any(r in blocked for r in j.requires):
                    blocked.add(j.name)
                    out.append(j)
                    changed = True
        return out

    def descendants(self, name: str) -> list[str]:
        """Every job that (transitively) requires ``name``."""
        out: list[str] = []
        frontier = {name}
        while frontier:
            nxt = {j.name for j in self.jobs if set(j.requires) & frontier and j.name not in out}
            out.extend(sorted(nxt))
            frontier = nxt
        return out
