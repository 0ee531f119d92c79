"""``ccci-gate replay <build-id>``: run a past build again, on a worker or by hand.

The build's record comes from ``GET /builds/<id>.json`` (``web/logs.py``): its Gearman
function and the parameters it was dispatched with. Secret parameters (names with
TOKEN, SECRET, PASSWORD, PASSWD or KEY: ``credentials.is_secret``) were never stored, so
a replay needs fresh values: the gatekeeper's own credentials are dropped — the
hand-over pair (``CCCI_RESULT_URL``, ``CCCI_RESULT_TOKEN``: a replay's result comes back
over Gearman and the gatekeeper never hears of it) and ``CCCI_ARTIFACTS_TOKEN`` (a
replay does not write into the buildset's write-once artifacts) — and any other secret is taken from this command's
environment under the same name, or the replay says which are missing and runs nothing.

- default: submit the build once to Gearman (``--gearman HOST:PORT``, TLS with
  ``--tls-dir``: on a pool with TLS only the gatekeeper's certificate may submit) under
  a new build id (``gearman/oneoff.py``); its log is printed as it comes, the result on
  stderr; exit 0 SUCCESS, 1 FAILURE, 3 any other result or none (the worker was lost);
  interrupted (130) or past ``--timeout`` (2), the worker is asked to stop the build;
- ``--print``: print the shell commands that run it by hand: the parameters as
  ``export`` lines (values shell-quoted; secrets never printed — the script stops
  unless they are set), the workspace fetched from ``ZUUL_URL``/``ZUUL_PROJECT`` at
  ``ZUUL_REF``, and, for a ``shell`` job, its script below ``--jobs``.

Exit 2: no such build, no parameters recorded, a missing secret, no worker for it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import uuid
from pathlib import Path
from typing import Any

import requests

from ..swarm.holds import PARAMETERS as AUTOHOLD
from .logs import EXIT, NO_LOG, OTHER_RESULT

# the gatekeeper's own credentials for one buildset: the result hand-over (handoff.py) and
# the artifact store's write token (web/artifacts.py) — a replay has neither; nor is it
# held by the autohold the build was dispatched under (its hold would reach no gatekeeper)
HANDOFF = ("CCCI_RESULT_URL", "CCCI_RESULT_TOKEN", "CCCI_ARTIFACTS_TOKEN") + AUTOHOLD


def register(sub: Any) -> None:
    from ..cli import _add_client_args
    p = sub.add_parser("replay", help="run a past build again on a worker, or --print "
                                      "the commands to run it by hand")
    p.add_argument("build", help="the build id (the last part of its log URL)")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the equivalent shell commands instead of running it")
    p.add_argument("--gearman", action="append", default=[], metavar="HOST:PORT",
                   help="Gearman server (repeatable; default: 127.0.0.1:4730)")
    p.add_argument("--tls-dir", type=Path, metavar="DIR",
                   help="Gearman over TLS: DIR holds ca.crt and the --tls-name key and cert")
    p.add_argument("--tls-name", default="gatekeeper",
                   help="stem of the key and certificate in --tls-dir (default: gatekeeper, "
                        "the one certificate a TLS pool lets submit)")
    p.add_argument("--jobs", type=Path, default=Path("jobs"),
                   help="where shell jobs' scripts live, for --print (default: jobs/)")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    _add_client_args(p)
    p.set_defaults(func=cmd_replay)


class ReplayError(Exception):
    pass


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        record = fetch(args.url.rstrip("/"), args.build)
        params, needed = fresh_parameters(record, os.environ, keep_unset=args.print_only)
        if args.print_only:
            print(shell_script(record, params, needed, args.jobs))
            return 0
        return run(args, record, params)
    except ReplayError as exc:
        print(f"ccci-gate replay: {exc}", file=sys.stderr)
        return NO_LOG


def fetch(url: str, build_id: str) -> dict[str, Any]:
    try:
        resp = requests.get(f"{url}/builds/{build_id}.json", timeout=30)
    except requests.RequestException as exc:
        raise ReplayError(f"cannot reach {url}: {exc}") from None
    try:
        record = resp.json()
    except ValueError:
        record = None
    if not isinstance(record, dict):   # a typo'd --url, a proxy's page
        raise ReplayError(f"{url}/builds/{build_id}.json: {resp.status_code}, not a "
                          f"gatekeeper's answer ({resp.headers.get('Content-Type', '?')})")
    if resp.status_code != 200:
        raise ReplayError(f"build {build_id}: {resp.status_code} {record.get('error', '')}")
    if "parameters" not in record:
        raise ReplayError(f"the gatekeeper has no parameters recorded for build {build_id} "
                          f"(dispatched before it kept them, or its history expired)")
    return record


def fresh_parameters(record: dict[str, Any], env: Any, keep_unset: bool = False
                     ) -> tuple[dict[str, str], list[str]]:
    """The parameters to run with, and the secrets still needed (only with
    ``keep_unset``: ``--print`` leaves them to the person running it)."""
    params = {k: v for k, v in record["parameters"].items() if k not in HANDOFF}
    secrets = [s for s in record.get("secrets", []) if s not in HANDOFF]
    missing = [s for s in secrets if not env.get(s)]
    if missing and not keep_unset:
        raise ReplayError(f"build {record['id']} ran with secret parameter(s) "
                          f"{', '.join(missing)}, which are never stored: set them in the "
                          f"environment to replay it")
    if not keep_unset:
        params.update({s: env[s] for s in secrets})
    return params, secrets if keep_unset else []


def shell_script(record: dict[str, Any], params: dict[str, str], secrets: list[str],
                 jobs: Path) -> str:
    """Commands (POSIX sh) that run the build by hand; no secret value in them."""
    job = record.get("job_config") or {}
    lines = [f"# replay of build {record['id']}: job {record['job']} "
             f"({record.get('function', '')}, kind {job.get('kind', 'unknown')}), by hand",
             "set -eu"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(params.items())
              if name.isidentifier()]
    for name in secrets:   # never printed: whoever runs this supplies them
        lines.append(f': "${{{name}:?{name} is a secret of this build: export it first}}"')
        lines.append(f"export {name}")
    lines += ['WORKSPACE="$(mktemp -d)"; export WORKSPACE; cd "$WORKSPACE"',
              'git init -q .',
              'git fetch -q "$ZUUL_URL/$ZUUL_PROJECT" "$ZUUL_REF"',
              'git checkout -q FETCH_HEAD']
    if job.get("kind") == "shell" and job.get("run"):
        script = (jobs / job["run"]).resolve()
        runner = "" if os.access(script, os.X_OK) else "sh "
        lines.append(f"{runner}{shlex.quote(str(script))}")
    else:
        lines.append(f"# a {job.get('kind', 'unknown')} job runs inside a worker: "
                     f"ccci-gate replay {record['id']} --gearman HOST:PORT")
    return "\n".join(lines)


def run(args: argparse.Namespace, record: dict[str, Any], params: dict[str, str]) -> int:
    from ..gearman.oneoff import OneOffError, run_once
    from ..pki import PkiError, TlsFiles
    from ..settings import parse_hostport
    try:
        servers = [parse_hostport(s) for s in (args.gearman or ["127.0.0.1:4730"])]
        tls = TlsFiles.in_dir(args.tls_dir, args.tls_name).check() if args.tls_dir else None
    except (ValueError, PkiError) as exc:
        raise ReplayError(str(exc)) from None
    build_id = uuid.uuid4().hex
    params = {**params, "ZUUL_UUID": build_id}
    print(f"replaying build {record['id']} of {record['job']} as {build_id} "
          f"({record['function']})", file=sys.stderr)
    out = sys.stdout

    def write(text: str) -> None:
        out.write(text)
        out.flush()
    try:
        result = run_once(servers, record["function"], params, build_id, write,
                          on_start=lambda w: print(f"running on {w}", file=sys.stderr),
                          tls=tls, timeout=args.timeout)
    except OneOffError as exc:
        raise ReplayError(str(exc)) from None
    said = result or "NO RESULT (the worker failed or was lost)"
    print(f"replay {build_id} of build {record['id']}: {said}", file=sys.stderr)
    return EXIT.get(result or "", OTHER_RESULT)
