"""The layout schema: one voluptuous schema mirroring the YAML, defaults inside it.

A layout file holds any of three top-level lists: ``pipelines``, ``projects``, ``jobs``
(job definition files in ``jobs/`` usually hold only ``jobs``). Keys are kebab-case.
The value of each ``trigger:`` key belongs to the driver of that name (its schema lives
with the driver); ``regex`` and ``listify`` are here for drivers to share.
See ``doc/layout.md`` for the full syntax with examples.
"""
from __future__ import annotations

import re
from typing import Any

import voluptuous as v

from ..core.layout import MANAGERS, PRECEDENCES, safe_path


def regex(value: Any) -> str:
    if not isinstance(value, str):
        raise v.Invalid("expected a regular expression (string)")
    try:
        re.compile(value)
    except re.error as exc:
        raise v.Invalid(f"bad regular expression {value!r}: {exc}") from None
    return value


def listify(item_schema: Any) -> Any:
    """A single value or a list of them; always a list afterwards."""
    schema = v.Schema(item_schema)

    def validate(value: Any) -> list:
        return [schema(x) for x in (value if isinstance(value, list) else [value])]
    return validate


def run_path(value: Any) -> str:
    """A job's script: a relative path below the jobs directory (served to workers)."""
    if not isinstance(value, str) or not safe_path(value):
        raise v.Invalid("run must be a relative path below the jobs directory "
                        "(no leading /, no . or .. parts)")
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise v.Invalid("expected a string, number or boolean")


NAME = v.All(str, v.Length(min=1), v.Match(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$",
                                           msg="names use letters, digits, '_', '-', '.', '/'"))

# ``trigger: {<driver>: <its filters>}``: each driver owns the schema of its value
# (``drivers/<name>``); the loader asks the driver registry (``config/loader.py``).
TRIGGERS = {str: object}
REPORTER = v.Any(None, {str: object})
REPORTERS = v.Schema({str: REPORTER})

WINDOW = v.Schema({
    v.Optional("start", default=20): v.All(int, v.Range(min=1)),
    v.Optional("floor", default=3): v.All(int, v.Range(min=1)),
    v.Optional("increase", default=1): v.All(int, v.Range(min=0)),
    v.Optional("decrease-factor", default=2): v.All(int, v.Range(min=1)),
})

PIPELINE = v.Schema({
    v.Required("name"): NAME,
    v.Optional("description", default=""): str,
    v.Optional("manager", default="independent"): v.In(MANAGERS, msg=f"manager must be one of {', '.join(MANAGERS)}"),
    v.Optional("precedence", default="normal"): v.In(PRECEDENCES, msg=f"precedence must be one of {', '.join(PRECEDENCES)}"),
    v.Optional("quick", default=False): bool,
    v.Optional("retest-on-merge", default=False): bool,
    v.Optional("batch", default=False): bool,
    v.Optional("batch-max", default=8): v.All(int, v.Range(min=2)),
    v.Optional("window", default={}): WINDOW,
    v.Optional("trigger", default={}): TRIGGERS,
    v.Optional("start", default={}): REPORTERS,
    v.Optional("success", default={}): REPORTERS,
    v.Optional("failure", default={}): REPORTERS,
    v.Optional("merge-failure", default={}): REPORTERS,
})

PROJECT_KEYS = ("name", "connection", "queue", "warm")
PROJECT = v.Schema({
    v.Required("name"): NAME,
    v.Optional("connection"): str,
    v.Optional("queue"): NAME,
    # enrolled for a warm canonical (doc/warm.md); builds get CCCI_WARM=1
    v.Optional("warm", default=False): bool,
    # every other key names a pipeline: the jobs the project runs there
    v.Extra: [NAME],
})

JOB = v.Schema({
    v.Required("name"): NAME,
    v.Optional("kind", default="shell"): NAME,
    v.Optional("run"): run_path,
    v.Optional("requires", default=[]): listify(NAME),
    v.Optional("voting", default=True): bool,
    v.Optional("attempts", default=3): v.All(int, v.Range(min=1, max=20)),
    v.Optional("timeout"): v.All(int, v.Range(min=1)),
    v.Optional("label"): NAME,
    v.Optional("branches", default=[]): listify(regex),
    v.Optional("files", default=[]): listify(regex),
    v.Optional("parameters", default={}): {v.Match(r"^[A-Za-z_][A-Za-z0-9_]*$",
                                                   msg="parameter names are shell-safe identifiers"): _scalar_text},
    v.Optional("description", default=""): str,
})

FILE = v.Schema(v.Any(None, {
    v.Optional("pipelines", default=[]): [dict],
    v.Optional("projects", default=[]): [dict],
    v.Optional("jobs", default=[]): [dict],
}))

STANZAS = {"pipelines": PIPELINE, "projects": PROJECT, "jobs": JOB}
