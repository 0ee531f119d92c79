"""``ccci-gate status``: a running gatekeeper's ``/status.json`` as a table people read.

First the open alerts (``alerts.py``), one ``ALERT`` line each; then pipelines
(``(paused)`` marked) and their items (change, project, age, state, jobs done, result;
in a queue shared by several items or with a window, under the queue's name and window,
each item naming the one directly ahead and how many are ahead), each item's builds
with their state and **progress**: for a running build the time it has run, and, when
the status gives the job's ``estimate`` (seconds, from its recent successful runs), that
estimate, a bar and a percentage; then the recently finished items with their result
and page, then the worker pool. ``--json`` prints the document as it came, for scripts.

**Width.** On a terminal, lines fit its width: a line too long first loses its link (a
build's log, an item's page), then is cut with ``…``. Piped, lines are whole (``grep``
finds the links), unless ``--width N`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from typing import Any, Mapping, Sequence

import requests

from ..core.status import place_of

BAR = 10   # characters of a progress bar
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")   # C0, DEL, C1: never printed as they are


def register(sub: Any) -> None:
    from ..cli import _add_client_args
    p = sub.add_parser("status", help="show pipelines, items and builds")
    p.add_argument("--json", action="store_true", help="raw status.json")
    p.add_argument("--width", type=int, default=None, metavar="COLUMNS",
                   help="fit lines to COLUMNS (default: the terminal's; whole lines when "
                        "piped; 0: whole lines)")
    _add_client_args(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        resp = requests.get(args.url.rstrip("/") + "/status.json", timeout=30)
        data = resp.json()
    except (requests.RequestException, ValueError) as exc:
        print(f"ccci-gate: cannot read status from {args.url}: {exc}", file=sys.stderr)
        return 2
    if resp.status_code >= 400:   # e.g. 503 while a starting scheduler has not answered
        print(f"ccci-gate: {args.url}: {data.get('error', resp.reason)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True))
        return 0
    width = args.width
    if width is None:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
    print(format_status(data, width))
    return 0


def format_status(data: Mapping[str, Any], width: int = 0) -> str:
    """The status as text; ``width`` > 0 fits every line to it."""
    now = _now(data)
    lines: list[str] = [_alert_line(a, now) for a in data.get("alerts") or []]
    for pipeline in data.get("pipelines", []):
        lines.append(f"{pipeline['name']} [{pipeline['manager']}]"
                     + (" (paused)" if pipeline.get("paused") else ""))
        items = [(q, i) for q in pipeline.get("queues", []) for i in q["items"]]
        if not items:
            lines.append("  no items")
            continue
        rows: list[list[str]] = [["CHANGE", "PROJECT", "AGE", "STATE", "JOBS", "RESULT"]]
        rows += [_item_row(item, now) for _, item in items]
        header, *item_lines = _align(rows)
        job_lines = _align([_build_row(job, now) for _, item in items for job in item["jobs"]])
        shown = None
        for (queue, item), text in zip(items, item_lines):
            if queue is not shown and (queue.get("window") or len(queue["items"]) > 1):
                lines.append(f"  queue {queue['name']}"
                             + (f"  window {queue['window']}" if queue.get("window") else ""))
            if shown is None:
                lines.append("  " + header)
            shown = queue
            lines.append("  " + text)
            lines += ["    " + job_lines.pop(0) for _ in item["jobs"]]
    recent = data.get("recent") or []
    if recent:
        lines.append("recently finished")
        rows = [[_describe(r), r.get("pipeline", ""), r.get("result") or r.get("state") or "",
                 _ago(now, r.get("finished_at")), r.get("status_url", "")] for r in recent]
        lines += ["  " + line for line in _align(rows)]
    lines += _pool(data.get("pool") or {})
    return "\n".join(_fit(_printable(line), width) for line in lines) or "no pipelines"


def _alert_line(alert: Mapping[str, Any], now: float | None) -> str:
    """``ALERT critical: <message> (for 3m05s)``."""
    since = _since(now, alert.get("since"))
    return (f"ALERT {alert.get('severity', '')}: {alert.get('message', '')}"
            + (f" (for {since})" if since else ""))


def _item_row(item: Mapping[str, Any], now: float | None) -> list[str]:
    change = item["change"]
    if change.get("number") is not None:
        name = f"#{change['number']}" + (f",{change['patchset'][:8]}" if change.get("patchset") else "")
    else:
        name = change.get("ref") or change.get("id", "")
    prog = item.get("progress") or {}
    why = item.get("failing_reason") or ""
    count, direct = place_of(item)
    on = f"(on {direct}" + (f", {count} ahead)" if count > 1 else ")") if direct else ""
    return [name, change.get("project", ""), _since(now, item.get("enqueued_at")),
            item["state"], f"{prog.get('done', 0)}/{prog.get('total', 0)}",
            " ".join(x for x in (item.get("result") or "", why) if x),
            on]


def _build_row(job: Mapping[str, Any], now: float | None) -> list[str]:
    """name, state (its result once it has one), progress, worker, log link."""
    return [job["name"], job.get("result") or job.get("state") or "", _progress(job, now),
            job.get("worker") or "", job.get("log_url") or ""]


def _progress(job: Mapping[str, Any], now: float | None) -> str:
    """A finished build: its duration. A running one: elapsed, and against the job's
    estimate a bar and a percentage. A queued one: ``queued``. Else nothing."""
    started, estimate = job.get("started_at"), job.get("estimate")
    if job.get("result"):
        return _seconds(job.get("duration")) if started is not None else ""
    if started is None:
        return "queued" if job.get("id") else ""
    ran = max(0.0, now - started) if now is not None else job.get("duration")
    if not isinstance(estimate, (int, float)) or estimate <= 0 or ran is None:
        return _seconds(ran)
    share = ran / estimate
    full = min(BAR, int(share * BAR))
    return (f"{_seconds(ran)} of ~{_seconds(estimate)} [{'#' * full}{'-' * (BAR - full)}] "
            f"{int(share * 100)}%")


def _pool(pool: Mapping[str, Any]) -> list[str]:
    if pool.get("error"):
        return [f"pool: {pool['error']}"]
    if "functions" not in pool:
        return []
    functions = {name: f for name, f in pool["functions"].items() if not name.startswith("stop:")}
    workers = sorted({w["name"] for w in pool.get("workers", [])
                      if any(not f.startswith("stop:") for f in w.get("functions", []))})
    servers = len(pool.get("servers", []))
    queued = sum(f.get("queued", 0) for f in functions.values())
    running = sum(f.get("running", 0) for f in functions.values())
    lines = [f"pool: {_count(servers, 'server')}, {_count(len(workers), 'worker')}"
             + (f" ({', '.join(workers)})" if workers else "")
             + f"; {queued} queued, {running} running, {pool.get('held', 0)} held for want "
               f"of a worker"]
    if functions:
        rows = [["FUNCTION", "WORKERS", "QUEUED", "RUNNING"]] + [
            [name, str(f.get("workers", 0)), str(f.get("queued", 0)), str(f.get("running", 0))]
            for name, f in sorted(functions.items())]
        lines += ["  " + line for line in _align(rows)]
    return lines


# --- text helpers ---------------------------------------------------------------------------

def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as lines, each column as wide as its widest cell (empty trailing
    cells dropped)."""
    if not rows:
        return []
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(map(len, rows)))]
    out = []
    for row in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row)]
        out.append("  ".join(cells).rstrip())
    return out


def _printable(line: str) -> str:
    """``line`` with each control character shown as ``?`` (one for one: the columns
    stay aligned): parts of the status come from outside, and must not drive the
    terminal (an ESC sequence, a BEL)."""
    return CONTROL.sub("?", line)


def _fit(line: str, width: int) -> str:
    """``line`` fitted to ``width`` (0: as is): first without its trailing link, then cut."""
    if width <= 0 or len(line) <= width:
        return line
    head, _, tail = line.rpartition("  ")
    if "://" in tail and head.strip():
        line = head.rstrip()
    return line if len(line) <= width else line[:max(1, width - 1)] + "…"


def _now(data: Mapping[str, Any]) -> float | None:
    """The clock the status was taken at (``now`` when the API computed estimates)."""
    for key in ("now", "time"):
        if isinstance(data.get(key), (int, float)):
            return float(data[key])
    return None


def _seconds(value: Any) -> str:
    """``0.4s``, ``42s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    if not isinstance(value, (int, float)):
        return ""
    if value < 10:
        return f"{value:.1f}s"
    s = int(value)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _since(now: float | None, then: Any) -> str:
    if now is None or not isinstance(then, (int, float)):
        return ""
    return _seconds(max(0.0, now - then))


def _ago(now: float | None, then: Any) -> str:
    since = _since(now, then)
    return f"{since} ago" if since else ""


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _describe(row: Mapping[str, Any]) -> str:
    """A finished item as ``Change.describe()`` words it."""
    if row.get("change_number") is not None:
        return f"{row.get('project')}#{row['change_number']}" + (
            f",{row['patchset']}" if row.get("patchset") else "")
    return f"{row.get('project')}@{row.get('ref')}"
