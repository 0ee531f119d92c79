"""The gate, scenario by scenario, on the pure engine (see tests/gate_harness.py)."""
from __future__ import annotations

from ccci_gate.core import events as ev
from ccci_gate.core.layout import WindowConfig

from gate_harness import Gate, change, gate_layout


def test_one_change_is_tested_then_merged():
    g = Gate()
    g.enqueue(1)
    assert g.prepared == [(1,)]
    g.pass_all(1)
    assert g.merges == [1]
    assert g.verdicts() == [(1, "SUCCESS")]
    assert g.queue() == []


def test_three_changes_run_in_parallel_each_on_the_ones_ahead():
    g = Gate()
    g.enqueue(1, 2, 3)
    assert g.prepared == [(1,), (1, 2), (1, 2, 3)]
    assert {k for k in g.builds} == {(1, "build"), (2, "build"), (3, "build")}
    g.pass_all(3, 2)          # the ones behind finish first: nobody reports yet
    assert g.merges == [] and g.verdicts() == []
    g.pass_all(1)
    assert g.merges == [1, 2, 3]
    assert g.verdicts() == [(1, "SUCCESS"), (2, "SUCCESS"), (3, "SUCCESS")]


def test_failure_at_the_head_resets_the_rest_without_it():
    g = Gate()
    g.enqueue(1, 2, 3)
    g.finish(1, "build", "FAILURE")
    assert g.verdicts() == [(1, "FAILURE")]
    assert g.prepared[-2:] == [(2,), (2, 3)]
    g.run_until_quiet()
    assert g.merges == [2, 3]


def test_failure_in_the_middle_waits_for_the_head_and_those_behind_skip_it():
    g = Gate()
    g.enqueue(1, 2, 3)
    g.finish(2, "build", "FAILURE")
    assert g.prepared[-1] == (1, 3)           # 3 retested at once without 2
    assert g.queue() == [1, 2, 3]             # 2 stays until it reaches the head
    assert g.verdicts() == []
    g.run_until_quiet()
    assert g.verdicts() == [(1, "SUCCESS"), (2, "FAILURE"), (3, "SUCCESS")]
    assert g.merges == [1, 3]


def test_two_failures_nearest_non_failing_item():
    """3 fails while 2 (ahead of it) also fails: 3 is retested without 2, and passes."""
    g = Gate()
    g.enqueue(1, 2, 3, 4)
    g.finish(3, "build", "FAILURE")           # 3 fails on (1, 2, 3)
    assert g.prepared[-1] == (1, 2, 4)
    g.finish(2, "build", "FAILURE")           # then 2 fails too
    assert g.prepared[-2:] == [(1, 3), (1, 3, 4)]  # 3 gets another chance without 2
    g.run_until_quiet()
    assert g.verdicts() == [(1, "SUCCESS"), (2, "FAILURE"), (3, "SUCCESS"), (4, "SUCCESS")]
    assert g.merges == [1, 3, 4]


def test_failure_while_builds_are_still_queued_cancels_them():
    g = Gate()
    g.enqueue(1, 2, 3)
    queued = {g.builds[(2, "build")], g.builds[(3, "build")]}
    g.finish(1, "build", "FAILURE")
    assert queued <= set(g.cancelled)


def test_merge_conflict_in_the_middle_is_reported_and_skipped():
    g = Gate()
    g.conflicts.add(2)
    g.enqueue(1, 2, 3)
    assert (1, 3) in g.prepared
    assert (2, "build") not in g.builds
    g.run_until_quiet()
    assert g.verdicts() == [(1, "SUCCESS"), (2, "MERGE_CONFLICT"), (3, "SUCCESS")]
    assert [r.phase for r in g.reports if r.summary["change"]["number"] == 2] == ["merge-failure"]
    assert g.merges == [1, 3]


def test_new_patchset_dequeues_the_old_item_and_resets_those_behind():
    g = Gate()
    g.enqueue(1, 2, 3)
    g.send(ev.PatchsetCreated("gitea", change(2, sha="sha2b"), authorized=True))
    assert g.queue() == [1, 3]
    assert g.prepared[-1] == (1, 3)
    assert all(n != 2 for n, _ in g.verdicts())  # no failure report for the old patchset


def test_window_shrinks_on_failure_at_the_head_and_grows_on_merge():
    g = Gate(gate_layout(window=WindowConfig(start=4, floor=1, increase=1, decrease_factor=2)))
    g.enqueue(*range(1, 7))
    assert {n for n, _ in g.builds} == {1, 2, 3, 4}   # 5 and 6 wait outside the window
    g.finish(1, "build", "FAILURE")
    assert g.window() == 2
    assert {n for n, _ in g.builds} == {2, 3}
    g.pass_all(2)
    assert g.window() == 3
    status = g.engine.status()["pipelines"][0]["queues"][0]
    assert status["window"] == 3
    assert [i["active"] for i in status["items"]] == [True, True, True, False]


def test_a_refused_merge_is_reported_and_resets_those_built_on_it():
    g = Gate()
    g.refuse[1] = 409
    g.enqueue(1, 2)
    g.pass_all(1)
    assert g.verdicts() == [(1, "MERGE_FAILED")]
    report = g.reports[-1]
    assert report.phase == "merge-failure"
    assert "refused the merge (409)" in report.summary["failing_reason"]
    assert g.prepared[-1] == (2,)
    g.run_until_quiet()
    assert g.merges == [2]


def test_projects_sharing_a_queue_are_gated_together():
    g = Gate(gate_layout(projects=("org/a", "org/b")))
    g.send(ev.EnqueueRequest("gate", change(1, "org/a")))
    g.send(ev.EnqueueRequest("gate", change(2, "org/b")))
    assert g.prepared == [(1,), (1, 2)]


def test_retest_on_merge_reenqueues_each_outstanding_check_once():
    g = Gate(gate_layout(retest=True))
    g.enqueue(10, 11, pipeline="check")
    g.run_until_quiet()
    assert len(g.verdicts("check")) == 2
    runs = len(g.prepared)
    g.enqueue(1)
    g.pass_all(1)                                 # merging 1 moves main
    assert g.queue("check") == [10, 11]
    assert len(g.prepared) == runs + 3            # 1 in the gate, 10 and 11 once each
    g.send(ev.BranchMoved("gitea", change_ref_push(f"tip{g.tip}")))  # the same move
    assert len(g.prepared) == runs + 3            # deduplicated
    g.run_until_quiet()
    assert g.verdicts("check")[-2:] == [(10, "SUCCESS"), (11, "SUCCESS")]


def change_ref_push(tip: str):
    from ccci_gate.core.model import Change
    return Change("org/a", "main", "refs/heads/main", sha=tip)


def test_retrigger_runs_one_job_again_and_keeps_the_rest():
    g = Gate()
    g.enqueue(5, pipeline="check")
    g.finish(5, "build")
    g.finish(5, "test", "FAILURE")
    assert g.verdicts("check") == [(5, "FAILURE")]
    runs = g.build_runs
    g.send(ev.RetriggerRequest("check", change(5).key, "test"))
    assert g.build_runs == runs + 1 and (5, "test") in g.builds and (5, "build") not in g.builds
    g.finish(5, "test")
    assert g.verdicts("check")[-1] == (5, "SUCCESS")
    jobs = {j["name"]: j["result"] for j in g.reports[-1].summary["jobs"]}
    assert jobs == {"build": "SUCCESS", "test": "SUCCESS"}


def test_promote_moves_an_item_to_the_head():
    g = Gate()
    g.enqueue(1, 2, 3)
    g.send(ev.PromoteRequest("gate", change(3).key))
    assert g.queue() == [3, 1, 2]
    assert g.prepared[-3:] == [(3,), (3, 1), (3, 1, 2)]
    g.run_until_quiet()
    assert g.merges == [3, 1, 2]


def test_pause_holds_new_builds_and_resume_starts_them():
    g = Gate()
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(1)
    assert g.builds == {} and g.prepared == []
    g.send(ev.PauseRequest("gate", False))
    assert (1, "build") in g.builds


def test_batching_finds_one_culprit_among_eight_and_merges_the_seven():
    g = Gate(gate_layout(batch=True, jobs=("build",)))
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(*range(1, 9))                           # eight changes queue up
    g.send(ev.PauseRequest("gate", False))
    assert g.prepared == [(1, 2, 3, 4, 5, 6, 7, 8)]   # one run for the whole batch
    g.run_with_culprits({6})
    assert g.merges == [1, 2, 3, 4, 5, 7, 8]
    assert dict(g.verdicts())[6] == "FAILURE"
    culprit = [r for r in g.reports if r.summary["change"]["number"] == 6][0]
    assert "culprit" in culprit.summary["failing_reason"]
    assert {j["name"]: j["result"] for j in culprit.summary["jobs"]} == {"build": "FAILURE"}
    # 1 batch run + 3 bisection probes (log2 8) + 1 run of the two behind the culprit
    assert g.build_runs == 5


def test_batching_with_no_failure_is_one_run_per_batch():
    g = Gate(gate_layout(batch=True, jobs=("build",)))
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(*range(1, 9))
    g.send(ev.PauseRequest("gate", False))
    g.run_with_culprits(())
    assert g.merges == list(range(1, 9)) and g.build_runs == 1
    assert all(v == "SUCCESS" for _, v in g.verdicts())


def test_batching_sets_a_failed_batch_aside_and_keeps_merging_behind_it():
    g = Gate(gate_layout(batch=True, jobs=("build",)))
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(*range(1, 17))                          # sixteen changes queue up
    g.send(ev.PauseRequest("gate", False))
    # two batches of eight, the second stacked on the first
    assert g.prepared == [tuple(range(1, 9)), tuple(range(1, 17))]
    g.finish(8, "build", "FAILURE")                   # #3 breaks the first batch
    # it steps aside to be bisected; the batch stacked on it is cancelled and the lane
    # goes on without it: both run at once
    assert g.prepared[2:] == [(1, 2, 3, 4), tuple(range(9, 17))]
    assert g.cancelled
    gate = g.engine.status()["pipelines"][0]["queues"][0]["items"]
    assert all(i["aside"] for i in gate if i["change"]["number"] <= 8)
    g.run_with_culprits({3})
    assert sorted(g.merges) == [n for n in range(1, 17) if n != 3]
    assert g.merges.index(9) < g.merges.index(1)      # the lane merged while bisecting
    assert dict(g.verdicts())[3] == "FAILURE"         # every merge was a tested combination


def test_batching_bisects_a_merge_conflict_to_its_change():
    g = Gate(gate_layout(batch=True, jobs=("build",)))
    g.conflicts.add(5)
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(*range(1, 9))
    g.send(ev.PauseRequest("gate", False))
    g.run_with_culprits(())
    assert g.merges == [1, 2, 3, 4, 6, 7, 8]
    assert dict(g.verdicts())[5] == "MERGE_CONFLICT"


def test_a_report_after_a_reset_says_only_what_is_true_of_its_buildset():
    g = Gate()
    g.enqueue(1, 2)
    g.finish(1, "build", "FAILURE")                   # 2 is reset: 1 left the queue
    g.run_until_quiet()
    [report] = [r for r in g.reports if r.summary["change"]["number"] == 2]
    assert report.summary["result"] == "SUCCESS"
    assert report.summary["message"] == ""            # not "the items ahead changed"
    assert report.summary["buildset"]["changes"] == ["org/a#2,sha2"]
    assert report.summary["buildset"]["reason"] == "the items ahead changed"
