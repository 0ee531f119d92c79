"""Timer pipelines fire on their cron schedule, driven by an injected clock (no sleeping)."""
from __future__ import annotations

import calendar

from ccci_gate.core import actions as act
from ccci_gate.core.engine import Engine
from ccci_gate.core.layout import JobConfig, Layout, PipelineConfig, ProjectConfig
from ccci_gate.drivers.timer import (COUNT_MAX, FILTER, Due, TimerDriver, TimerStore, due, filters,
                                     trigger_key)

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


# --- Persistent: each trigger's last firing in SQLite (systemd's Persistent=true) ----------

def test_due_counts_the_times_in_the_window_pure():
    since = at("2026-11-24 03:00")
    assert due("0 3 * * *", since, at("2026-11-25 02:59")) == Due(0)
    found = due("0 3 * * *", since, at("2026-11-27 10:00"))
    assert (found.missed, found.first, found.last) == (3, at("2026-11-25 03:00"),
                                                       at("2026-11-27 03:00"))
    assert due("* * * * *", 0.0, 10 ** 9).missed == COUNT_MAX    # counting is bounded


def driver(layout, store, now, events):
    return TimerDriver(lambda: layout, events.append, clock=lambda: now[0], store=store)


def test_a_firing_missed_while_down_runs_once_at_start_not_once_per_missed_time(tmp_path,
                                                                               caplog):
    path = tmp_path / "timer.sqlite"
    events, now = [], [at("2026-11-24 02:00")]
    first = driver(LAYOUT, TimerStore(path), now, events)
    assert first.tick(at("2026-11-24 03:00")) == 1           # fired, and recorded
    first.stop()                                             # the gatekeeper goes down...
    now[0] = at("2026-11-27 10:00")                          # ...for three nights
    second = driver(LAYOUT, TimerStore(path), now, events)
    assert second.next_due() == at("2026-11-25 03:00") <= now[0]   # due at once
    with caplog.at_level("WARNING", "ccci_gate.timer"):
        assert second.tick() == 1                            # once, not three times
    assert events[-1].time == at("2026-11-27 03:00")
    assert "3 time(s) passed while the gatekeeper was down (2026-11-25 03:00 to " \
           "2026-11-27 03:00 UTC); it runs once now" in caplog.text
    assert second.tick(at("2026-11-27 23:00")) == 0
    assert second.tick(at("2026-11-28 03:00")) == 1          # then on schedule again
    second.stop()
    third = driver(LAYOUT, TimerStore(path), [at("2026-11-28 09:00")], events)
    assert third.tick() == 0                                 # nothing missed this time
    assert len(events) == 3


def test_a_restart_that_missed_no_time_fires_nothing(tmp_path):
    path = tmp_path / "timer.sqlite"
    events = []
    first = driver(LAYOUT, TimerStore(path), [at("2026-11-24 02:00")], events)
    assert first.tick(at("2026-11-24 03:00")) == 1
    first.stop()
    second = driver(LAYOUT, TimerStore(path), [at("2026-11-24 12:00")], events)
    assert second.tick() == 0 and second.next_due() == at("2026-11-25 03:00")


def test_a_trigger_seen_for_the_first_time_waits_for_its_next_time(tmp_path):
    path = tmp_path / "timer.sqlite"
    events, now = [], [at("2026-11-24 05:00")]      # 03:00 passed before it ever ran
    first = driver(LAYOUT, TimerStore(path), now, events)
    assert first.tick(at("2026-11-24 05:01")) == 0
    first.stop()
    now[0] = at("2026-11-24 06:00")                 # restarted: its since was recorded
    second = driver(LAYOUT, TimerStore(path), now, events)
    assert second.tick() == 0 and second.tick(at("2026-11-25 03:00")) == 1


def test_a_changed_cron_is_a_new_trigger_and_the_old_one_is_forgotten(tmp_path):
    path = tmp_path / "timer.sqlite"
    events = []
    first = driver(LAYOUT, TimerStore(path), [at("2026-11-24 02:00")], events)
    assert first.tick(at("2026-11-24 03:00")) == 1
    first.stop()
    changed = Layout(pipelines={"periodic": PipelineConfig("periodic", triggers={
        "timer": filters([FILTER({"time": "30 4 * * *"})])})},
        projects=LAYOUT.projects, jobs=LAYOUT.jobs)
    second = driver(changed, TimerStore(path), [at("2026-11-26 05:00")], events)
    assert second.tick() == 0                       # new: counts from now, no catch-up
    assert list(TimerStore(path).load()) == [trigger_key("periodic", "30 4 * * *", ("main",))]
