"""Reports are written once across restarts: the engine may repeat a report it made just
before a crash (it resumes from the last batch saved), and a write may have reached Gitea
just before the process died. Neither reaches Gitea twice."""
from __future__ import annotations

import threading

from ccci_gate.core.actions import Report
from ccci_gate.drivers.gitea.api import GiteaAPI
from ccci_gate.drivers.gitea.reporter import GiteaReporter, Outbox, load_template
from ccci_gate.drivers.gitea.store import GiteaStore

from ccci_gate.core import events as ev

from fake_gitea import FakeGitea
from gate_harness import Gate, change, gate_layout

REPO, SHA = "example/example", "a" * 40


def summary(result=None):
    """A real item summary of #2 in check (one job), with ``result``."""
    g = Gate(gate_layout(projects=(REPO,), jobs=("build",)))
    g.send(ev.EnqueueRequest("check", change(2, REPO, SHA)))
    [item] = g.engine.managers["check"].items
    if result:
        g.finish(2, "build", result)
        return g.reports[-1].summary
    return g.engine.summary(item)


def world(tmp_path):
    fake = FakeGitea().start()
    store = GiteaStore(tmp_path / "gitea.sqlite")
    wake = threading.Event()
    reporter = GiteaReporter(store, load_template(), wake)
    outbox = Outbox(GiteaAPI(fake.url, fake.token, retries=0), store, wake)
    return fake, store, reporter, outbox


def drain(outbox: Outbox) -> None:
    while outbox.flush_one():
        pass


def test_a_report_repeated_after_a_restart_is_not_queued_again(tmp_path):
    fake, store, reporter, outbox = world(tmp_path)
    try:
        for _ in range(2):      # the restored engine reports the item again
            reporter.report(Report("i1", "check", "start", {"gitea": {}}, summary()))
            reporter.report(Report("i1", "check", "success", {"gitea": {}}, summary("SUCCESS")))
        drain(outbox)
        states = [b["state"] for _r, _s, b in fake.statuses]
        assert states.count("pending") == 2 and states.count("success") == 2   # item + job
        assert len(fake.gate_comments(REPO, 2)) == 1
        assert fake.violations == []
    finally:
        fake.stop()


def test_writes_that_reached_gitea_before_the_crash_are_not_sent_again(tmp_path):
    fake, store, reporter, outbox = world(tmp_path)
    try:
        reporter.report(Report("i1", "check", "success", {"gitea": {}}, summary("SUCCESS")))
        # the previous process sent every write, then died before noting any as sent
        while (out := store.head()) is not None and not out.inflight:
            store.sending(out.id)
            outbox._send(out)
            store.sent(out.id)
            store._run("INSERT INTO outbox (kind, repo, target, body, inflight) VALUES (?,?,?,?,1)",
                       (out.kind, out.repo, out.target, __import__("json").dumps(out.body)))
        sent = len(fake.requests)
        store.set_comment_id(REPO, "2/check", None)   # its id was not kept either
        drain(outbox)
        writes = [r for r in fake.requests[sent:] if r.method in ("POST", "PATCH")]
        assert writes == [] and store.pending() == 0
        assert len(fake.gate_comments(REPO, 2)) == 1
        assert store.comment_id(REPO, "2/check") is not None   # adopted: edited next time
        assert fake.violations == []
    finally:
        fake.stop()


def test_an_inflight_write_that_did_not_arrive_is_sent(tmp_path):
    fake, store, reporter, outbox = world(tmp_path)
    try:
        reporter.report(Report("i1", "check", "success", {"gitea": {}}, summary("SUCCESS")))
        out = store.head()
        store.sending(out.id)                          # died before the request left
        drain(outbox)
        assert [b["state"] for _r, _s, b in fake.statuses] == ["success", "success"]
        assert len(fake.gate_comments(REPO, 2)) == 1
    finally:
        fake.stop()


def test_a_merge_asked_again_after_a_restart_is_a_merge(tmp_path):
    """The previous process asked Gitea to merge and died before hearing back; the
    restarted gate asks again, Gitea answers 405 (already merged), and the item is merged
    — not reported MERGE_FAILED. A pull request merged at another head is refused."""
    from ccci_gate.core.actions import MergeChange
    from ccci_gate.core.events import ItemMerged, MergeRefused
    from ccci_gate.drivers.gitea.source import GiteaSource

    fake = FakeGitea().start()
    try:
        fake.add_pull(REPO, 2, SHA)
        events: list = []
        source = GiteaSource(GiteaAPI(fake.url, fake.token, retries=0), events.append)
        pr = change(2, REPO, SHA)
        for _ in range(2):                      # before the crash, and after the restart
            source._merge(MergeChange("i1", pr, SHA, branch="main"))
        assert [type(e) for e in events] == [ItemMerged, ItemMerged]
        assert len(fake.merges) == 1 and fake.violations == []
        source._merge(MergeChange("i2", pr, "b" * 40, branch="main"))   # another head
        assert isinstance(events[-1], MergeRefused) and events[-1].status == 405
    finally:
        fake.stop()
