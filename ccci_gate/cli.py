"""``ccci-gate``: the command line.

- ``serve``: run the gatekeeper (embedded Gearman server, SQLite, HTTP, a local worker)
- ``worker``: join a worker host to the pool (``--gearman HOST:PORT``); ``tls``: the
  pool's certificates (``commands/tls.py``)
- ``enqueue`` / ``dequeue`` / ``promote`` / ``retrigger`` / ``pause`` / ``resume`` /
  ``reconfigure``: talk to a running gatekeeper; ``status`` (``commands/status.py``)
- ``validate``: check layouts and jobs, print every error with file and line
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import requests

from .gearman.protocol import tune_threads

# modules under ccci_gate/commands/ that add subcommands (each has register(sub))
from .commands import autohold as _autohold_command
from .commands import logs as _logs_command, replay as _replay_command
from .commands import status as _status_command, tls as _tls_command

COMMAND_MODULES: list[Any] = [_status_command, _tls_command, _logs_command, _replay_command,
                              _autohold_command]

DEFAULT_URL = "http://127.0.0.1:8001"


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("CCCI_URL", DEFAULT_URL),
                   help="the gatekeeper's HTTP address (default: %(default)s, env CCCI_URL)")
    p.add_argument("--token", help="admin token (default: env CCCI_ADMIN_TOKEN, "
                                    "else STATE_DIR/admin.token)")
    p.add_argument("--state-dir", default="state", help="where to find admin.token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccci-gate", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gatekeeper")
    p.add_argument("--config", type=Path, help="settings YAML (see doc/operating.md)")
    p.add_argument("--state-dir", help="state directory (default: ./state)")
    p.add_argument("--listen", help="HTTP HOST:PORT (default: 127.0.0.1:8001)")
    p.add_argument("--public-url", help="URL workers and users reach the HTTP listener at")
    p.add_argument("--gearman", action="append", default=[], metavar="HOST:PORT",
                   help="external Gearman server (repeatable); default: an embedded one")
    p.add_argument("--gearman-listen", metavar="HOST:PORT",
                   help="where the embedded Gearman server listens (default: 127.0.0.1:4730)")
    p.add_argument("--gearman-grace", type=float, metavar="SECONDS",
                   help="how long workers get to (re-)register a job's function before "
                        "its build is NOT_REGISTERED (default: 30)")
    p.add_argument("--layout", action="append", default=[], metavar="PATH",
                   help="layout file or directory (repeatable; default: layouts/ and jobs/)")
    p.add_argument("--jobs-dir", help="where shell jobs' scripts live (default: jobs/)")
    p.add_argument("--repos", help="directory (or URL base) holding <project> repositories")
    p.add_argument("--no-worker", action="store_true", help="do not start the local worker")
    p.add_argument("--gearman-tls-dir", metavar="DIR",
                   help="Gearman over TLS with the pool's certificates (`ccci-gate tls init DIR`)")

    p = sub.add_parser("worker", help="run a worker that takes builds from Gearman")
    p.add_argument("--gearman", action="append", default=[], metavar="HOST:PORT",
                   help="Gearman server (repeatable; default: 127.0.0.1:4730)")
    p.add_argument("--name", default=socket.gethostname(), help="worker name (default: hostname)")
    p.add_argument("--label", action="append", default=[], help="a label this host has (repeatable)")
    p.add_argument("--jobs", type=Path, default=Path("jobs"),
                   help="job definitions of this host, for builds that carry none (default: jobs/)")
    p.add_argument("--gatekeeper", metavar="URL",
                   help="the gatekeeper's HTTP URL: register the jobs of its running layout "
                        "(URL/jobs.json), followed across reconfigures")
    p.add_argument("--jobs-poll", type=float, default=10.0, metavar="SECONDS",
                   help="how often to read the gatekeeper's jobs (default: 10)")
    p.add_argument("--workdir", type=Path, default=Path("state/workspaces"),
                   help="where build workspaces go (default: state/workspaces)")
    p.add_argument("--max-builds", type=int, default=1, help="builds at once (default: 1)")
    p.add_argument("--tls-dir", type=Path, metavar="DIR",
                   help="Gearman over TLS: DIR holds worker.key, worker.crt and ca.crt")

    p = sub.add_parser("janitor", help="remove the Docker Swarm apps of runs whose worker died")
    p.add_argument("--state", type=Path, default=None,
                   help="the worker host's Swarm state (default: env CCCI_SWARM_STATE, "
                        "else ~/.ccci-gate/swarm)")

    p = sub.add_parser("warm", help="this host's warm canonicals (see doc/warm.md)")
    warm = p.add_subparsers(dest="warm_command", required=True)
    q = warm.add_parser("list", help="each canonical: status, known-good, disk use")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = warm.add_parser("drop", help="remove a recipe's canonical: app, volumes, warm data")
    q.add_argument("recipe")
    q = warm.add_parser("prune", help="drop the canonicals of recipes no layout enrols")
    q.add_argument("--layout", action="append", default=[], metavar="PATH",
                   help="layout file or directory (repeatable; default: layouts/ and jobs/)")
    for q in warm.choices.values():
        q.add_argument("--root", type=Path, default=None, help="the warm root (default: env "
                       "CCCI_WARM_ROOT, else CCCI_SWARM_STATE/warm)")

    p = sub.add_parser("enqueue", help="enqueue a change or ref into a pipeline")
    p.add_argument("--pipeline", required=True)
    p.add_argument("--project", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--change", type=int, help="pull request / change number")
    group.add_argument("--ref", help="a ref, e.g. refs/heads/main")
    p.add_argument("--patchset", help="Gitea: the change's head sha, if known; Gerrit: a "
                   "patchset number (default: the current one, asked of Gerrit)")
    p.add_argument("--branch", help="target branch (default: main)")
    p.add_argument("--quick", action="store_true", help="run in the quick lane")
    _add_client_args(p)

    p = sub.add_parser("dequeue", help="remove a change or ref from the pipelines")
    p.add_argument("--project", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--change", type=int)
    group.add_argument("--ref")
    p.add_argument("--pipeline", default="", help="only this pipeline")
    _add_client_args(p)

    p = sub.add_parser("promote", help="move a change to the head of its gate queue")
    p.add_argument("--pipeline", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--change", type=int, required=True)
    _add_client_args(p)

    p = sub.add_parser("retrigger", help="run one job of an item again, keeping the others")
    p.add_argument("--pipeline", required=True)
    p.add_argument("--project", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--change", type=int)
    group.add_argument("--ref")
    p.add_argument("--job", required=True)
    _add_client_args(p)

    for name, what in (("pause", "stop starting builds in a pipeline"),
                       ("resume", "start builds in a paused pipeline again")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--pipeline", required=True)
        _add_client_args(p)

    p = sub.add_parser("reconfigure", help="reload layouts and jobs in a running gatekeeper")
    _add_client_args(p)

    p = sub.add_parser("notify-push", help="tell the gatekeeper a git project was pushed to "
                                           "(for a post-receive hook)")
    p.add_argument("--project", required=True)
    _add_client_args(p)

    p = sub.add_parser("validate", help="check layout files; exit 1 if invalid")
    p.add_argument("paths", nargs="+", type=Path)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        func = getattr(args, "func", None) or COMMANDS[args.command]
        code = func(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader left (``ccci-gate status | head -1``): stop quietly, as Unix tools do,
        # and keep Python from complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141   # 128 + SIGPIPE, what a shell reports for a tool the pipe stopped


def setup_logging(verbose: bool) -> None:
    """INFO (DEBUG with -v) to stderr; gear's per-packet INFO lines only with -v."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gear").setLevel(logging.DEBUG if verbose else logging.WARNING)


# --- serve / worker ---------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from .app import Gatekeeper
    from .config.loader import LayoutError
    from .settings import load_settings
    overrides: dict[str, Any] = {
        "state-dir": args.state_dir, "listen": args.listen, "public-url": args.public_url,
        "gearman": args.gearman, "gearman-listen": args.gearman_listen,
        "gearman-tls-dir": args.gearman_tls_dir,
        "gearman-grace": args.gearman_grace,
        "layout": [str(p) for p in args.layout], "repos": args.repos, "jobs-dir": args.jobs_dir,
    }
    if args.no_worker:
        overrides["worker"] = {"enabled": False}
    try:
        settings = load_settings(args.config, overrides)
        gatekeeper = Gatekeeper(settings)
    except (ValueError, LayoutError, OSError) as exc:
        print(f"ccci-gate: cannot start: {exc}", file=sys.stderr)
        return 2
    gatekeeper.install_signal_handlers()
    tune_threads()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    gatekeeper.start()
    print(f"ccci-gate serving on {gatekeeper.web_url} (status: {gatekeeper.web_url}/status.json); "
          f"Gearman {', '.join(f'{h}:{p}' for h, p in gatekeeper.servers)}", flush=True)
    done.wait()
    gatekeeper.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .config.loader import LayoutError, load_layout
    from .settings import parse_hostport
    from .worker.daemon import WorkerDaemon
    from .pki import TlsFiles
    try:
        servers = [parse_hostport(s) for s in (args.gearman or ["127.0.0.1:4730"])]
        # with a gatekeeper to follow, a host needs no jobs/ of its own
        jobs = {} if args.gatekeeper and not args.jobs.exists() else load_layout([args.jobs]).jobs
        tls = TlsFiles.in_dir(args.tls_dir, "worker").check() if args.tls_dir else None
    except (ValueError, LayoutError) as exc:
        print(f"ccci-gate worker: {exc}", file=sys.stderr)
        return 2
    daemon = WorkerDaemon(servers, args.name, jobs, args.label, args.workdir, args.jobs,
                          max_builds=args.max_builds, tls=tls, gatekeeper=args.gatekeeper,
                          jobs_poll=args.jobs_poll)
    if any(job.kind.startswith("recipe-") for job in daemon.jobs.values()):
        janitor_pass(None, quiet=True)  # what a previous, killed worker here left behind
    from .swarm.holds import Periodic   # and held apps (autohold) once released or expired
    Periodic("janitor", lambda: janitor_pass(None, quiet=True)).start()
    signal.signal(signal.SIGTERM, lambda *_: daemon.shutdown())
    tune_threads()
    print(f"worker {args.name}: {len(daemon.jobs)} jobs, labels {args.label or '-'}, servers "
          f"{', '.join(f'{h}:{p}' for h, p in servers)}", flush=True)
    daemon.run_forever()
    return 0


def janitor_pass(state: Path | None, quiet: bool = False) -> int:
    """One janitor pass over this host's run leases (asking the gatekeeper about held
    apps); returns how many stacks it removed."""
    from .swarm.holds import ask_gatekeeper
    from .swarm.host import Host
    from .swarm.port import SwarmPort
    host = Host.from_env() if state is None else Host(state)
    if not host.leases():
        return 0
    try:
        return len(host.janitor(SwarmPort(), log=lambda text: print(text, end="", flush=True),
                                ask=ask_gatekeeper))
    except Exception as exc:  # noqa: BLE001 - at worker start, Docker missing is not fatal
        if not quiet:
            raise
        print(f"janitor skipped: {exc}", file=sys.stderr)
        return 0


def cmd_warm(args: argparse.Namespace) -> int:
    from .swarm import warm
    root = args.root or warm.default_root()
    if args.warm_command == "drop":
        from .swarm.port import SwarmPort
        canonical = warm.Canonical(root, args.recipe)
        if not canonical.dir.is_dir():
            print(f"no canonical of {args.recipe} under {root}", file=sys.stderr)
            return 1
        for line in warm.drop(SwarmPort(), canonical):
            print(f"freed {line}")
        return 0
    if args.warm_command == "prune":
        from .config.loader import load_layout
        from .swarm.port import SwarmPort
        enrolled = warm.enrolled_recipes(load_layout(args.layout or ["layouts", "jobs"]))
        dropped = warm.prune(SwarmPort(), root, enrolled,
                             log=lambda text: print(text, end="", flush=True))
        print(f"warm prune: {len(dropped)} canonical(s) dropped, kept those of "
              f"{', '.join(sorted(enrolled)) or 'no recipe'}")
        return 0
    rows = warm.listing(root)
    if args.json:
        print(json.dumps(rows, indent=1))
    for row in [] if args.json else rows:
        print(f"{row['recipe']:<20} {row['status']:<8} {row['version'] or '-':<16} "
              f"{(row['commit'] or '-')[:8]:<8} {row['stack'] or '-':<28} "
              f"{row['bytes'] / 1e6:.1f} MB")
    if not rows and not args.json:
        print(f"no canonicals under {root}")
    return 0


def cmd_janitor(args: argparse.Namespace) -> int:
    removed = janitor_pass(args.state)
    print(f"janitor: {removed} stack(s) removed")
    return 0


# --- client commands --------------------------------------------------------------------

def _token(args: argparse.Namespace) -> tuple[str, str]:
    """The admin token and where it came from (said when the gatekeeper refuses it)."""
    if args.token:
        return args.token, "--token"
    if os.environ.get("CCCI_ADMIN_TOKEN"):
        return os.environ["CCCI_ADMIN_TOKEN"], "CCCI_ADMIN_TOKEN"
    path = Path(args.state_dir) / "admin.token"
    try:
        return path.read_text().strip(), str(path.resolve())
    except OSError:
        raise SystemExit(f"ccci-gate: no admin token: pass --token, set CCCI_ADMIN_TOKEN, "
                         f"or run where {path} is readable") from None


def _post(args: argparse.Namespace, path: str, body: dict[str, Any]) -> int:
    code, data = _call(args, path, body)
    if code == 0:
        print(json.dumps(data))
    return code


def _call(args: argparse.Namespace, path: str, body: dict[str, Any] | None
          ) -> tuple[int, dict[str, Any]]:
    """POST ``body`` with the admin token (GET, without one, when ``body`` is None);
    (0, the answer), or (exit code, {}) once the error is printed."""
    token, source = _token(args) if body is not None else ("", "")
    try:
        if body is None:
            resp = requests.get(args.url.rstrip("/") + path, timeout=30)
        else:
            resp = requests.post(args.url.rstrip("/") + path, json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        print(f"ccci-gate: cannot reach the gatekeeper at {args.url}: {exc}", file=sys.stderr)
        return 2, {}
    try:
        data = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    except ValueError:
        data = {}
    if resp.status_code == 401:
        print(f"ccci-gate: the gatekeeper at {args.url} refused the admin token from {source} "
              f"(stale? a gatekeeper takes the token in its own state directory)", file=sys.stderr)
        return 1, {}
    if resp.status_code >= 400:
        for line in data.get("errors", []) or [data.get("error", resp.text)]:
            print(line, file=sys.stderr)
        return 1, {}
    return 0, data


def cmd_enqueue(args: argparse.Namespace) -> int:
    body = {"pipeline": args.pipeline, "project": args.project, "change": args.change,
            "ref": args.ref, "patchset": args.patchset, "branch": args.branch, "quick": args.quick}
    return _post(args, "/admin/enqueue", {k: v for k, v in body.items() if v not in (None, False)})


def cmd_dequeue(args: argparse.Namespace) -> int:
    body = {"project": args.project, "change": args.change, "ref": args.ref,
            "pipeline": args.pipeline}
    return _post(args, "/admin/dequeue", {k: v for k, v in body.items() if v not in (None, "")})


def cmd_promote(args: argparse.Namespace) -> int:
    return _post(args, "/admin/promote", {"pipeline": args.pipeline, "project": args.project,
                                          "change": args.change})


def cmd_retrigger(args: argparse.Namespace) -> int:
    body = {"pipeline": args.pipeline, "project": args.project, "change": args.change,
            "ref": args.ref, "job": args.job}
    return _post(args, "/admin/retrigger", {k: v for k, v in body.items() if v is not None})


def cmd_pause(args: argparse.Namespace) -> int:
    return _post(args, f"/admin/{args.command}", {"pipeline": args.pipeline})


def cmd_reconfigure(args: argparse.Namespace) -> int:
    return _post(args, "/admin/reconfigure", {})


def cmd_notify_push(args: argparse.Namespace) -> int:
    return _post(args, "/admin/notify-push", {"project": args.project})


def cmd_validate(args: argparse.Namespace) -> int:
    from .config.loader import validate_main
    return validate_main([str(p) for p in args.paths])


COMMANDS = {
    "janitor": cmd_janitor, "warm": cmd_warm,
    "notify-push": cmd_notify_push, "serve": cmd_serve, "worker": cmd_worker, "enqueue": cmd_enqueue, "dequeue": cmd_dequeue,
    "reconfigure": cmd_reconfigure, "validate": cmd_validate,
    "promote": cmd_promote, "retrigger": cmd_retrigger, "pause": cmd_pause, "resume": cmd_pause,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
