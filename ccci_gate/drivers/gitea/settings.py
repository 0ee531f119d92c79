"""A Gitea connection's settings (``connections: {<name>: {driver: gitea, ...}}``).

The driver owns this schema; the registry checks a connection's options with it before
building the connection. See ``doc/gitea.md`` for each option.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import voluptuous as v

from .payloads import is_repo_name

MAX_PAYLOAD = 5 * 1024 * 1024


def _repo(value: Any) -> str:
    if not isinstance(value, str) or not is_repo_name(value):
        raise v.Invalid(f"{value!r} is not a well-formed owner/name")
    return value


OPTIONS = v.Schema({
    v.Required("driver"): "gitea",
    v.Required("url"): v.Match(r"^https?://", msg="url must start with http:// or https://"),
    v.Optional("token"): str,
    v.Optional("token-file"): str,
    v.Optional("webhook-secret"): str,
    v.Optional("webhook-secret-file"): str,
    v.Optional("allow", default=[]): [str],          # users who may always trigger
    v.Optional("bot-user", default=""): str,          # the gate's own account
    v.Optional("reply-to-refused", default=False): bool,
    v.Optional("poll-interval", default=0): v.All(v.Coerce(float), v.Range(min=0)),
    v.Optional("poll-projects", default=[]): [_repo],
    v.Optional("comment-template"): str,
    v.Optional("merge-style", default="merge"): v.In(
        ["merge", "rebase", "rebase-merge", "squash", "fast-forward-only"]),
    v.Optional("verify-tls", default=True): bool,
    v.Optional("max-payload", default=MAX_PAYLOAD): v.All(int, v.Range(min=1024)),
    v.Optional("api-retries", default=3): v.All(int, v.Range(min=0, max=10)),
})


def secret(options: Mapping[str, Any], key: str) -> str:
    """A secret given inline (``key``) or, better, in a file (``key-file``)."""
    if options.get(f"{key}-file"):
        return Path(options[f"{key}-file"]).read_text().strip()
    return str(options.get(key) or "")
