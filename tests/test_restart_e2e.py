"""A gatekeeper restart is a non-event for the changes under test (``doc/operating.md``,
*Restarts*): 30 pull requests across check and gate, the gatekeeper stopped mid-run —
SIGTERM, SIGKILL, SIGKILL with gearmand — and started again on the same state
(``restart_harness.Trial``). All 30 finish with their true verdict, none is reported
twice (one ``pending``, one final status per context; one comment write per pull
request), no status is left ``pending``, every gated change is merged once, no item row
stays open, no job process is left behind. ``bench/restart.py`` runs more trials.
"""
from __future__ import annotations

import signal

import pytest

from restart_harness import Trial


@pytest.mark.parametrize("server,sig", [("embedded", signal.SIGTERM), ("embedded", signal.SIGKILL),
                                        ("gearmand", signal.SIGKILL)],
                         ids=["SIGTERM", "SIGKILL", "SIGKILL-gearmand"])
def test_a_restart_mid_run_loses_nothing_and_reports_each_item_once(tmp_path, request, server, sig):
    binary = request.getfixturevalue("gearmand_bin") if server == "gearmand" else ""
    trial = Trial(tmp_path, server, binary)
    try:
        tally = trial.run(sig)
    finally:
        trial.close()
    assert tally.problems == []
    assert (tally.finished, tally.lost, tally.reported_twice, tally.wrong, tally.orphans,
            tally.merged_twice, tally.open_rows) == (30, 0, 0, 0, 0, 0, 0)
    if sig == signal.SIGTERM:
        assert tally.stop_seconds < 15, f"SIGTERM took {tally.stop_seconds:.1f}s"
