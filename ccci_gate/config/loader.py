"""Load layout files into a frozen :class:`~ccci_gate.core.layout.Layout`.

Every problem is collected — YAML syntax, schema, duplicates, unknown pipelines or jobs,
``requires`` cycles, triggers of drivers that are not installed — and reported together,
each with ``file:line``, a message and the offending stanza. A layout with any problem
is never returned. Each ``trigger:`` value is checked and translated by its driver
(:mod:`ccci_gate.drivers.registry`), so this module names no driver.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import voluptuous as v
import yaml

from ..core.jobgraph import find_cycle
from ..core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig, WindowConfig
from ..core.managers import MANAGER_CLASSES
from ..core.params import check_template
from ..core.triggers import TriggerFilter
from ..drivers.base import Driver
from .schema import FILE, PROJECT_KEYS, STANZAS

STANZA_LINES = 6


class _Map(dict):
    line = 0
    key_lines: dict


class _List(list):
    line = 0


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers where each mapping, list and key starts."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        mapping = _Map(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value
                             if isinstance(k, yaml.ScalarNode)}
        return mapping

    def construct_sequence(self, node, deep=False):  # type: ignore[override]
        seq = _List(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        return seq


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
                            _LineLoader.construct_sequence)


@dataclass(frozen=True)
class LayoutProblem:
    file: str
    line: int
    message: str
    stanza: str = ""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}: {self.message}"
        if self.stanza:
            text += "\n" + "\n".join("    " + line for line in self.stanza.splitlines())
        return text


class LayoutError(ValueError):
    """A layout with problems; ``problems`` lists every one."""

    def __init__(self, problems: list[LayoutProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class _Stanza:
    section: str
    data: dict
    file: str
    line: int
    raw: Any = None


class _Reader:
    """Collects stanzas and problems over several files."""

    def __init__(self, drivers: Mapping[str, Driver]) -> None:
        self.drivers = drivers
        self.problems: list[LayoutProblem] = []
        self.stanzas: list[_Stanza] = []
        self.texts: dict[str, list[str]] = {}
        self.invalid: set[tuple[str, str]] = set()

    def problem(self, file: str, line: int, message: str, start: int = 0) -> None:
        """Record a problem at ``line``; show the stanza from ``start`` (its first line)."""
        lines = self.texts.get(file, [])
        first = min(start or line, line) if line else 0
        last = max(first + STANZA_LINES, line + 1)
        stanza = "\n".join(lines[max(0, first - 1): min(last - 1, first - 1 + 2 * STANZA_LINES)]) if line else ""
        self.problems.append(LayoutProblem(file, line, message, stanza))

    def read(self, path: Path) -> None:
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(name, 0, f"cannot read: {exc}")
            return
        self.texts[name] = text.splitlines()
        try:
            data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            self.problem(name, mark.line + 1 if mark else 0,
                         f"YAML syntax error: {getattr(exc, 'problem', None) or exc}")
            return
        try:
            top = FILE(data)
        except v.MultipleInvalid as exc:
            for err in exc.errors:
                self.problem(name, _line_of(data, err.path), _describe("file", err))
            return
        for section, items in (top or {}).items():
            for raw in items:
                self._stanza(name, section, raw)

    def _stanza(self, file: str, section: str, raw: Any) -> None:
        line = getattr(raw, "line", 0)
        label = f"{section[:-1]} {raw.get('name', '?')}" if isinstance(raw, dict) else section
        filters = self._triggers(file, raw, label) if section == "pipelines" else {}
        try:
            data = STANZAS[section](raw)
        except v.MultipleInvalid as exc:
            if isinstance(raw, dict):
                self.invalid.add((section, str(raw.get("name"))))
            for err in exc.errors:
                self.problem(file, _line_of(raw, err.path) or line, _describe(label, err), line)
            return
        if filters is None:
            self.invalid.add((section, str(data["name"])))
            return
        if section == "pipelines":
            data = {**data, "trigger": filters}
        if section == "jobs" and not self._templates(file, raw, data, label):
            self.invalid.add((section, str(data["name"])))
            return
        self.stanzas.append(_Stanza(section, data, file, line, raw))

    def _templates(self, file: str, raw: Any, data: dict, label: str) -> bool:
        """Every parameter template compiles and renders in the sandbox."""
        ok = True
        for name, template in data["parameters"].items():
            why = check_template(template)
            if why is not None:
                self.problem(file, _line_of(raw, ["parameters", name]),
                             f"{label}: parameters.{name}: {why}", raw.line)
                ok = False
        return ok

    def _triggers(self, file: str, raw: Any, label: str) -> dict[str, tuple[TriggerFilter, ...]] | None:
        """Each ``trigger:`` value checked and translated by its driver (None: problems;
        a ``trigger`` that is not a mapping is the pipeline schema's to report)."""
        triggers = raw.get("trigger") if isinstance(raw, dict) else None
        if not isinstance(triggers, dict):
            return {}
        out: dict[str, tuple[TriggerFilter, ...]] = {}
        ok = True
        for name, value in triggers.items():
            path = ["trigger", name]
            driver = self.drivers.get(name)
            if driver is None or driver.trigger_schema is None:
                why = "is not installed" if driver is None else "cannot trigger pipelines"
                line = getattr(triggers, "key_lines", {}).get(name) or _line_of(raw, path)
                self.problem(file, line, f"{label}: trigger: driver {name!r} {why} "
                             f"(installed: {', '.join(self.drivers)})", raw.line)
                ok = False
                continue
            try:
                value = v.Schema(driver.trigger_schema)(value)
            except v.MultipleInvalid as exc:
                for err in exc.errors:
                    err.prepend(path)
                    self.problem(file, _line_of(raw, err.path), _describe(label, err), raw.line)
                ok = False
                continue
            out[str(name)] = driver.filters(value)
        return out if ok else None


def _line_of(node: Any, path: Sequence[Any]) -> int:
    """The line of the deepest node (or key) along ``path`` that knows its line."""
    line = getattr(node, "line", 0)
    for key in path:
        key_lines = getattr(node, "key_lines", None)
        if key_lines and key in key_lines:
            line = key_lines[key]
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        line = getattr(node, "line", 0) or line
    return line


def _describe(label: str, err: v.Invalid) -> str:
    path = ".".join(str(p) for p in err.path)
    msg = err.msg
    if msg == "extra keys not allowed":
        msg = f"unknown key {err.path[-1]!r}" if err.path else "unknown key"
    elif msg == "required key not provided":
        msg = f"missing required key {err.path[-1]!r}" if err.path else msg
    return f"{label}: {path}: {msg}" if path else f"{label}: {msg}"


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        else:
            out.append(path)
    return out


def load_layout(paths: Iterable[Path | str], drivers: Mapping[str, Driver] | None = None) -> Layout:
    """Read, validate and build the layout from files and directories; ``drivers`` are
    the installed ones by default."""
    if drivers is None:
        from ..drivers.registry import drivers as installed
        drivers = installed()
    reader = _Reader(drivers)
    files = _files(Path(p) for p in paths)
    if not files:
        raise LayoutError([LayoutProblem(", ".join(map(str, paths)) or "(none)", 0,
                                         "no layout files found")])
    for path in files:
        if not path.exists():
            reader.problem(str(path), 0, "no such file or directory")
            continue
        reader.read(path)
    layout = _build(reader)
    if reader.problems:
        raise LayoutError(reader.problems)
    return layout


def _build(reader: _Reader) -> Layout:
    seen: dict[tuple[str, str], _Stanza] = {}
    by_section: dict[str, list[_Stanza]] = {"pipelines": [], "projects": [], "jobs": []}
    for st in reader.stanzas:
        key = (st.section, st.data["name"])
        if key in seen:
            first = seen[key]
            reader.problem(st.file, st.line, f"duplicate {st.section[:-1]} {st.data['name']!r} "
                           f"(first defined at {first.file}:{first.line})")
            continue
        seen[key] = st
        by_section[st.section].append(st)

    jobs = {st.data["name"]: _job(st.data) for st in by_section["jobs"]}
    job_at = {st.data["name"]: st for st in by_section["jobs"]}
    for name, job in jobs.items():
        for parent in job.requires:
            if parent not in jobs and ("jobs", parent) not in reader.invalid:
                st = job_at[name]
                reader.problem(st.file, st.line, f"job {name}: requires unknown job {parent!r}")
    cycle = find_cycle({n: [r for r in j.requires if r in jobs] for n, j in jobs.items()})
    if cycle:
        st = job_at[cycle[0]]
        reader.problem(st.file, st.line, "cycle in requires: " + " -> ".join(cycle))

    pipelines: dict[str, PipelineConfig] = {}
    for st in by_section["pipelines"]:
        pipeline = _pipeline(st.data)
        if pipeline.manager not in MANAGER_CLASSES:
            reader.problem(st.file, st.line, f"pipeline {pipeline.name}: manager "
                           f"{pipeline.manager!r} is not available in this version")
        pipelines[pipeline.name] = pipeline

    projects: dict[str, ProjectConfig] = {}
    for st in by_section["projects"]:
        per_pipeline = {k: tuple(val) for k, val in st.data.items() if k not in PROJECT_KEYS}
        for pipeline_name, job_names in per_pipeline.items():
            where = f"project {st.data['name']}: {pipeline_name}"
            line = getattr(st.raw, "key_lines", {}).get(pipeline_name, st.line)
            if pipeline_name not in pipelines and ("pipelines", pipeline_name) not in reader.invalid:
                reader.problem(st.file, line, f"{where}: unknown pipeline {pipeline_name!r}", st.line)
            for job_name in job_names:
                if job_name not in jobs:
                    if ("jobs", job_name) not in reader.invalid:
                        reader.problem(st.file, line, f"{where}: unknown job {job_name!r}", st.line)
                    continue
                for parent in jobs[job_name].requires:
                    if parent in jobs and parent not in job_names:
                        reader.problem(st.file, line, f"{where}: job {job_name} requires "
                                       f"{parent}, which the project does not run there")
        projects[st.data["name"]] = ProjectConfig(
            st.data["name"], st.data.get("connection"), st.data.get("queue"), per_pipeline,
            warm=st.data.get("warm", False))

    return Layout(pipelines=pipelines, projects=projects, jobs=jobs,
                  sources=tuple(sorted(reader.texts)))


def _job(d: dict) -> JobConfig:
    return JobConfig(
        name=d["name"], kind=d["kind"], run=d.get("run"), requires=tuple(d["requires"]),
        voting=d["voting"], attempts=d["attempts"], timeout=d.get("timeout"),
        label=d.get("label"), branches=tuple(d["branches"]), files=tuple(d["files"]),
        parameters=dict(d["parameters"]), description=d["description"])


def _pipeline(d: dict) -> PipelineConfig:
    w = d["window"]
    return PipelineConfig(
        name=d["name"], manager=d["manager"], description=d["description"],
        precedence=d["precedence"], quick=d["quick"], retest_on_merge=d["retest-on-merge"],
        window=WindowConfig(w["start"], w["floor"], w["increase"], w["decrease-factor"]),
        triggers=dict(d["trigger"]),
        reporters={phase: {drv: dict(opts or {}) for drv, opts in d[phase].items()}
                   for phase in ("start", "success", "failure", "merge-failure") if d[phase]},
        batch=d["batch"], batch_max=d["batch-max"])


def validate_main(argv: Sequence[str]) -> int:
    """``ccci-gate validate PATH...``: print OK with counts, or every problem."""
    try:
        layout = load_layout(Path(a) for a in argv)
    except LayoutError as exc:
        print(str(exc), file=sys.stderr)
        print(f"invalid: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"OK: {len(layout.pipelines)} pipelines, {len(layout.projects)} projects, "
          f"{len(layout.jobs)} jobs ({len(layout.sources)} files)")
    return 0
