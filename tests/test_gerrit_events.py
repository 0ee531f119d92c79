"""Every real Gerrit stream-events line in tests/fixtures/conformance/gerrit through the driver's
parser, translation and layout filters (field-type drift, every kind, noise, WIP,
approvals with ``oldValue`` semantics, requirements)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import voluptuous as v

from ccci_gate.config.loader import load_layout
from ccci_gate.core import events as ev
from ccci_gate.core.triggers import pipeline_accepts
from ccci_gate.drivers.gerrit import events as ge
from ccci_gate.drivers.gerrit.approvals import GerritChange, meets, requirement, unmet
from ccci_gate.drivers.gerrit.translate import branch_moved, core_event
from ccci_gate.drivers.gerrit.triggers import FILTER, filters

FIXTURES = Path(__file__).with_name("fixtures") / "conformance" / "gerrit"


def line(name: str) -> str:
    return (FIXTURES / name).read_text()


def event(name: str, **changes) -> ge.GerritEvent:
    data = json.loads(line(name))
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return ge.parse(json.dumps(data))


# file → (kind, project, branch, number, patchset, user, ref)
EXPECTED = {
    "patchset-created.json": ("patchset-created", "openstack/nova", "master", 3033, 1,
                              "some.author", "refs/changes/33/3033/1"),
    "patchset-created_gerrit3.json": ("patchset-created", "snix", "canon", 30525, 1, "flokli",
                                      "refs/changes/25/30525/1"),
    "comment-added.json": ("comment-added", "depot", "master", 244, 3, "tazjin",
                           "refs/changes/44/244/3"),
    "comment-added_ci-bot.json": ("comment-added", "openstack/nova", "master", 3033, 1, "jenkins",
                                  "refs/changes/33/3033/1"),
    "change-merged.json": ("change-merged", "test", "master", 1, 1, "fbar", "refs/changes/1/1/1"),
    "change-merged_webhooks-plugin.json": ("change-merged", "TestRepo", "test_branch", 1, 2, "admin",
                                           "refs/changes/01/1/2"),
    "ref-updated.json": ("ref-updated", "TestRepo", "test_branch", None, None, "admin",
                         "refs/heads/test_branch"),
    "ref-updated_branch-deleted.json": ("ref-updated", "TestRepo", "test_branch", None, None, "admin",
                                        "refs/heads/test_branch"),
    "ref-updated_changes-ref.json": ("ref-updated", "openstack/nova", "", None, None, "some.author",
                                     "refs/changes/33/3033/1"),
}


def test_every_fixture_is_covered():
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_extracts_the_facts(name):
    got = ge.parse(line(name))
    assert (got.kind, got.project, got.branch, got.number, got.patchset, got.user, got.ref) == EXPECTED[name]


def test_numbers_as_strings_and_the_webhooks_plugin_shapes():
    old = ge.parse(line("change-merged.json"))             # "number": "1"
    assert (old.number, old.patchset, old.change_id) == (1, 1, "I" + "f" * 40)
    hook = ge.parse(line("change-merged_webhooks-plugin.json"))   # project {name}, changeKey {key}
    assert (hook.project, hook.new_rev) == ("TestRepo", "4c688da535ea3352536e3b320880aa353bd404b2")
    assert hook.change_id == "I55862204ef71f69bc88c79fe2259f7cb8365699a"
    data = json.loads(line("comment-added.json"))
    del data["change"]["project"]                           # any field may be missing
    assert ge.from_json(data).project == "depot"


def test_votes_changed_only_with_an_old_value():
    review = ge.parse(line("comment-added.json"))
    assert [str(v) for v in review.votes] == ["Code-Review+2"]
    assert review.changed_votes == review.votes and review.votes[0].by == "tazjin"
    bot = ge.parse(line("comment-added_ci-bot.json"))
    assert [str(v) for v in bot.votes] == ["Verified+0", "Code-Review+0", "Workflow+0"]
    assert bot.changed_votes == ()


def test_comment_text_drops_the_patch_set_line():
    assert ge.comment_text("Patch Set 3: Code-Review+2") == ""
    assert ge.comment_text("Patch Set 1:\n\nrecheck") == "recheck"
    assert ge.comment_text("recheck") == "recheck"


def test_noise_and_bad_lines():
    assert ge.noise(ge.parse(line("ref-updated_changes-ref.json")))
    assert "deleted" in ge.noise(ge.parse(line("ref-updated_branch-deleted.json")))
    assert ge.noise(ge.parse(line("ref-updated.json"))) == ""
    assert ge.noise(event("ref-updated.json", refUpdate__refName="refs/meta/config"))
    assert ge.noise(event("ref-updated.json", refUpdate__refName="refs/users/01/1000001"))
    assert ge.noise(ge.parse('{"type": "reviewer-added", "change": {"project": "p", "number": 1}}'))
    for bad in ("not json", "[]", '{"no": "type"}', '{"type": "patchset-created"}',
                '{"type": "comment-added", "change": {"project": "p"}}'):
        with pytest.raises(ge.EventError):
            ge.parse(bad)


def test_keys_deduplicate_the_same_happening():
    a, b = ge.parse(line("patchset-created.json")), ge.parse(line("patchset-created.json"))
    assert a.key == b.key
    assert a.key != event("patchset-created.json", patchSet__number=2).key
    merged = ge.parse(line("change-merged_webhooks-plugin.json"))
    moved = branch_moved(merged)
    assert moved is not None and moved.key == event(
        "ref-updated.json", refUpdate__newRev=merged.new_rev, refUpdate__project="TestRepo").key
    assert branch_moved(ge.parse(line("change-merged.json"))) is None   # zero newRev: unknown


def test_translation_to_core_events():
    ps = core_event(ge.parse(line("patchset-created.json")), "review")
    assert type(ps) is ev.PatchsetCreated and isinstance(ps.change, GerritChange)
    assert (ps.change.key, ps.change.ref, ps.change.patchset, ps.connection) == (
        ("openstack/nova", 3033), "refs/changes/33/3033/1", "1", "review")
    assert ps.change.sha == "9108f306de1364fa9f6f510b189b3de1c2a31365"
    kinds = {"comment-added.json": ev.CommentAdded, "change-merged.json": ev.ChangeMerged,
             "ref-updated.json": ev.BranchCreated}
    for name, cls in kinds.items():
        assert type(core_event(ge.parse(line(name)), "review")) is cls
    moved = core_event(event("ref-updated.json", refUpdate__oldRev="a" * 40), "review")
    assert type(moved) is ev.BranchMoved and moved.change.oldrev == "a" * 40
    abandoned = core_event(event("patchset-created.json", type="change-abandoned"), "review")
    restored = core_event(event("patchset-created.json", type="change-restored"), "review")
    assert (type(abandoned), type(restored)) == (ev.ChangeClosed, ev.ChangeReopened)
    assert core_event(event("patchset-created.json", type="topic-changed"), "review") is None


def test_requirements():
    votes = ge.parse(line("comment-added.json")).votes
    assert meets(votes, [requirement({"Code-Review": 2})])
    assert not meets(votes, [requirement({"Code-Review": 2, "Workflow": 1})])
    assert meets(votes, [requirement({"Code-Review": [1, "2"], "username": "taz.*"})])
    assert not meets(votes, [requirement({"Code-Review": 2, "username": "other"})])
    assert not meets(votes, reject=[requirement({"Code-Review": [2]})])
    assert unmet(votes, [requirement({"Workflow": 1})]) == "missing Workflow+1"
    for bad in ({}, {"username": "x"}, {"Verified": "yes"}, {"Verified": True}, "Verified"):
        with pytest.raises(v.Invalid):
            requirement(bad)


def _accepts(flt: dict, event: ev.TriggerEvent) -> bool:
    return pipeline_accepts({"gerrit": filters([FILTER(flt)])}, event)


def test_filters_match_on_kind_comment_approval_and_skip_wip():
    review = core_event(ge.parse(line("comment-added.json")), "r")
    assert _accepts({"event": "comment-added", "approval": {"Code-Review": 2}}, review)
    assert not _accepts({"event": "comment-added", "approval": {"Workflow": 1}}, review)
    assert not _accepts({"event": "patchset-created"}, review)
    bot = core_event(ge.parse(line("comment-added_ci-bot.json")), "r")
    assert _accepts({"event": "comment-added", "comment": "^Build Started"}, bot)
    assert not _accepts({"event": "comment-added", "approval": {"Verified": 0}}, bot)  # unchanged
    wip = core_event(ge.parse(line("patchset-created_gerrit3.json")), "r")
    assert not _accepts({"event": "patchset-created"}, wip)
    assert _accepts({"event": "patchset-created", "wip": True}, wip)
    private = core_event(event("patchset-created.json", change__private=True), "r")
    assert not _accepts({"event": "patchset-created"}, private)
    gate = {"event": "comment-added", "require-approval": [{"Code-Review": 2}],
            "reject-approval": [{"Verified": -1}]}
    assert _accepts(gate, review)
    vetoed = core_event(ge.parse(line("comment-added.json")), "r",
                        approvals=review.change.approvals + (ge.Vote("Verified", -1, "alice"),))
    assert not _accepts(gate, vetoed)
    branch = core_event(ge.parse(line("ref-updated.json")), "r")
    assert _accepts({"event": "ref-updated", "ref": "refs/heads/.*"}, branch)


def test_username_is_an_allow_list_of_who_may_trigger():
    review = core_event(ge.parse(line("comment-added.json")), "r")          # by tazjin
    bot = core_event(ge.parse(line("comment-added_ci-bot.json")), "r")      # by jenkins
    allow = {"event": "comment-added", "username": ["^(tazjin|alice)$"]}
    assert _accepts(allow, review) and not _accepts(allow, bot)
    no_bots = {"event": "comment-added", "username": "^(?!jenkins$).*"}
    assert _accepts(no_bots, review) and not _accepts(no_bots, bot)
    assert not _accepts({"event": "comment-added", "username": "tazji"}, review)   # full match
    with pytest.raises(v.Invalid):
        FILTER({"event": "comment-added", "username": "("})


def test_layout_with_gerrit_triggers_loads(tmp_path):
    (tmp_path / "l.yaml").write_text(textwrap.dedent("""
        pipelines:
          - name: gate
            manager: dependent
            trigger:
              gerrit:
                - event: comment-added
                  approval: [{Workflow: 1}]
                  require-approval: [{Code-Review: 2}, {Workflow: 1}]
                  reject-approval: [{Verified: [-1, -2], username: '^(?!ci-bot$).*'}]
    """))
    layout = load_layout([tmp_path])
    (flt,) = layout.pipelines["gate"].triggers["gerrit"]
    assert flt.require == ({"Code-Review": [2]}, {"Workflow": [1]})
    (tmp_path / "l.yaml").write_text("pipelines:\n  - name: p\n    trigger:\n      gerrit:\n"
                                     "        - event: patchset-updated\n")
    with pytest.raises(Exception, match="event must be one of"):
        load_layout([tmp_path])


def test_catch_up_reads_a_change_like_the_stream_would():
    from ccci_gate.drivers.gerrit.catchup import events_of, gerrit_time, query_since, votes_in
    assert gerrit_time("2013-02-21 11:16:36.775000000") == 1361445396
    assert query_since(1361445396) == 'since:"2013-02-21 11:16:36"'
    assert [str(v) for v in votes_in("Patch Set 2: Code-Review+2 Workflow+1\n\nship it", "bob")] == \
        ["Code-Review+2", "Workflow+1"]
    assert all(v.changed for v in votes_in("Patch Set 2: Code-Review-1", "bob"))
    assert votes_in("recheck", "bob") == ()
    sha = "a" * 40
    data = {"project": "p", "branch": "main", "_number": 5, "status": "NEW", "change_id": "I1",
            "updated": "2026-01-01 00:00:09.0", "current_revision": sha,
            "revisions": {sha: {"_number": 2, "ref": "refs/changes/05/5/2",
                                "created": "2026-01-01 00:00:05.0", "uploader": {"username": "al"}}},
            "labels": {"Code-Review": {"all": [{"value": 2, "username": "bob"}, {"value": 0}]}},
            "messages": [
                {"author": {"username": "gerrit"}, "date": "2026-01-01 00:00:05.0",
                 "message": "Uploaded patch set 2.", "tag": "autogenerated:gerrit:newPatchSet",
                 "_revision_number": 2},
                {"author": {"username": "bob"}, "date": "2026-01-01 00:00:09.0",
                 "message": "Patch Set 2: Code-Review+2\n\nrecheck", "_revision_number": 2},
                {"author": {"username": "old"}, "date": "2025-12-31 00:00:00.0",
                 "message": "Patch Set 1:\n\nrecheck", "_revision_number": 1}]}
    since = gerrit_time("2026-01-01 00:00:00")
    found = events_of(data, since)
    assert [(e.kind, e.patchset, e.user) for e in found] == [
        ("patchset-created", 2, "al"), ("comment-added", 2, "bob")]
    assert found[1].key == ge.GerritEvent("comment-added", "p", number=5, patchset=2, user="bob",
                                          comment="Patch Set 2: Code-Review+2\n\nrecheck",
                                          created_on=found[1].created_on).key
    event = core_event(found[1], "r")
    assert event.comment == "recheck" and [str(v) for v in event.change.changed] == ["Code-Review+2"]
    assert events_of(data, gerrit_time("2026-01-01 00:00:10")) == []
    data["status"] = "MERGED"
    assert [e.kind for e in events_of(data, since)] == ["comment-added", "change-merged"]


    class Stub:
        def query(self, q):
            assert q == query_since(since)
            return [{"project": "broken"}, data]
    from ccci_gate.drivers.gerrit.catchup import missed
    assert [e.kind for e in missed(Stub(), since)] == ["comment-added", "change-merged"]


def test_review_messages_and_votes():
    from ccci_gate.core.actions import Report
    from ccci_gate.drivers.gerrit.reporter import GerritReporter, message
    summary = {"change": {"project": "p", "number": 5, "sha": "a" * 40}, "status_url": "http://g/i",
               "result": "MERGE_FAILED", "failing_reason": "the source refused the merge (409): no",
               "jobs": [{"name": "build", "result": "SUCCESS", "log_url": "", "duration": None}]}
    start = Report("i", "gate", "start", {"gerrit": {}}, summary)
    assert message(start) == "Starting gate jobs: build.\n\nhttp://g/i\n"
    text = message(Report("i", "gate", "merge-failure", {}, summary))
    assert text.startswith("Build passed, but Gerrit refused the submit (gate pipeline).")
    assert "(409): no" in text and "- build : SUCCESS" in text
    reporter = GerritReporter("review", store=None, wake=None)  # type: ignore[arg-type]
    body = reporter.review(Report("i", "gate", "success",
                                  {"review": {"Verified": 2, "notify": "OWNER", "Bad": True}}, summary))
    assert body["labels"] == {"Verified": 2} and body["notify"] == "OWNER"
    assert reporter.review(Report("i", "gate", "success", {}, {"change": {"project": "p"}})) is None


def test_a_report_made_again_after_a_restart_is_queued_once(tmp_path):
    import threading
    from ccci_gate.core.actions import Report
    from ccci_gate.drivers.gerrit.reporter import GerritReporter
    from ccci_gate.drivers.outbox import OutboxStore
    summary = {"change": {"project": "p", "number": 5, "sha": "a" * 40}, "result": "SUCCESS",
               "status_url": "http://g/i", "jobs": []}
    action = Report("i", "check", "success", {"gerrit": {"Verified": 1}}, summary)
    GerritReporter("review", OutboxStore(tmp_path / "o.db"), threading.Event()).report(action)
    # a new process on the same store (the scheduler had not recorded the report)
    store = OutboxStore(tmp_path / "o.db")
    GerritReporter("review", store, threading.Event()).report(action)
    assert store.pending() == 1
    GerritReporter("review", store, threading.Event()).report(
        Report("i", "check", "start", {"gerrit": {}}, summary))
    assert store.pending() == 2


def test_requirements_are_checked_again_before_a_merge():
    from ccci_gate.core.triggers import TriggerFilter
    from ccci_gate.drivers.gerrit.triggers import still_unmet
    gate = filters([FILTER({"event": "comment-added", "require-approval": [{"Code-Review": 2}],
                            "reject-approval": [{"Verified": -1}]})])
    ok = (ge.Vote("Code-Review", 2, "bob"),)
    assert still_unmet(gate, ok) == ""
    assert still_unmet(gate, ok + (ge.Vote("Verified", -1, "dave"),)) == "rejected by Verified-1"
    assert still_unmet(gate, ()) == "missing Code-Review+2"
    assert still_unmet(gate + filters([FILTER({"event": "patchset-created"})]), ()) == ""
    assert still_unmet((TriggerFilter(),), ()) == ""


def test_queries_read_every_page():
    from ccci_gate.drivers.gerrit.api import GerritAPI
    api = GerritAPI("http://gerrit.invalid", "u", "p")
    asked = []

    def call(method, where, body=None, params=None, retries=None):
        start = int(dict(params)["S"])
        asked.append(start)
        return [{"_number": n, **({"_more_changes": True} if n == start + 1 and n < 5 else {})}
                for n in range(start, start + 2)]
    api.call = call  # type: ignore[method-assign]
    assert [c["_number"] for c in api.query("status:open", page=2)] == [0, 1, 2, 3, 4, 5]
    assert asked == [0, 2, 4]


def test_username_cannot_be_met_by_a_display_name_or_an_email():
    """Review: the event's user fell back to the account's email, then to its display
    name (which every account sets freely), when it had no username: an account without
    one, named "tazjin", passed ``username: ['^(tazjin|alice)$']``, and one named like
    the connection's own user had its comments taken for the gatekeeper's. Like Zuul,
    ``username`` matches the username only, and the catch-up path already did."""
    allow = {"event": "comment-added", "username": ["^(tazjin|alice)$"]}
    named = core_event(event("comment-added.json",
                             author={"name": "tazjin", "email": "tazjin"}), "r")
    assert named.user == ""
    assert not _accepts(allow, named)
    assert _accepts(allow, core_event(ge.parse(line("comment-added.json")), "r"))
    # a vote's voter too: a requirement's username is not met by a display name
    voted = event("comment-added.json", author={"name": "tazjin"},
                  approvals=[{"type": "Code-Review", "value": "2",
                              "by": {"name": "tazjin", "email": "tazjin@evil.example"}}])
    assert [vote.by for vote in voted.votes] == [""]
    assert not meets(voted.votes, [requirement({"Code-Review": 2, "username": "taz.*"})])
