"""Disk use of a tree of files, measured the same way wherever it is reported
(retention's ``disk`` by kind, the warm root's bytes, each canonical's size)."""
from __future__ import annotations

import os
from pathlib import Path


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (symlinks not followed); 0 if it is absent."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return path.stat().st_size if path.is_file() else 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += tree_bytes(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total
