"""A build's reaper: runs the build's command and makes sure nothing of it outlives it.

Run as a script (``python3 -I -S reaper.py WORKER_PID -- ARGV...``) by
``worker.process.spawn``, in a new session whose process group it leads. It

- asks the kernel for SIGTERM when its parent (the worker's build thread) dies
  (``prctl(PR_SET_PDEATHSIG)``) and exits at once if the worker is already gone;
- becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``), so descendants that leave
  the process group (``setsid``, double forks) are re-parented to it, not to init;
- on that SIGTERM (or SIGHUP/SIGINT), or when the command exits, kills every
  descendant and then its whole process group, and exits with the command's status.

Standard library only, no package imports: it starts in a few milliseconds.
"""
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _children() -> list[int]:
    me = os.getpid()
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == me:
            kids.append(int(entry))
    return kids


def _kill_descendants() -> None:
    for _ in range(50):
        kids = _children()
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:  # reap them; their own children come back to us as orphans
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break


def _die(*_args) -> None:
    _kill_descendants()
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(137)


def main() -> int:
    worker = int(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1:]
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _die)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the worker's restart reaping still cleans up
    if os.getppid() != worker:
        _die()
    try:
        child = subprocess.Popen(argv)
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc}", flush=True)
        return 127
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child.pid:
            break
    code = os.waitstatus_to_exitcode(status)
    _kill_descendants()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
