"""Timer pipelines fire on their cron schedule, driven by an injected clock (no sleeping)."""
from __future__ import annotations

import calendar

from ccci_gate.core import actions as act
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig
from ccci_gate.drivers.timer import FILTER, TimerDriver, filters

LAYOUT = Layout(
    pipelines={"periodic": PipelineConfig("periodic", triggers={"timer": filters([FILTER({"time": "0 3 * * *"})])}),
               "check": PipelineConfig("check", triggers={"admin": ()})},
    projects={"org/a": ProjectConfig("org/a", pipelines={"periodic": ("noop",), "check": ("noop",)}),
              "org/b": ProjectConfig("org/b", pipelines={"check": ("noop",)})},
    jobs={"noop": JobConfig("noop")})


def at(text: str) -> float:
    return float(calendar.timegm(__import__("time").strptime(text, "%Y-%m-%d %H:%M")))


def test_timer_fires_once_at_the_cron_time_for_projects_of_that_pipeline():
    events = []
    now = [at("2026-11-24 02:00")]
    timer = TimerDriver(lambda: LAYOUT, events.append, clock=lambda: now[0])
    assert timer.tick(at("2026-11-24 02:59")) == 0
    assert timer.tick(at("2026-11-24 03:00")) == 1
    assert timer.tick(at("2026-11-24 03:30")) == 0
    assert timer.tick(at("2026-11-25 03:01")) == 1
    assert [e.change.project for e in events] == ["org/a", "org/a"]
    assert events[0].change.ref == "refs/heads/main"

    engine = Engine(LAYOUT, clock=lambda: now[0])
    out = engine.handle(events[0])
    assert [type(a) for a in out] == [act.PrepareRef]
    assert engine.status()["pipelines"][0]["queues"][0]["items"][0]["pipeline"] == "periodic"


def test_next_due_is_the_next_cron_time():
    timer = TimerDriver(lambda: LAYOUT, lambda e: None, clock=lambda: at("2026-11-24 02:00"))
    assert timer.next_due() == at("2026-11-24 03:00")
