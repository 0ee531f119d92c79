"""The independent manager: every item alone, tested on its change merged onto the tip.

Used by check, quick, post and periodic pipelines. Items never affect each other.
"""
from __future__ import annotations

from .base import PipelineManager


class IndependentManager(PipelineManager):
    name = "independent"
