"""Moved to :mod:`ccci_gate.git` (shared by the merger and the worker); this name stays
only until the Swarm job kinds import it from there."""
from ..git import GitError, check_project, check_ref, git, out  # noqa: F401

__all__ = ["GitError", "check_project", "check_ref", "git", "out"]
