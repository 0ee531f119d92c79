"""The merger: speculative git refs for buildsets, served to workers over HTTP."""
from .http import git_http_handler
from .merger import GitMerger, MergeConflict
from .source import GitSource

__all__ = ["GitMerger", "GitSource", "MergeConflict", "git_http_handler"]
