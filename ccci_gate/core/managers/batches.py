"""The batching gate's own state: what it knows beside the items, and its records.

Vocabulary (see ``batching.py`` for the algorithm):

- **probe**: the item whose builds test a batch (the lane) or a prefix of a group.
- **proof**: the changes a passing probe's ref held up to an item, and the tested
  commit that holds them; the item merges at that commit once they all have.
- **group**: a failed batch set aside to be bisected; ``members`` in order; the prefix
  up to ``lo - 1`` passed, the prefix up to ``hi`` failed.

:class:`BatchingState` is owned by the :class:`~.batching.BatchingManager`; items carry
none of it. It turns into plain data and back (``to_record``/``from_record``) with the
rest of the engine's state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..model import Change, Item

START_RATE = 0.1


@dataclass
class Marks:
    """What batching knows about one item."""

    proven: tuple[Change, ...] = ()   # the changes it was proven good with
    proven_commit: str = ""           # ... and the tested commit that holds them
    mark: int = 0                     # how many changes of its queue had merged then
    probe_failed: bool = False        # a test of the changes up to it failed
    aside: str = ""                   # the group it is being bisected in

    def to_record(self, change_record: Callable[[Change], Any]) -> dict[str, Any]:
        return {"proven": [change_record(c) for c in self.proven],
                "proven_commit": self.proven_commit, "mark": self.mark,
                "probe_failed": self.probe_failed, "aside": self.aside}

    @classmethod
    def from_record(cls, data: dict[str, Any], change: Callable[[Any], Change]) -> "Marks":
        return cls(tuple(change(c) for c in data["proven"]), data["proven_commit"],
                   data["mark"], data["probe_failed"], data["aside"])


@dataclass
class Group:
    """A failed batch set aside: ``members`` in order; the prefix up to ``lo - 1`` passed,
    the prefix up to ``hi`` failed (``hi_conflict``: because it did not merge)."""

    id: str
    members: list[Item]
    hi: int
    lo: int = 0
    hi_conflict: bool = False
    mark: int = 0          # how many changes of the queue had merged when it formed
    probes: dict[str, int] = field(default_factory=dict)   # item id → member index

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "members": [m.id for m in self.members], "hi": self.hi,
                "lo": self.lo, "hi_conflict": self.hi_conflict, "mark": self.mark,
                "probes": dict(self.probes)}

    @classmethod
    def from_record(cls, data: dict[str, Any], items: dict[str, Item]) -> "Group":
        return cls(data["id"], [items[i] for i in data["members"] if i in items], data["hi"],
                   data["lo"], data["hi_conflict"], data["mark"], dict(data["probes"]))


@dataclass
class BatchingState:
    """Everything the batching manager keeps beside the items."""

    failure_rate: float = START_RATE
    groups: dict[str, Group] = field(default_factory=dict)
    marks: dict[str, Marks] = field(default_factory=dict)   # item id → its marks
    regrouped: int = 0   # counts groups formed and dissolved (a walk re-settles on change)

    def of(self, item: Item) -> Marks:
        """The item's marks (created empty on first use)."""
        marks = self.marks.get(item.id)
        if marks is None:
            marks = self.marks[item.id] = Marks()
        return marks

    def peek(self, item: Item) -> Marks:
        """The item's marks, without keeping empty ones."""
        return self.marks.get(item.id) or Marks()

    def to_record(self, change_record: Callable[[Change], Any]) -> dict[str, Any]:
        return {"failure_rate": self.failure_rate,
                "groups": [g.to_record() for g in self.groups.values()],
                "marks": {i: m.to_record(change_record) for i, m in self.marks.items()
                          if m != Marks()}}

    @classmethod
    def from_record(cls, data: dict[str, Any], items: dict[str, Item],
                    change: Callable[[Any], Change]) -> "BatchingState":
        groups = [Group.from_record(g, items) for g in data["groups"]]
        return cls(data["failure_rate"], {g.id: g for g in groups},
                   {i: Marks.from_record(m, change) for i, m in data["marks"].items()})
