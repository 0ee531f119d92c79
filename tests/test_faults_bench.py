"""Quick variants of ``bench/faults.py``: whole gatekeepers, worker processes, real
Gearman servers; lost, reported twice, wrong verdicts and orphans must all be 0."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "faults_bench", Path(__file__).resolve().parent.parent / "bench" / "faults.py")
faults = importlib.util.module_from_spec(spec)
sys.modules["faults_bench"] = faults   # dataclasses look their module up
spec.loader.exec_module(faults)


def clean(row) -> None:
    assert row.finished == row.trials, row
    assert (row.lost, row.twice, row.wrong, row.orphans) == (0, 0, 0, 0), row


def test_cancel_race_embedded():
    clean(faults.cancel_race("embedded", 40))


def test_worker_sigkill():
    row = faults.worker_sigkill(2)
    clean(row)
    assert "worker tracebacks 0" in row.note and "workspaces left 0" in row.note


@pytest.mark.parametrize("fault", ["cancel_race", "gearmand_restart", "two_servers", "outage"])
def test_gearmand_faults(fault, gearmand_bin):
    row = faults.cancel_race("gearmand", 40) if fault == "cancel_race" else \
        getattr(faults, fault)(4 if fault != "outage" else 2)
    clean(row)
    assert "worker tracebacks 0" in row.note or fault == "cancel_race", row
    if fault == "outage":   # /status.json kept answering with no Gearman server at all
        assert int(row.note.split("slowest ")[1].split(" ms")[0]) < 5000, row


@pytest.mark.parametrize("server", ["embedded", "gearmand"])
def test_gate_resets(server, request):
    """Resets cancel builds while others start: nothing lost, stuck or reported twice, no
    NOT_REGISTERED, no bad change merged, no good change refused at merge."""
    if server == "gearmand":
        request.getfixturevalue("gearmand_bin")
    row = faults.gate_resets(server, 1)
    assert row.finished == row.trials, row
    assert (row.lost, row.twice, row.orphans) == (0, 0, 0), row
    assert row.wrong == 0 and not row.kinds, row
