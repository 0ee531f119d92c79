"""A Gerrit connection's settings (``connections: {<name>: {driver: gerrit, ...}}``).

The driver owns this schema; the registry checks a connection's options with it before
building the connection. See ``doc/gerrit.md`` for each option.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import voluptuous as v

OPTIONS = v.Schema({
    v.Required("driver"): "gerrit",
    v.Required("host"): v.All(str, v.Length(min=1)),
    v.Optional("port", default=29418): v.All(int, v.Range(min=1, max=65535)),
    v.Required("user"): v.All(str, v.Length(min=1)),      # the gate's own account
    v.Optional("key-file", default=""): str,                # its SSH private key
    v.Optional("known-hosts", default=""): str,             # empty: trust on first use
    v.Required("url"): v.Match(r"^https?://", msg="url must start with http:// or https://"),
    v.Optional("http-password", default=""): str,
    v.Optional("http-password-file", default=""): str,
    v.Optional("verify-tls", default=True): bool,
    v.Optional("api-retries", default=3): v.All(int, v.Range(min=0, max=10)),
    v.Optional("catch-up", default=True): bool,             # REST query after a reconnect
    v.Optional("reconnect-min", default=1.0): v.All(v.Coerce(float), v.Range(min=0.01)),
    v.Optional("reconnect-max", default=60.0): v.All(v.Coerce(float), v.Range(min=0.01)),
    v.Optional("keepalive", default=30.0): v.All(v.Coerce(float), v.Range(min=0)),
}, extra=v.PREVENT_EXTRA)


def http_password(options: Mapping[str, Any]) -> str:
    """The HTTP password given inline or, better, in a file."""
    if options.get("http-password-file"):
        return Path(options["http-password-file"]).read_text().strip()
    return str(options.get("http-password") or "")
