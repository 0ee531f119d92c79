"""Engine state survives as plain data: a mid-run gate round-trips and carries on."""
from __future__ import annotations

import json

from ccci_gate.core import events as ev
from ccci_gate.core.engine import Engine
from ccci_gate.core.model import ItemState

from gate_harness import Gate, change, gate_layout


def mid_run() -> Gate:
    """A batching gate with a failed batch set aside and bisecting, a lane running on
    without it, and a reported check run (a last run) on the side."""
    g = Gate(gate_layout(batch=True, jobs=("build",), retest=True))
    g.send(ev.EnqueueRequest("check", change(50)))
    g.finish(50, "build")
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(*range(1, 17))
    g.send(ev.PauseRequest("gate", False))
    g.finish(8, "build", "FAILURE")
    g.finish(4, "build", "SUCCESS")   # the first bisection probe passed: 1-4 are fine
    return g


def test_a_mid_run_batching_gate_round_trips_through_plain_data():
    g, twin = mid_run(), mid_run()
    record = g.engine.to_record()
    gate = record["pipelines"]["gate"]
    assert gate["batching"]["groups"] and gate["batching"]["marks"]   # mid-bisection
    states = {i["state"] for q in gate["queues"] for i in q["items"]}
    assert {ItemState.TESTING.value, ItemState.WAITING.value} <= states
    assert record["last_run"]

    restored = Engine.from_record(g.engine.layout, json.loads(json.dumps(record)),
                                  clock=lambda: 0.0)
    assert restored.to_record() == record
    assert restored.status() == g.engine.status()

    g.engine = restored                       # carry on from the record...
    g.run_with_culprits({6})
    twin.run_with_culprits({6})               # ... exactly as if nothing had happened
    assert g.merges == twin.merges and sorted(g.merges) == [n for n in range(1, 17) if n != 6]
    assert g.verdicts() == twin.verdicts() and dict(g.verdicts())[6] == "FAILURE"
    assert g.build_runs == twin.build_runs
    assert g.verdicts("check") == twin.verdicts("check")


def test_a_record_of_another_version_is_refused():
    g = Gate()
    record = {**g.engine.to_record(), "version": 99}
    try:
        Engine.from_record(g.engine.layout, record)
    except ValueError as exc:
        assert "version 99" in str(exc)
    else:
        raise AssertionError("a record of another version was accepted")
