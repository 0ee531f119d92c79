"""The contract between the worker daemon and a job kind.

A **job kind** (``shell``, and the Swarm kinds ``recipe-build``, ``recipe-install``...)
is the code that runs one build on a worker host. The daemon fetches the build's git
ref into a fresh workspace, then calls ``kind.run(ctx)`` and sends back the result
string it returns (``SUCCESS``, ``FAILURE``, ...). A kind never builds a shell string
from build parameters: they reach commands as argv elements or environment values.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol

from ...core.layout import JobConfig


@dataclass
class BuildContext:
    """What a job kind gets for one build.

    - ``parameters``: the build's Gearman parameters (``ZUUL_*``, ``LOG_PATH``, the
      job's rendered parameters), all strings.
    - ``workspace``: a fresh directory holding the project checked out at ``ZUUL_REF``
      (empty for a build with no ref).
    - ``log(text)``: append text to the build log (streamed to the gatekeeper).
    - ``progress(n, d)``: report progress (Gearman WORK_STATUS).
    - ``stop``: set when the build is aborted (``stop:<worker>``) or timed out; long
      steps poll it (or ``ctx.stopped``) and return promptly.
    - ``deadline``: ``time.monotonic()`` value after which the build is TIMED_OUT.
    - ``message``: a kind may set one line that its result alone does not say (the
      sweep's ``up to date: ...``); it becomes the build's ``message`` in the item's
      summary (status, history, reports).
    - ``warm_root``: the host's warm root (``swarm.warm``; None: ``CCCI_WARM_ROOT``, else
      the default), as the worker registering the ``warm:<recipe>`` labels sees it.
    - ``report``: what the kind hands back with its result besides the result string
      (``autohold``: the app it kept deployed, ``swarm.holds``).
    """

    job: JobConfig
    parameters: Mapping[str, str]
    workspace: Path
    log: Callable[[str], None]
    progress: Callable[[int, int], None] = lambda n, d: None
    stop: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None
    jobs_dir: Path | None = None
    message: str = ""
    warm_root: Path | None = None
    report: dict = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()


class JobKind(Protocol):
    """A way of running a build; ``run`` returns a Zuul result string."""

    name: str

    def run(self, ctx: BuildContext) -> str: ...
