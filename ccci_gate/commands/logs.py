"""``ccci-gate logs <build-id> [-f]``: print a build's log; with ``-f``, follow it.

Following polls ``GET /logs/<id>`` with ``Range: bytes=<offset>-<offset + STEP - 1>``
(``web/logs.py``; 1 MiB at a time, never a download slot): a 206 is printed as it came and moves the offset, a 416 means nothing new yet. It stops
once the log is finished (``X-Log-State: finished``) and read to its end — or, should
the log never be finished (its compression missed), once the build has a result
(``GET /builds/<id>.json``) and nothing new came for ``SETTLE`` seconds; a finished log
whose build never got a result (a lost attempt, retried under another id) ends as
``NO RESULT`` after as long. It works the same on a build that finished long ago: one
read, and the result. A gatekeeper that stops answering once a log is being followed
(a restart) is waited for, up to ``RECONNECT`` seconds, and the log followed on from
where it was.

With ``-f`` the result is said on stderr and the exit status reflects it: 0 SUCCESS,
1 FAILURE, 3 any other result (ERROR, TIMED_OUT, ABORTED, ...). Without ``-f`` the exit
status is 0 once the log is printed. Either way 2: no such build, its log expired
(retention; the message says when), or the gatekeeper cannot be reached.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, BinaryIO

import requests

POLL = 0.5        # seconds between reads of a running log
SETTLE = 3.0      # seconds of silence after the build's result before giving up on the end
RECONNECT = 300.0  # seconds a follower waits for a gatekeeper that stopped answering
STEP = 1 << 20     # bytes asked for at a time (web/logs.py sends up to this in one go)
EXIT = {"SUCCESS": 0, "FAILURE": 1}
OTHER_RESULT, NO_LOG = 3, 2
NO_RESULT = "NO RESULT (a lost attempt: its retry is another build)"


def register(sub: Any) -> None:
    from ..cli import _add_client_args
    p = sub.add_parser("logs", help="print a build's log; -f follows a running build")
    p.add_argument("build", help="the build id (the last part of its log URL)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow until the build ends; exit 0 SUCCESS, 1 FAILURE, 3 other")
    _add_client_args(p)
    p.set_defaults(func=cmd_logs)


class _Gone(Exception):
    """No log to read: a 404 or 410, with the gatekeeper's words."""


def cmd_logs(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    out = sys.stdout.buffer
    try:
        if not args.follow:
            resp = requests.get(f"{url}/logs/{args.build}", timeout=30)
            _check(resp)
            out.write(resp.content)
            return 0
        result = follow(url, args.build, out)
    except _Gone as exc:
        print(f"ccci-gate logs: {exc}", file=sys.stderr)
        return NO_LOG
    except requests.RequestException as exc:
        print(f"ccci-gate logs: cannot reach {url}: {exc}", file=sys.stderr)
        return NO_LOG
    print(f"build {args.build}: {result}", file=sys.stderr)
    return EXIT.get(result, OTHER_RESULT)


def follow(url: str, build_id: str, out: BinaryIO, poll: float = POLL,
           settle: float = SETTLE) -> str:
    """Write the log to ``out`` as it grows until the build ends; its result."""
    offset, quiet_since, reached = 0, time.monotonic(), False
    with requests.Session() as http:
        while True:
            resp = _get(http, f"{url}/logs/{build_id}",   # a bounded range: no download slot
                        {"Range": f"bytes={offset}-{offset + STEP - 1}",
                         "Accept-Encoding": "identity"}, patient=reached)
            _check(resp)
            reached = True
            finished = resp.headers.get("X-Log-State") == "finished"
            if resp.status_code == 206 and resp.content:
                out.write(resp.content)
                out.flush()
                offset += len(resp.content)
                quiet_since = time.monotonic()
                continue   # read on at once: more may be there already
            if resp.status_code == 200:   # the server ignored the range: all of it
                out.write(resp.content[offset:])
                out.flush()
                offset = max(offset, len(resp.content))
            result = _result(http, url, build_id)
            if finished and result:
                return result
            if (result or finished) and time.monotonic() - quiet_since >= settle:
                return result or NO_RESULT
            time.sleep(poll)


def _get(http: requests.Session, url: str, headers: dict[str, str] | None = None,
         patient: bool = True) -> requests.Response:
    """GET; when ``patient``, retried while the gatekeeper does not answer (a restart)
    for up to ``RECONNECT`` seconds, said once on stderr."""
    since: float | None = None
    while True:
        try:
            resp = http.get(url, headers=headers, timeout=30)
            if resp.status_code < 500:
                return resp
            problem = f"{resp.status_code} {resp.text.strip()[:200]}"
        except requests.ConnectionError as exc:
            problem = str(exc)
        if not patient:
            raise requests.ConnectionError(problem)
        if since is None:
            since = time.monotonic()
            print("ccci-gate logs: the gatekeeper does not answer; following again when it "
                  "does", file=sys.stderr)
        elif time.monotonic() - since > RECONNECT:
            raise requests.ConnectionError(f"no answer for {RECONNECT:.0f} s: {problem}")
        time.sleep(1.0)


def _result(http: requests.Session, url: str, build_id: str) -> str | None:
    resp = _get(http, f"{url}/builds/{build_id}.json")
    _check(resp)
    return resp.json().get("result") or None


def _check(resp: requests.Response) -> None:
    if resp.status_code in (404, 410):
        try:
            reason = resp.json().get("error") or resp.text
        except ValueError:
            reason = resp.text
        raise _Gone(reason.strip())
    if resp.status_code >= 400 and resp.status_code != 416:
        raise requests.HTTPError(f"{resp.status_code} {resp.text.strip()[:200]}")
