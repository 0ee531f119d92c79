"""The ``shell`` job kind: run the job's script in the build's workspace.

The script is the job's ``run`` path below the jobs directory; it runs as an argv (never
through a shell string) with the workspace as its working directory and the build
parameters in its environment. Its output is the build log, streamed line by line as
it comes (a partial line after a short pause). Exit 0 is SUCCESS.

The script runs under the worker's reaper (``worker.process.spawn``): when the build
ends, is aborted or times out, or the worker dies, every process it started dies too.
"""
from __future__ import annotations

import codecs
import os
import select
import subprocess
import threading
import time
from pathlib import Path

from .. import process
from .base import BuildContext

PARTIAL_LINE_SECONDS = 0.3   # a line without its newline yet is logged after this pause
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "DOCKER_HOST")


_kill = process.kill


class ShellKind:
    name = "shell"

    def run(self, ctx: BuildContext) -> str:
        if not ctx.job.run:
            ctx.log(f"job {ctx.job.name} has no `run` script\n")
            return "ERROR"
        base = (ctx.jobs_dir or Path("jobs")).resolve()
        script = (base / ctx.job.run).resolve()
        if base not in script.parents or not script.is_file():
            ctx.log(f"script {ctx.job.run!r} is not a file below {base}\n")
            return "ERROR"
        argv = [str(script)] if os.access(script, os.X_OK) else ["sh", str(script)]
        env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
        env.update({k: v for k, v in ctx.parameters.items()})
        env["WORKSPACE"] = str(ctx.workspace)
        proc = process.spawn(argv, ctx.workspace, env)
        reader = threading.Thread(target=self._pump, args=(proc, ctx), daemon=True)
        reader.start()
        result = None
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if result:
                continue
            if ctx.stopped:
                _kill(proc)
                result = "ABORTED"
            elif ctx.deadline is not None and time.monotonic() > ctx.deadline:
                _kill(proc)
                ctx.log("\n*** timed out: killed ***\n")
                result = "TIMED_OUT"
        _kill(proc)  # whatever the script left behind in its process group
        reader.join(5)
        if result:
            return result
        if proc.returncode != 0:
            ctx.log(f"\n*** {script.name} exited with status {proc.returncode} ***\n")
            return "FAILURE"
        return "SUCCESS"

    @staticmethod
    def _pump(proc: subprocess.Popen, ctx: BuildContext) -> None:
        assert proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        fd = proc.stdout.fileno()
        pending = b""   # a partial line: held back until its end, or until output pauses
        while True:
            ready, _, _ = select.select([fd], [], [], PARTIAL_LINE_SECONDS)
            if not ready:
                if pending:
                    ctx.log(decoder.decode(pending))
                    pending = b""
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            cut = pending.rfind(b"\n") + 1 if len(pending) < 65536 else len(pending)
            if cut:   # whole lines go at once (and secrets in them are redacted whole)
                ctx.log(decoder.decode(pending[:cut]))
                pending = pending[cut:]
        ctx.log(decoder.decode(pending, final=True))
