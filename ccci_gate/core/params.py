"""Build parameters: the Zuul v2 ``ZUUL_*`` names plus ours, and job parameter templates.

Job parameters in the layout may be jinja2 templates; they are rendered in a sandboxed
environment with the item's values (``project``, ``change``, ``pipeline``, ``job``,
``branch``...) so a template can neither reach Python internals nor run anything.
All values are strings, as Jenkins' gearman-plugin expects.
"""
from __future__ import annotations

from typing import Mapping

from jinja2 import StrictUndefined, TemplateError
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
                     zuul_url: str, log_url: str, artifacts_url: str = "") -> dict[str, str]:
    """The Gearman argument of ``build``: ``ZUUL_*`` names, ours, and the job's own."""
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
    context = {
        "project": change.project,
        "project_short": change.project.rsplit("/", 1)[-1],
        "branch": change.branch,
        "change": change.number,
        "patchset": change.patchset,
        "pipeline": item.pipeline,
        "job": job.name,
        "quick": item.quick,
        "params": dict(params),
    }
    for name, template in job.parameters.items():
        params[name] = render(str(template), context)
    return params
