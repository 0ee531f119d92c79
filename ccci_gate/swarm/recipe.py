"""A Co-op Cloud recipe as abra reads it: env, compose files, labels — and its lint.

A **recipe** is a git checkout with ``compose.yml`` (plus ``compose.*.yml`` overlays that
``COMPOSE_FILE`` selects), ``.env.sample``, ``abra.sh`` and ``release/<version>`` notes.
Its **version** is a tag ``<recipe semver>+<upstream version>`` and the ``app`` service
carries it in the label ``coop-cloud.${STACK_NAME}.version``.

An **app** is one deployment of a recipe: a ``DOMAIN``, and the **stack name** abra
derives from it (dots → underscores). Its env is the recipe's ``.env.sample`` with the
app's overrides on top.

This module reads files only (no Docker, no subprocesses): rendering is done here so
the lint sees exactly what ``docker stack deploy`` will be given.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .probe import valid_codes

VERSION = re.compile(r"^\d+\.\d+\.\d+\+\S+$")
_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class RecipeError(ValueError):
    """The recipe cannot be read; the message says what is wrong."""


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``export`` and quotes allowed, ``#`` comments ignored)."""
    env: dict[str, str] = {}
    if not path.exists():
        return env
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        env[key.strip()] = value
    return env


def interpolate(text: str, env: Mapping[str, str], missing: list[str] | None = None) -> str:
    """Compose-file variable substitution: ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?err}``, ``$$``. Unset names are collected in ``missing``."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        if value is None:
            if missing is not None:
                missing.append(name)
            return ""
        return value
    return _VAR.sub(sub, text)


def stack_name(domain: str) -> str:
    """abra's stack name for a domain."""
    return domain.replace(".", "_")


def run_domain(recipe: str, base: str = "ci.local") -> str:
    """A fresh, unique, short domain for one cold run: ``<recipe[:4]>-<6hex>.<base>``."""
    short = re.sub(r"[^a-z0-9]", "", recipe.lower())[:4] or "app"
    return f"{short}-{secrets.token_hex(3)}.{base}"


@dataclass
class Recipe:
    """A recipe checkout, and the app being deployed from it (``domain``, overrides)."""

    path: Path
    name: str
    domain: str = ""
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def stack(self) -> str:
        return stack_name(self.domain)

    def env(self) -> dict[str, str]:
        """The app's env: ``.env.sample``, overrides, then what abra always sets."""
        env = read_env(self.path / ".env.sample")
        env.update(self.overrides)
        env["DOMAIN"] = self.domain or env.get("DOMAIN", "")
        env["STACK_NAME"] = self.stack
        env.setdefault("COMPOSE_FILE", "compose.yml")
        return env

    def compose_files(self, env: Mapping[str, str] | None = None) -> list[Path]:
        env = env or self.env()
        names = [n for n in env.get("COMPOSE_FILE", "compose.yml").split(":") if n]
        for name in names:
            if "/" in name or name.startswith("."):
                raise RecipeError(f"COMPOSE_FILE names {name!r}, not a file of the recipe")
        return [self.path / n for n in names]

    def render(self) -> tuple[dict[str, Any], list[str]]:
        """The merged compose config as deployed, and the problems found rendering it."""
        env = self.env()
        problems: list[str] = []
        merged: dict[str, Any] = {}
        for path in self.compose_files(env):
            if not path.exists():
                problems.append(f"{path.name}: missing (named by COMPOSE_FILE)")
                continue
            missing: list[str] = []
            text = interpolate(path.read_text(), env, missing)
            for name in sorted(set(missing)):
                problems.append(f"{path.name}: ${{{name}}} is not set by .env.sample")
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                problems.append(f"{path.name}: not valid YAML: {exc}")
                continue
            if not isinstance(data, dict):
                problems.append(f"{path.name}: not a compose mapping")
                continue
            _merge(merged, data)
        return merged, problems

    def app_labels(self, config: Mapping[str, Any] | None = None) -> dict[str, str]:
        config = config if config is not None else self.render()[0]
        app = (config.get("services") or {}).get("app") or {}
        return _labels((app.get("deploy") or {}).get("labels"))

    def version(self, config: Mapping[str, Any] | None = None) -> str:
        return self.app_labels(config).get(f"coop-cloud.{self.stack}.version", "")

    def timeout(self, config: Mapping[str, Any] | None = None, default: int = 300) -> int:
        value = self.app_labels(config).get(f"coop-cloud.{self.stack}.timeout", "")
        return int(value) if value.isdigit() else default

    def ccci_label(self, key: str, config: Mapping[str, Any] | None = None) -> str:
        """A ``ccci.<key>`` label of the ``app`` service: what a recipe tells ccci-gate
        about itself (``ccci.settle``, ``ccci.health-path``, ``ccci.health-codes``)."""
        return self.app_labels(config).get(f"ccci.{key}", "").strip()

    def images(self, config: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Each service's image, as deployed."""
        config = config if config is not None else self.render()[0]
        return {name: str((service or {}).get("image") or "")
                for name, service in (config.get("services") or {}).items()}

    def referenced_files(self, config: Mapping[str, Any] | None = None) -> list[str]:
        """Every file the compose config reads from the recipe: ``configs``/``secrets``
        ``file:`` and services' ``env_file`` (paths relative to the recipe)."""
        config = config if config is not None else self.render()[0]
        names: list[str] = []
        for kind in ("configs", "secrets"):
            for spec in (config.get(kind) or {}).values():
                if isinstance(spec, dict) and spec.get("file"):
                    names.append(str(spec["file"]))
        for service in (config.get("services") or {}).values():
            env_file = (service or {}).get("env_file")
            for entry in env_file if isinstance(env_file, list) else [env_file] if env_file else []:
                names.append(str(entry.get("path", "") if isinstance(entry, dict) else entry))
        return sorted({n.removeprefix("./") for n in names if n})

    def probe_port(self, config: Mapping[str, Any] | None = None) -> int | None:
        """The port the app serves on: abra recipes tell Traefik with
        ``traefik.http.services.${STACK_NAME}.loadbalancer.server.port``."""
        for key, value in self.app_labels(config).items():
            if key.endswith(".loadbalancer.server.port") and value.isdigit():
                return int(value)
        return None

    def lint(self) -> list[str]:
        """Every problem of the recipe, not just the first."""
        problems: list[str] = []
        if not (self.path / ".env.sample").exists():
            problems.append(".env.sample: missing")
        if not (self.path / "compose.yml").exists():
            problems.append("compose.yml: missing")
        try:
            config, render_problems = self.render()
        except RecipeError as exc:
            return problems + [str(exc)]
        problems += render_problems
        services = config.get("services") or {}
        if not services:
            problems.append("no services defined")
        if "app" not in services:
            problems.append("no `app` service (abra stamps its labels there)")
        for name in self.referenced_files(config):
            path = (self.path / name).resolve()
            if not path.is_relative_to(self.path.resolve()):
                problems.append(f"{name}: referenced by the compose files but outside the recipe")
            elif not path.is_file():
                problems.append(f"{name}: referenced by the compose files but missing")
        settle, codes = self.ccci_label("settle", config), self.ccci_label("health-codes", config)
        if settle and not settle.isdigit():
            problems.append(f"app: label ccci.settle={settle!r} is not a whole number of seconds")
        if codes and not valid_codes(codes):
            problems.append(f"app: label ccci.health-codes={codes!r} is not like 200,204 or 200-399")
        version = self.version(config)
        label = f"coop-cloud.{self.stack}.version"
        if "app" in services and not version:
            problems.append(f"app: no deploy label {label.replace(self.stack, '${STACK_NAME}')}")
        elif version and not VERSION.match(version):
            problems.append(f"app: version label {version!r} is not X.Y.Z+upstream")
        for name, service in sorted(services.items()):
            service = service or {}
            image = str(service.get("image") or "")
            if not image:
                problems.append(f"{name}: no image")
            elif ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
                problems.append(f"{name}: image {image!r} has no tag (pin a version)")
            elif image.endswith(":latest"):
                problems.append(f"{name}: image {image!r} uses the latest tag (pin a version)")
            health = service.get("healthcheck")
            if not health or (isinstance(health, dict) and health.get("disable")):
                problems.append(f"{name}: no healthcheck")
        return problems


def _labels(value: Any) -> dict[str, str]:
    """Compose labels as a dict (they may be a list of ``k=v``)."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return dict(str(x).partition("=")[::2] for x in value)
    return {}


MAPPINGS = ("labels", "environment")   # lists of k=v that compose merges key by key


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    """Compose's overlay merge, as far as lint needs it: mappings merge (``labels`` and
    ``environment`` too, list or mapping, as ``docker stack deploy`` merges them), the
    rest replaces."""
    for key, value in over.items():
        if key in MAPPINGS and isinstance(value, (list, dict)) and key in base:
            base[key] = {**_labels(base[key]), **_labels(value)}
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
