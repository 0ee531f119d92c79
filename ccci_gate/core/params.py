"""Build parameters: the Zuul v2 ``ZUUL_*`` names plus ours, and job parameter templates.

Job parameters in the layout may be jinja2 templates; they are rendered in a sandboxed
environment with the item's values (``project``, ``change``, ``pipeline``, ``job``,
``branch``...) so a template can neither reach Python internals nor run anything.
All values are strings, as Jenkins' gearman-plugin expects. :func:`check_template`
tries a template at load time (``config/loader.py``), so one that could never render
is a layout error, not an ERROR of every build.
"""
from __future__ import annotations

from typing import Mapping

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .layout import JobConfig
from .model import Build, BuildSet, Item

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class ParameterError(ValueError):
    """A job parameter template failed to render."""


def render(template: str, context: Mapping[str, object]) -> str:
    try:
        return _ENV.from_string(template).render(**context)
    except TemplateError as exc:
        raise ParameterError(f"cannot render {template!r}: {exc}") from exc


def build_parameters(item: Item, buildset: BuildSet, build: Build, job: JobConfig,
                     zuul_url: str, log_url: str, artifacts_url: str = "",
                     warm: bool = False, enrolled: tuple[str, ...] = ()) -> dict[str, str]:
    """The Gearman argument of ``build``: ``ZUUL_*`` names, ours, and the job's own.
    ``enrolled``: the projects the layout enrols for a warm canonical (``Layout.enrolled``),
    for templates."""
    change = item.change
    params: dict[str, str] = {
        "ZUUL_UUID": build.id,
        "ZUUL_PROJECT": change.project,
        "ZUUL_PIPELINE": item.pipeline,
        "ZUUL_BRANCH": change.branch,
        "ZUUL_REF": buildset.ref or "",
        "ZUUL_COMMIT": buildset.commit or "",
        "ZUUL_URL": zuul_url,
        "ZUUL_PIPELINE_ITEM": item.id,
        "ZUUL_BUILDSET": buildset.id,
        "ZUUL_CHANGE_IDS": " ".join(
            f"{c.number},{c.patchset or ''}" for c in buildset.changes if c.number is not None),
        "ZUUL_CHANGES": "^".join(
            f"{c.project}:{c.branch}:{c.ref}" for c in buildset.changes),
        "JOB_NAME": job.name,
        "BUILD_ATTEMPT": str(build.attempt),
        "LOG_PATH": f"{item.pipeline}/{build.id}",
        "LOG_URL": log_url,
        "CCCI_QUICK": "1" if item.quick else "0",
        "CCCI_ARTIFACTS": artifacts_url,
        "CCCI_WARM": "1" if warm else "0",   # the project is enrolled for a canonical
    }
    if job.timeout:
        params["CCCI_TIMEOUT"] = str(job.timeout)
    if change.number is not None:
        params["ZUUL_CHANGE"] = str(change.number)
        params["ZUUL_PATCHSET"] = change.patchset or ""
    else:
        params["ZUUL_REFNAME"] = change.ref
        params["ZUUL_NEWREV"] = change.sha or ""
        params["ZUUL_OLDREV"] = change.oldrev or ""
    context = template_context(change.project, change.branch, change.number, change.patchset,
                               item.pipeline, job.name, item.quick, params, enrolled)
    for name, template in job.parameters.items():
        params[name] = render(str(template), context)
    return params


def template_context(project: str, branch: str, change: int | None, patchset: str | None,
                     pipeline: str, job: str, quick: bool,
                     params: Mapping[str, str],
                     enrolled: tuple[str, ...] = ()) -> dict[str, object]:
    """The names a job parameter template may use (``enrolled``: the layout's projects
    with ``warm: true``, sorted)."""
    return {"project": project, "project_short": project.rsplit("/", 1)[-1],
            "branch": branch, "change": change, "patchset": patchset, "pipeline": pipeline,
            "job": job, "quick": quick, "params": dict(params), "enrolled": tuple(enrolled)}


_ZUUL = ("ZUUL_UUID", "ZUUL_PROJECT", "ZUUL_PIPELINE", "ZUUL_BRANCH", "ZUUL_REF", "ZUUL_COMMIT",
         "ZUUL_URL", "ZUUL_PIPELINE_ITEM", "ZUUL_BUILDSET", "ZUUL_CHANGE_IDS", "ZUUL_CHANGES",
         "JOB_NAME", "BUILD_ATTEMPT", "LOG_PATH", "LOG_URL", "CCCI_QUICK", "CCCI_ARTIFACTS",
         "CCCI_TIMEOUT", "CCCI_WARM")
_SAMPLES = (  # a change and a ref item: a template must render for at least one
    template_context("org/project", "main", 1, "0" * 40, "check", "job", False,
                     dict.fromkeys(_ZUUL + ("ZUUL_CHANGE", "ZUUL_PATCHSET"), "x")),
    template_context("org/project", "main", None, None, "post", "job", False,
                     dict.fromkeys(_ZUUL + ("ZUUL_REFNAME", "ZUUL_NEWREV", "ZUUL_OLDREV"), "x")),
)


def check_template(template: str) -> str | None:
    """Why ``template`` can never render — bad syntax, something the sandbox forbids, a
    name no item has, an error on every sample item — or None when it can."""
    try:
        compiled = _ENV.from_string(template)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message}"
    problems = []
    for context in _SAMPLES:
        try:
            compiled.render(**context)
            return None
        except SecurityError as exc:
            return f"template does what the sandbox forbids: {exc}"
        except UndefinedError as exc:
            problems.append(f"template uses an unknown name: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - whatever a template raises, it fails
            problems.append(f"template fails: {type(exc).__name__}: {exc}")
    return problems[0]
