"""Hold requests as plain values: parsing ``--for``, matching a build (no I/O).

- ``parse_duration("4h")`` → seconds; ``30m``, ``2d``, ``90s``, ``1h30m``; anything else
  raises ``ValueError`` with what is accepted.
- ``HoldRequest.matches(project, job, change)``: the request is active and names this
  project and job (and this change, when it names one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

DEFAULT_FOR = 4 * 3600          # seconds a held app is kept when --for is not given
MAX_FOR = 30 * 86400            # a hold longer than a month is a mistake, not a request
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str | int) -> int:
    """Seconds in ``text`` (``4h``, ``30m``, ``2d``, ``45s``, ``1h30m``; a bare integer
    is seconds); ``ValueError`` saying what is accepted otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int):
        seconds = text
    else:
        value = str(text).strip().lower()
        if value.isdigit():
            seconds = int(value)
        else:
            parts = _PART.findall(value)
            if not value or "".join(n + u for n, u in parts) != value:
                raise ValueError(f"not a duration: {text!r} (use a number and a unit: "
                                 f"45s, 30m, 4h, 2d, or combined: 1h30m)")
            seconds = sum(int(n) * UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"a hold must last more than 0 seconds, not {text!r}")
    if seconds > MAX_FOR:
        raise ValueError(f"{text!r} is longer than the longest hold, {MAX_FOR // 86400}d")
    return seconds


def format_duration(seconds: float) -> str:
    """``14400`` → ``4h``; ``5400`` → ``1h30m``; ``0`` → ``0s``."""
    seconds = max(0, int(seconds))
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


@dataclass(frozen=True)
class HoldRequest:
    """One ``ccci-gate autohold`` request; ``used`` holds were applied so far."""

    id: int
    project: str
    job: str
    change: int | None = None
    count: int = 1
    used: int = 0
    for_seconds: int = DEFAULT_FOR
    reason: str = ""
    created_at: float = 0.0
    released_at: float | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None and self.used < self.count

    @property
    def state(self) -> str:
        """``active``, ``released`` (by an operator) or ``used`` (count spent)."""
        if self.released_at is not None:
            return "released"
        return "active" if self.used < self.count else "used"

    def matches(self, project: str, job: str, change: int | str | None) -> bool:
        if not self.active or project != self.project or job != self.job:
            return False
        return self.change is None or str(self.change) == str(change or "")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "project": self.project, "job": self.job, "change": self.change,
                "count": self.count, "used": self.used, "for": self.for_seconds,
                "for_text": format_duration(self.for_seconds), "reason": self.reason,
                "created_at": self.created_at, "released_at": self.released_at,
                "state": self.state}


def request_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a new request from an admin API body; ``ValueError`` with the first
    problem (project and job are required; change and count are positive integers)."""
    fields: dict[str, Any] = {}
    for key in ("project", "job"):
        value = body.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key!r} is required")
        fields[key] = value.strip()
    change = body.get("change")
    fields["change"] = None if change in (None, "") else _positive(change, "change")
    fields["count"] = _positive(body.get("count", 1), "count")
    fields["for_seconds"] = parse_duration(body.get("for", DEFAULT_FOR))
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError("'reason' must be text")
    fields["reason"] = reason[:500]
    return fields


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, not {value!r}") from None
    if number < 1 or str(number) != str(value).strip():
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return number
