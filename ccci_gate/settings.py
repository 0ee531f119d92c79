"""Gatekeeper settings: where state lives, what to listen on, which servers and sources.

Everything has an embedded default, so ``ccci-gate serve`` runs with no file at all:
an in-process Gearman server on 127.0.0.1:4730, state (SQLite, logs, git) under
``./state``, HTTP on 127.0.0.1:8001, layouts from ``layouts/`` and ``jobs/``, projects
fetched from ``./repos/<project>``, and one local worker. A YAML file
(``--config ccci-gate.yaml``) and command-line flags override them; see
``doc/operating.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import voluptuous as v
import yaml

from .pki import TlsFiles
from .retention import Policy

HostPort = tuple[str, int]


def parse_hostport(text: str, default_port: int = 4730) -> HostPort:
    """``host:port`` (or ``host``) → ``(host, port)``; a clear error otherwise."""
    host, _, port = str(text).rpartition(":") if ":" in str(text) else (str(text), "", "")
    if not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 <= number < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, number


SCHEMA = v.Schema({
    v.Optional("state-dir", default="state"): str,
    v.Optional("listen", default="127.0.0.1:8001"): str,
    v.Optional("public-url", default=""): str,
    v.Optional("gearman", default=[]): [str],
    v.Optional("gearman-listen", default="127.0.0.1:4730"): str,
    v.Optional("gearman-tls-dir", default=""): str,
    v.Optional("gearman-grace", default=30.0): v.All(v.Coerce(float), v.Range(min=0)),
    v.Optional("layout", default=["layouts", "jobs"]): [str],
    v.Optional("jobs-dir", default="jobs"): str,
    v.Optional("repos", default="repos"): str,
    v.Optional("change-ref", default="refs/pull/{change}/head"): str,
    v.Optional("git-poll-interval", default=60): v.All(v.Coerce(float), v.Range(min=1)),
    v.Optional("worker", default={}): {
        v.Optional("enabled", default=True): bool,
        v.Optional("name", default=""): str,
        v.Optional("labels", default=[]): [str],
        v.Optional("max-builds", default=1): v.All(int, v.Range(min=1)),
    },
    v.Optional("connections", default={}): {str: {v.Required("driver"): str, v.Extra: object}},
    v.Optional("statsd-host", default=""): str,
    v.Optional("retention", default={}): v.Any(None, dict),   # checked by retention.Policy
}, extra=v.PREVENT_EXTRA)


@dataclass
class Settings:
    """The gatekeeper's resolved settings."""

    state_dir: Path = Path("state")
    listen: HostPort = ("127.0.0.1", 8001)
    public_url: str = ""
    gearman: list[HostPort] = field(default_factory=list)
    gearman_listen: HostPort = ("127.0.0.1", 4730)
    gearman_tls_dir: Path | None = None
    gearman_grace: float = 30.0   # seconds workers get to (re-)register before NOT_REGISTERED
    layout: list[Path] = field(default_factory=lambda: [Path("layouts"), Path("jobs")])
    jobs_dir: Path = Path("jobs")
    repos: str = "repos"
    change_ref: str = "refs/pull/{change}/head"
    git_poll_interval: float = 60.0
    worker_enabled: bool = True
    worker_name: str = ""
    worker_labels: list[str] = field(default_factory=list)
    worker_max_builds: int = 1
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    statsd: HostPort | None = None   # where counters and timers go too (web/statsd.py)
    retention: Policy = field(default_factory=Policy)

    @property
    def embedded_gearman(self) -> bool:
        return not self.gearman

    @property
    def gearman_tls(self) -> TlsFiles | None:
        """The gatekeeper's key, certificate and the pool's CA (``ccci-gate tls init``)."""
        if self.gearman_tls_dir is None:
            return None
        return TlsFiles.in_dir(self.gearman_tls_dir, "gatekeeper").check()

    @property
    def web_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.listen[0]}:{self.listen[1]}"

    @property
    def admin_token_file(self) -> Path:
        return self.state_dir / "admin.token"

    def source_url(self, project: str) -> str:
        """Where the merger fetches ``project`` from (``repos`` is a dir or a URL base)."""
        if "://" in self.repos:
            return f"{self.repos.rstrip('/')}/{project}"
        return str((Path(self.repos) / project).resolve())


def load_settings(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the optional YAML file, apply ``overrides`` (CLI flags), resolve defaults."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
    for key, value in (overrides or {}).items():
        if value not in (None, [], ""):
            raw[key] = value
    try:
        data = SCHEMA(raw)
    except v.MultipleInvalid as exc:
        raise ValueError(f"{path or 'settings'}: " + "; ".join(
            f"{'.'.join(map(str, e.path)) or '(top)'}: {e.msg}" for e in exc.errors)) from None
    worker = data["worker"]
    try:
        retention = Policy.parse(data["retention"])
    except ValueError as exc:
        raise ValueError(f"{path or 'settings'}: {exc}") from None
    return Settings(
        state_dir=Path(data["state-dir"]),
        listen=parse_hostport(data["listen"], 8001),
        public_url=data["public-url"],
        gearman=[parse_hostport(s) for s in data["gearman"]],
        gearman_listen=parse_hostport(data["gearman-listen"]),
        gearman_tls_dir=Path(data["gearman-tls-dir"]) if data["gearman-tls-dir"] else None,
        gearman_grace=data["gearman-grace"],
        layout=[Path(p) for p in data["layout"]],
        jobs_dir=Path(data["jobs-dir"]),
        repos=data["repos"],
        change_ref=data["change-ref"],
        git_poll_interval=data["git-poll-interval"],
        worker_enabled=worker["enabled"],
        worker_name=worker["name"],
        worker_labels=list(worker["labels"]),
        worker_max_builds=worker["max-builds"],
        connections=dict(data["connections"]),
        statsd=parse_hostport(data["statsd-host"], 8125) if data["statsd-host"] else None,
        retention=retention,
    )
