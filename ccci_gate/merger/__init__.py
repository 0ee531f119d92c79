"""The merger: speculative git refs for buildsets, served to workers over HTTP."""
from .http import git_http_handler
from .merger import GitMerger, MergeConflict

__all__ = ["GitMerger", "MergeConflict", "git_http_handler"]
