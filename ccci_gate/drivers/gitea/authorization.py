"""Who may trigger: organisation members, collaborators with write access, and the
users the connection's ``allow`` list names. Answers are cached for a minute."""
from __future__ import annotations

import time
from typing import Callable, Iterable

from .api import GiteaAPI

AUTH_TTL = 60.0


class Authorizer:
    """``authorized(repo, user)`` through the API, cached for ``ttl`` seconds."""

    def __init__(self, api: GiteaAPI, allow: Iterable[str] = (),
                 clock: Callable[[], float] = time.time, ttl: float = AUTH_TTL):
        self.api = api
        self.allow = frozenset(allow)
        self.clock = clock
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}

    def authorized(self, repo: str, user: str) -> bool:
        """Org member, collaborator with write access, or on the allowlist; cached.
        Raises the API's errors (the caller decides what an unanswered question means)."""
        if not user:
            return False
        if user in self.allow:
            return True
        key = (repo, user)
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        org = repo.split("/", 1)[0]
        ok = self.api.is_member(org, user) or self.api.can_write(repo, user)
        self._cache[key] = (now, ok)
        return ok
