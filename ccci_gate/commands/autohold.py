"""``ccci-gate autohold``: keep the app of a job's next failing run deployed for debugging.

- ``ccci-gate autohold --project P --job J [--change N] [--count 1] [--for 4h]
  [--reason TEXT]``: register a hold request (``POST /admin/autohold``)
- ``ccci-gate autohold list [--json]``: requests and held apps with how to reach them
  (``GET /autohold.json``)
- ``ccci-gate autohold release ID``: release a request and its held apps
  (``POST /admin/autohold/release``)

Talks to a running gatekeeper with the admin token, like the other client commands.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..autohold.spec import DEFAULT_FOR, format_duration, parse_duration


def register(sub: Any) -> None:
    from ..cli import _add_client_args
    p = sub.add_parser("autohold", help="keep the app of a job's next failing run deployed "
                                        "(list, release: see doc/operating.md)")
    p.add_argument("action", nargs="?", choices=("list", "release"),
                   help="list requests and held apps, or release one request")
    p.add_argument("id", nargs="?", help="the request to release")
    p.add_argument("--project", help="the project whose builds to hold")
    p.add_argument("--job", help="the job whose failing run's app to keep (install, systest)")
    p.add_argument("--change", type=int, help="only builds of this change")
    p.add_argument("--count", type=int, default=1, help="how many failing runs (default: 1)")
    p.add_argument("--for", dest="hold_for", type=_duration, default=DEFAULT_FOR,
                   help="how long each held app is kept: 30m, 4h, 2d... (default: 4h)")
    p.add_argument("--reason", default="", help="why (shown in the list)")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    _add_client_args(p)
    p.set_defaults(func=run)


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from ..cli import _call
    if args.action == "list":
        code, data = _call(args, "/autohold.json", None)
        if code == 0:
            print(json.dumps(data, indent=1, sort_keys=True) if args.json else format_list(data))
        return code
    if args.action == "release":
        if not (args.id or "").isdigit():
            print("ccci-gate autohold release: give the request's number "
                  "(`ccci-gate autohold list` shows them)", file=sys.stderr)
            return 2
        code, data = _call(args, "/admin/autohold/release", {"id": int(args.id)})
        if code == 0:
            apps = data.get("apps") or []
            print(f"autohold {data['released']} released"
                  + (f"; removing {', '.join(apps)} (on this host now, elsewhere at its "
                     f"worker's next janitor pass)" if apps else ""))
        return code
    if not args.project or not args.job or args.id:
        print("ccci-gate autohold: --project and --job are required to register a hold "
              "(or: autohold list, autohold release ID)", file=sys.stderr)
        return 2
    body = {"project": args.project, "job": args.job, "change": args.change,
            "count": args.count, "for": args.hold_for, "reason": args.reason}
    code, data = _call(args, "/admin/autohold", {k: v for k, v in body.items() if v is not None})
    if code == 0:
        print(f"autohold {data['id']}: the next {data['count']} failing {data['job']} run(s) of "
              f"{data['project']}{_change(data)} stay deployed for {data['for_text']} each")
    return code


def _change(row: dict[str, Any]) -> str:
    return f" change {row['change']}" if row.get("change") is not None else ""


def format_list(data: dict[str, Any], now: float | None = None) -> str:
    """Requests, then held apps with how to reach each."""
    now = now or time.time()
    lines = []
    for r in data.get("requests", []):
        lines.append(f"request {r['id']:<4} {r['state']:<9} {r['project']} {r['job']}"
                     f"{_change(r)}  held {r['used']}/{r['count']}  keep {r['for_text']}"
                     + (f"  ({r['reason']})" if r.get("reason") else ""))
    for h in data.get("held", []):
        lines += [f"held app {h['stack']} (request {h['request_id']}, build {h['build_id']}): "
                  f"{_state(h, now)}",
                  f"  host {h['host'] or '?'} (worker {h['worker'] or '?'})",
                  f"  services: {h['services']}",
                  f"  domain {h['domain'] or '?'}; networks {', '.join(h['networks']) or '(none)'}",
                  f"  log: {h['log_url']}"]
    return "\n".join(lines) or "no autohold requests"


def _state(held: dict[str, Any], now: float) -> str:
    if held["state"] == "held":
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held["until"]))
        return f"held until {when} (in {format_duration(held['until'] - now)})"
    why = held.get("why") or ""
    return (f"{held['state']}{': ' + why if why not in ('', 'released', 'expired') else ''}; "
            f"removed by the janitor of {held['host'] or held['worker'] or 'its host'}")
