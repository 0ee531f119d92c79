"""Drivers are plugins: found under ccci_gate/drivers or through entry points, and the
layout loader asks them about their own trigger filters."""
from __future__ import annotations

import textwrap

import pytest
import voluptuous as v

from ccci_gate.config.loader import LayoutError, load_layout
from ccci_gate.core import events as ev
from ccci_gate.core.triggers import TriggerFilter
from ccci_gate.drivers import registry
from ccci_gate.drivers.base import Driver

LAYOUT = """\
pipelines:
  - name: check
    trigger:
      forge:
        - when: opened
projects:
  - name: org/a
    check: [build]
jobs:
  - name: build
"""

FORGE = Driver(name="forge", description="a driver from another distribution",
               trigger_schema=[{v.Required("when"): v.In(["opened"])}],
               filters=lambda value: (TriggerFilter((ev.ChangeOpened,)),) * len(value))


class EntryPoint:
    name = "forge"

    def load(self) -> Driver:
        return FORGE


@pytest.fixture
def plugin(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint()]
                        if group == registry.ENTRY_POINTS else [])
    registry.drivers.cache_clear()
    yield
    registry.drivers.cache_clear()


def test_the_built_in_drivers_are_found():
    assert {"admin", "gerrit", "gitea", "timer"} <= set(registry.drivers())
    with pytest.raises(ValueError, match="no driver 'pagure' is installed"):
        registry.get("pagure")


def test_an_entry_point_driver_serves_layouts_with_no_change_to_the_core(plugin, tmp_path):
    path = tmp_path / "layout.yaml"
    path.write_text(textwrap.dedent(LAYOUT))
    layout = load_layout([path])
    assert layout.pipelines["check"].triggers["forge"] == (TriggerFilter((ev.ChangeOpened,)),)
    path.write_text(LAYOUT.replace("when: opened", "when: closed"))
    with pytest.raises(LayoutError) as info:
        load_layout([path])
    [problem] = info.value.problems
    assert problem.line == 5 and "trigger.forge.0.when" in problem.message
