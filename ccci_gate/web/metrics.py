"""``GET /metrics``: the gatekeeper in Prometheus' text exposition format.

Every gatekeeper has its own :class:`GateMetrics` and its own ``CollectorRegistry``
(never the library's global one), so several gatekeepers in one process, and tests,
do not collide.

Two kinds of metric:

- **observed** where things happen, and only as cheap as a counter increment:
  the scheduler thread tells :meth:`GateMetrics.handled` how long each event took and
  :meth:`GateMetrics.changed` what each batch changed (items enqueued and finished,
  builds that ended, from the summaries the store saves anyway); the dispatcher tells
  :meth:`GateMetrics.taken` (on gear's poll thread) how long a build waited for a worker.
- **collected** at scrape time from what the HTTP API already reads — the scheduler's
  published snapshot, the worker pool's :class:`~ccci_gate.web.snapshot.Snapshot` — and,
  through the API's :class:`~ccci_gate.alerts.Alerts` (the one source of the open
  alerts), the connections' outbox stores (one short SQLite query each) and the warm
  root (walked on a background thread at most every ``alerts.WARM_MAX_AGE`` seconds). A
  scrape never takes the scheduler's lock nor waits on a Gearman server.

With a :class:`~ccci_gate.web.statsd.Statsd` (the ``statsd-host`` setting), every
observation is also sent to statsd as a counter or a timer.

:data:`METRICS` lists every metric (name, type, labels, meaning); ``doc/operating.md``
holds the table :func:`metrics_table` prints (``python3 -m ccci_gate.web.metrics``), and
``tests/test_metrics.py`` keeps the table, this list and a real scrape the same.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import GaugeMetricFamily, Metric

from ..alerts import KINDS, Alerts
from ..scheduler import Observer
from .routes import Request, Response, Router
from .statsd import Statsd

BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))
EVENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                 float("inf"))


@dataclass(frozen=True)
class MetricDoc:
    """One metric as an operator reads it: name, Prometheus type, labels, meaning."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


METRICS = (
    MetricDoc("ccci_items_enqueued_total", "counter", ("pipeline",),
              "items enqueued into a pipeline"),
    MetricDoc("ccci_items_finished_total", "counter", ("pipeline", "result"),
              "items that left their pipeline, by result (`DEQUEUED` for one removed "
              "without a result)"),
    MetricDoc("ccci_build_duration_seconds", "histogram", ("job", "result"),
              "builds that ran, from the worker starting them to their result"),
    MetricDoc("ccci_dispatch_latency_seconds", "histogram", ("function",),
              "from the dispatcher being handed a build to a worker taking it (its first "
              "WORK_DATA), time held for want of a worker included"),
    MetricDoc("ccci_scheduler_event_seconds", "histogram", ("event",),
              "time the scheduler thread took for one event: the engine's step and "
              "carrying out its actions"),
    MetricDoc("ccci_scheduler_event_queue_depth", "gauge", (),
              "events waiting for the scheduler thread"),
    MetricDoc("ccci_pipeline_queue_length", "gauge", ("pipeline",),
              "items in the pipeline's queues (as last published by the scheduler)"),
    MetricDoc("ccci_pipeline_paused", "gauge", ("pipeline",),
              "1 while the pipeline is paused"),
    MetricDoc("ccci_builds_waiting", "gauge", ("state",),
              "builds waiting for a worker: `held` by the dispatcher (no worker has their "
              "function) or `queued` on a Gearman server"),
    MetricDoc("ccci_gearman_servers_connected", "gauge", (),
              "Gearman servers the dispatcher is connected to"),
    MetricDoc("ccci_gearman_workers", "gauge", (),
              "workers that registered at least one build function (`build:<job>[:<label>]`), "
              "counted on each server"),
    MetricDoc("ccci_gearman_functions_registered", "gauge", (),
              "build functions at least one worker registered"),
    MetricDoc("ccci_gearman_function_workers", "gauge", ("function",),
              "workers that registered the build function"),
    MetricDoc("ccci_outbox_pending_writes", "gauge", ("connection",),
              "writes to a forge (statuses, comments, reviews) waiting in the "
              "connection's durable outbox"),
    MetricDoc("ccci_outbox_oldest_pending_seconds", "gauge", ("connection",),
              "age of the oldest write waiting in the outbox (0 when none waits)"),
    MetricDoc("ccci_alerts_open", "gauge", ("kind",),
              "open alerts by kind, as `/status.json` lists them: `pipeline_paused`, "
              "`no_worker` (builds wait for a function no worker registered), `warm_broken` "
              "(a canonical of this host's warm root whose restore failed, see doc/warm.md), "
              "`outbox_stuck` (a forge write waiting over 10 minutes)"),
    MetricDoc("ccci_warm_root_bytes", "gauge", (),
              "bytes under this host's warm root (CCCI_WARM_ROOT, else "
              "CCCI_SWARM_STATE/warm, as `ccci-gate warm` reads it), measured at most every "
              "60 s; absent when the host has none"),
)


def metrics_table() -> str:
    """The Markdown table of :data:`METRICS` that ``doc/operating.md`` holds."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.type} | {', '.join(f'`{x}`' for x in m.labels) or '—'} "
             f"| {m.help} |" for m in METRICS]
    return "\n".join(rows)


def _doc(name: str) -> MetricDoc:
    return next(m for m in METRICS if m.name == name)


def _family_name(doc: MetricDoc) -> str:
    return doc.name[:-len("_total")] if doc.type == "counter" else doc.name


class GateMetrics(Observer):
    """The gatekeeper's metrics: the observers the scheduler (a ``scheduler.Observer``)
    and the dispatcher call, and the collector :meth:`watch` registers."""

    def __init__(self, statsd: Statsd | None = None) -> None:
        self.registry = CollectorRegistry()
        self.statsd = statsd     # the same observations sent to statsd too (web/statsd.py)
        self.enqueued = self._make(Counter, "ccci_items_enqueued_total")
        self.finished = self._make(Counter, "ccci_items_finished_total")
        self.durations = self._make(Histogram, "ccci_build_duration_seconds",
                                    buckets=BUILD_BUCKETS)
        self.latency = self._make(Histogram, "ccci_dispatch_latency_seconds",
                                  buckets=LATENCY_BUCKETS)
        self.events = self._make(Histogram, "ccci_scheduler_event_seconds",
                                 buckets=EVENT_BUCKETS)
        # item id → ids of its builds already observed (live items only: bounded)
        self._live: dict[str, set[str]] = {}

    def _make(self, kind: Any, name: str, **kwargs: Any) -> Any:
        doc = _doc(name)
        return kind(_family_name(doc), doc.help, doc.labels, registry=self.registry, **kwargs)

    # --- observed (scheduler thread; gear's poll thread for ``taken``) ----------------------

    def handled(self, kind: str, seconds: float) -> None:
        self.events.labels(kind).observe(seconds)
        if self.statsd is not None:
            self.statsd.timing(seconds, "scheduler", "event", kind)

    def changed(self, delta: Any) -> None:
        """Count the items a batch enqueued and finished and the builds that ended, from
        the summaries of the delta (``Engine.take_delta``)."""
        for summary, _record in delta.items:
            self._item(summary)
        for summary in delta.finished:
            self._item(summary)
            self._live.pop(summary["item_id"], None)
            result = summary.get("result") or summary.get("state") or ""
            self.finished.labels(summary["pipeline"], result).inc()
            if self.statsd is not None:
                self.statsd.incr("pipeline", summary["pipeline"], "finished", result)

    def _item(self, summary: Mapping[str, Any]) -> None:
        seen = self._live.get(summary["item_id"])
        if seen is None:
            seen = self._live[summary["item_id"]] = set()
            self.enqueued.labels(summary["pipeline"]).inc()
            if self.statsd is not None:
                self.statsd.incr("pipeline", summary["pipeline"], "enqueued")
        for job in summary.get("jobs", ()):
            if job.get("id") in seen or not _ran(job):
                continue
            seen.add(job["id"])
            seconds = job["finished_at"] - job["started_at"]
            self.durations.labels(job["name"], job["result"]).observe(seconds)
            if self.statsd is not None:
                self.statsd.timing(seconds, "job", job["name"], job["result"])

    def known(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        """Items a restarted gatekeeper restored (and their ended builds): not counted
        again as enqueued or run by this process."""
        for item_id, summary in items.items():
            self._live[item_id] = {j["id"] for j in summary.get("jobs", ()) if _ran(j)}

    def taken(self, function: str, seconds: float) -> None:
        self.latency.labels(function).observe(seconds)
        if self.statsd is not None:
            self.statsd.timing(seconds, "dispatch", function)

    # --- collected at scrape time ---------------------------------------------------------

    def watch(self, status: Callable[[], Mapping[str, Any]], queue_depth: Callable[[], int],
              alerts: Alerts) -> None:
        """Register the collector of levels: ``status()`` is the scheduler's published
        status, ``alerts`` the status API's (its pool snapshot, the connections'
        outboxes and this host's warm root)."""
        self.registry.register(_Levels(status, queue_depth, alerts))

    def register(self, router: Router) -> None:
        router.add("GET", "/metrics", self.scrape)

    def scrape(self, request: Request) -> Response:
        """The text format, or OpenMetrics when the scraper's ``Accept`` asks for it; an
        ``Accept`` the library cannot read gets the plain text format (a preference,
        not an error)."""
        try:
            encode, content_type = choose_encoder(request.header("accept"))
        except (TypeError, ValueError):   # e.g. "application/openmetrics-text; version=x"
            encode, content_type = choose_encoder("")
        return Response(200, encode(self.registry), {"Content-Type": content_type})


def _ran(job: Mapping[str, Any]) -> bool:
    """A build that started on a worker and has its result (not SKIPPED, not waiting)."""
    return bool(job.get("id") and job.get("result") and job.get("started_at") is not None
                and job.get("finished_at") is not None)


class _Levels:
    """Gauges read from snapshots when Prometheus scrapes."""

    def __init__(self, status: Callable[[], Mapping[str, Any]], queue_depth: Callable[[], int],
                 alerts: Alerts):
        self.status = status
        self.queue_depth = queue_depth
        self.alerts = alerts

    def describe(self) -> Iterable[Metric]:
        return [_gauge(m.name) for m in METRICS if m.type == "gauge"]

    def collect(self) -> Iterator[Metric]:
        yield _gauge("ccci_scheduler_event_queue_depth", value=self.queue_depth())
        status, pool = self.status(), self.alerts.pool_value()   # the pool waited on once
        yield from self._pipelines(status)
        yield from self._pool(pool)
        yield from self._outboxes()
        kinds = [a.kind for a in self.alerts.current(status, pool)]
        yield _gauge("ccci_alerts_open", [((kind,), kinds.count(kind)) for kind in KINDS])
        warm = self.alerts.warm_value()
        yield _gauge("ccci_warm_root_bytes", [((), warm["bytes"])] if "bytes" in warm else [])

    def _pipelines(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        lengths, paused = [], []
        for pipeline in status.get("pipelines", ()):
            name = (pipeline["name"],)
            lengths.append((name, sum(len(q["items"]) for q in pipeline.get("queues", ()))))
            paused.append((name, 1 if pipeline.get("paused") else 0))
        yield _gauge("ccci_pipeline_queue_length", lengths)
        yield _gauge("ccci_pipeline_paused", paused)

    def _pool(self, pool: Mapping[str, Any]) -> Iterator[Metric]:
        builds = {name: f for name, f in (pool.get("functions") or {}).items()
                  if name.startswith("build:")}
        known = "servers" in pool   # nothing known before the pool's first answer
        yield _gauge("ccci_builds_waiting", [
            (("held",), pool.get("held", 0)),
            (("queued",), sum(f.get("queued", 0) for f in builds.values()))] if known else [])
        one = (lambda value: [((), value)]) if known else (lambda value: [])
        yield _gauge("ccci_gearman_servers_connected", one(len(pool.get("servers", ()))))
        yield _gauge("ccci_gearman_workers", one(sum(
            1 for w in pool.get("workers", ()) if any(f.startswith("build:") for f in w["functions"]))))
        yield _gauge("ccci_gearman_functions_registered",
                     one(sum(1 for f in builds.values() if f.get("workers", 0) >= 1)))
        yield _gauge("ccci_gearman_function_workers",
                     [((name,), f.get("workers", 0)) for name, f in sorted(builds.items())])

    def _outboxes(self) -> Iterator[Metric]:
        pending, oldest = [], []
        now = time.time()
        for name, (count, queued_at) in self.alerts.backlogs().items():
            pending.append(((name,), count))
            oldest.append(((name,), max(0.0, now - queued_at) if queued_at else 0.0))
        yield _gauge("ccci_outbox_pending_writes", pending)
        yield _gauge("ccci_outbox_oldest_pending_seconds", oldest)


def _gauge(name: str, samples: Iterable[tuple[tuple[str, ...], float]] = (),
           value: float | None = None) -> GaugeMetricFamily:
    doc = _doc(name)
    if value is not None:
        return GaugeMetricFamily(name, doc.help, value=value)
    family = GaugeMetricFamily(name, doc.help, labels=doc.labels)
    for labels, sample in samples:
        family.add_metric(list(labels), sample)
    return family


if __name__ == "__main__":  # pragma: no cover - prints the table doc/operating.md holds
    print(metrics_table())
