"""What a manager is given: a read-only context, and a journal of what it touched.

- :class:`ManagerContext`: the clock and the URLs builds need. Read-only.
- :class:`Journal`: a manager notes there every item it changed (``touch``) and every
  item that left its queue (``leave``). The engine drains it after each step: it saves
  those items, walks their queues again and keeps its own indexes (items, buildsets,
  builds, last runs) up to date. Managers never see those indexes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..model import Item


@dataclass(frozen=True)
class ManagerContext:
    """Time and URLs: all a manager needs from outside, read-only."""

    clock: Callable[[], float]
    zuul_url: str = ""
    web_url: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "web_url", self.web_url.rstrip("/"))

    def artifacts_url(self, buildset_id: str) -> str:
        """Where the builds of a buildset share files (``publish`` → ``install``)."""
        return f"{self.web_url}/artifacts/{buildset_id}"

    def log_url(self, build_id: str) -> str:
        return f"{self.web_url}/logs/{build_id}" if self.web_url else f"/logs/{build_id}"


@dataclass
class Journal:
    """Items touched, and items that left their queue, since the engine last looked."""

    touched: dict[str, Item] = field(default_factory=dict)
    left: list[Item] = field(default_factory=list)

    def touch(self, item: Item) -> None:
        """``item`` changed: it is saved, reindexed, and its queue walked again."""
        self.touched[item.id] = item

    def leave(self, item: Item) -> None:
        """``item`` left its queue (reported or dequeued)."""
        self.touched[item.id] = item
        self.left.append(item)

    def take(self) -> tuple[list[Item], list[Item]]:
        """Everything noted so far, forgotten here: (touched, left)."""
        touched, left = list(self.touched.values()), self.left
        self.touched, self.left = {}, []
        return touched, left

    def __bool__(self) -> bool:
        return bool(self.touched)
