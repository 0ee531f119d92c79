"""Pipeline managers: how a pipeline orders its items and who may report.

- ``independent``: each item alone (check, quick, post, periodic).
- ``dependent``: the speculative gate; items tested on top of those ahead, merged in order.
- ``serial``: one item at a time per project, in order.
- ``supercedent``: at most one running and one waiting item per ref; newer waiting
  items replace older ones.
"""
from __future__ import annotations

from ..layout import Layout, PipelineConfig
from .base import PipelineManager
from .batching import BatchingManager
from .context import Journal, ManagerContext
from .dependent import DependentManager
from .independent import IndependentManager
from .serial import SerialManager
from .supercedent import SupercedentManager

MANAGER_CLASSES: dict[str, type[PipelineManager]] = {
    "independent": IndependentManager,
    "dependent": DependentManager,
    "serial": SerialManager,
    "supercedent": SupercedentManager,
}


def make_manager(config: PipelineConfig, layout: Layout, ctx: ManagerContext,
                 journal: Journal) -> PipelineManager:
    """The manager object for a pipeline's ``manager`` setting."""
    try:
        cls = BatchingManager if config.manager == "dependent" and config.batch else MANAGER_CLASSES[config.manager]
    except KeyError:
        raise ValueError(f"pipeline {config.name}: manager {config.manager!r} is not available") from None
    return cls(config, layout, ctx, journal)


__all__ = ["Journal", "ManagerContext", "PipelineManager", "make_manager", "MANAGER_CLASSES"]
