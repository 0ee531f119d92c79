"""The Gerrit connection against a fake Gerrit speaking real SSH and a checked REST API:
events in over ``gerrit stream-events``, skipping, deduplication, reconnect with backoff
and the catch-up query after a disconnect; reviews out through the outbox."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import paramiko
import pytest

from ccci_gate.core import events as ev
from ccci_gate.core.actions import Report
from ccci_gate.drivers.gerrit.connection import GerritConnection

from e2e_helpers import wait_for
from fake_gerrit import FakeGerrit, key

PROJECT = "demo/app"
SHA1, SHA2, SHA3 = "1" * 40, "2" * 40, "3" * 40


class Events(list):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self.lock:
            self.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self]


@pytest.fixture
def fake():
    f = FakeGerrit()
    yield f
    f.stop()
    assert f.violations == []


def connect(fake: FakeGerrit, tmp: Path, **options) -> tuple[GerritConnection, Events]:
    key_file = tmp / "id_rsa"
    if not key_file.exists():
        key("client").write_private_key_file(str(key_file))
    events = Events()
    conn = GerritConnection("review", {
        "driver": "gerrit", "host": "127.0.0.1", "port": fake.ssh_port, "user": fake.user,
        "key-file": str(key_file), "known-hosts": str(fake.write_known_hosts(tmp / "known_hosts")),
        "url": fake.url, "http-password": fake.password, "reconnect-min": 0.05,
        "reconnect-max": 0.2, **options}, events, tmp / "state")
    conn.start()
    return conn, events


@pytest.fixture
def live(fake, tmp_path):
    conn, events = connect(fake, tmp_path)
    wait_for(lambda: fake.connected() and conn.idle.is_set(), 10, "the stream")
    yield conn, events
    conn.stop()


def settle(conn: GerritConnection) -> None:
    time.sleep(0.2)
    wait_for(conn.idle.is_set, 10, "the event thread")


def test_events_arrive_over_ssh_with_current_approvals(fake, live):
    conn, events = live
    fake.upload(PROJECT, 7, SHA1)
    wait_for(lambda: events, 10, "an event")
    (created,) = events
    assert type(created) is ev.PatchsetCreated and created.connection == "review"
    assert (created.change.key, created.change.ref, created.change.sha) == (
        (PROJECT, 7), "refs/changes/07/7/1", SHA1)
    fake.comment(PROJECT, 7, "bob", votes={"Code-Review": 2})
    fake.comment(PROJECT, 7, "carol", "recheck", votes={"Workflow": 1})
    wait_for(lambda: len(events) == 3, 10, "two comments")
    last = events[-1]
    assert type(last) is ev.CommentAdded and last.comment == "recheck" and last.user == "carol"
    assert sorted(str(v) for v in last.change.approvals) == ["Code-Review+2", "Workflow+1"]
    assert [str(v) for v in last.change.changed] == ["Workflow+1"]


def test_skipped_and_deduplicated(fake, live):
    conn, events = live
    fake.upload(PROJECT, 7, SHA1)
    fake.comment(PROJECT, 7, fake.user, "Build succeeded.", votes={"Verified": 1})  # its own
    fake.publish(dict(fake.published[0]))                                         # a repeat
    fake.publish({"type": "ref-updated", "submitter": {"username": "alice"},
                  "refUpdate": {"oldRev": "0" * 40, "newRev": SHA1, "project": PROJECT,
                                "refName": "refs/changes/07/7/1"}})               # noise
    fake.publish({"type": "not json?"})
    for channel in fake.streams:
        channel.sendall(b"garbage line\n")
    settle(conn)
    assert events.kinds() == ["PatchsetCreated"]


def test_wip_changes_carry_their_state(fake, live):
    conn, events = live
    fake.upload(PROJECT, 8, SHA1, wip=True)
    wait_for(lambda: events, 10, "an event")
    assert events[0].change.wip


def test_nothing_is_missed_across_a_disconnect(fake, live):
    conn, events = live
    fake.upload(PROJECT, 7, SHA1)
    wait_for(lambda: len(events) == 1, 10, "the first patchset")
    fake.down = True
    fake.drop()                                   # the network goes, mid-stream
    wait_for(lambda: not conn.stream.connected.is_set(), 10, "the disconnect")
    fake.upload(PROJECT, 7, SHA2)                 # published to nobody: lost by the stream
    fake.comment(PROJECT, 7, "bob", "recheck")
    fake.upload(PROJECT, 9, SHA3)
    time.sleep(0.5)                               # a few refused reconnects
    assert len(events) == 1
    fake.down = False
    wait_for(lambda: len(events) == 4, 15, "the catch-up")
    settle(conn)
    assert events.kinds() == ["PatchsetCreated", "PatchsetCreated", "CommentAdded", "PatchsetCreated"]
    assert [(e.change.number, e.change.patchset) for e in events] == [(7, "1"), (7, "2"), (7, "2"), (9, "1")]
    assert events[2].comment == "recheck" and events[2].user == "bob"
    assert conn.stream.connects >= 2
    fake.comment(PROJECT, 9, "bob", "recheck")    # the stream works again, no repeats
    wait_for(lambda: len(events) == 5, 10, "a live event")
    settle(conn)
    assert len(events) == 5


def test_a_failed_catch_up_is_retried_from_the_start_of_the_gap(fake, tmp_path):
    conn, events = connect(fake, tmp_path, **{"api-retries": 0})
    try:
        wait_for(lambda: fake.connected(), 10, "the stream")
        fake.upload(PROJECT, 7, SHA1)
        wait_for(lambda: len(events) == 1, 10, "the first patchset")
        fake.down = True
        fake.drop()
        wait_for(lambda: not conn.stream.connected.is_set(), 10, "the disconnect")
        fake.upload(PROJECT, 7, SHA2)             # missed by the stream
        fake.rest_down = True                     # and the catch-up query fails
        fake.down = False
        wait_for(lambda: conn.stream.connects >= 2, 10, "the reconnect")
        time.sleep(1.1)
        fake.comment(PROJECT, 7, "bob", "recheck")     # read live: the cursor moves on
        wait_for(lambda: len(events) == 2, 10, "the live comment")
        fake.rest_down = False
        wait_for(lambda: len(events) == 3, 10, "the retried catch-up")
        settle(conn)
        assert events.kinds() == ["PatchsetCreated", "CommentAdded", "PatchsetCreated"]
        assert events[2].change.sha == SHA2
    finally:
        conn.stop()


def test_a_restart_catches_up_from_its_cursor(fake, tmp_path):
    conn, events = connect(fake, tmp_path)
    wait_for(lambda: fake.connected(), 10, "the stream")
    fake.upload(PROJECT, 7, SHA1)
    wait_for(lambda: events, 10, "an event")
    conn.stop()
    fake.drop()
    fake.comment(PROJECT, 7, "bob", "recheck")
    conn, again = connect(fake, tmp_path)
    try:
        wait_for(lambda: again, 10, "the catch-up")
        settle(conn)
        assert again.kinds() == ["CommentAdded"]
    finally:
        conn.stop()


def test_a_wrong_key_never_streams(fake, tmp_path):
    paramiko.RSAKey.generate(1024).write_private_key_file(str(tmp_path / "id_rsa"))
    conn, events = connect(fake, tmp_path)
    try:
        time.sleep(0.6)
        assert conn.stream.connects == 0 and not fake.connected()
    finally:
        conn.stop()


def test_reviews_go_out_through_the_outbox(fake, live):
    conn, events = live
    fake.upload(PROJECT, 7, SHA1)
    summary = {"change": {"project": PROJECT, "number": 7, "sha": SHA1, "id": "demo/app#7,1"},
               "result": "FAILURE", "status_url": "http://gate/items/x", "failing_reason": "",
               "jobs": [{"name": "build", "result": "SUCCESS", "log_url": "http://gate/logs/1",
                         "duration": 61, "voting": True},
                        {"name": "lint", "result": "FAILURE", "log_url": "http://gate/logs/2",
                         "duration": 3, "voting": False}]}
    conn.reporter.report(Report("x", "check", "failure", {"gerrit": {"Verified": -1}}, summary))
    conn.reporter.report(Report("y", "check", "failure", {"review": {"Bogus": "yes"}}, summary))
    wait_for(lambda: len(fake.reviews) == 2 or fake.violations, 10, "the reviews")
    (_, number, sha, body), (_, _, _, plain) = fake.reviews
    assert (number, sha, body["labels"], body["tag"]) == (7, SHA1, {"Verified": -1}, "autogenerated:ccci-gate")
    assert "- build http://gate/logs/1 : SUCCESS in 1m 01s" in body["message"]
    assert "- lint http://gate/logs/2 : FAILURE in 3s (non-voting)" in body["message"]
    assert "labels" not in plain
    assert conn.store.pending() == 0


def test_the_fake_speaks_ssh_like_gerrit(fake, tmp_path):
    client = paramiko.SSHClient()
    client.load_host_keys(str(fake.write_known_hosts(tmp_path / "known_hosts")))
    client.connect("127.0.0.1", fake.ssh_port, username=fake.user, pkey=key("client"),
                   allow_agent=False, look_for_keys=False)
    try:
        _, out, _ = client.exec_command("gerrit version")
        assert out.read().decode().startswith("gerrit version ")
    finally:
        client.close()
    stranger = paramiko.SSHClient()
    stranger.load_host_keys(str(tmp_path / "known_hosts"))
    with pytest.raises(paramiko.AuthenticationException):
        stranger.connect("127.0.0.1", fake.ssh_port, username="mallory", pkey=key("client"),
                         allow_agent=False, look_for_keys=False)


def test_reconnects_back_off_when_the_stream_is_refused(fake, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ccci_gate.drivers.gerrit")
    fake.stream_refused = "fatal: gerrit stream-events not permitted"
    conn, events = connect(fake, tmp_path, **{"reconnect-min": 0.02, "reconnect-max": 0.16})
    try:
        wait_for(lambda: conn.stream.connects >= 6, 10, "a few attempts")
    finally:
        conn.stop()
    delays = [float(r.getMessage().rsplit(" ", 1)[1].rstrip("s")) for r in caplog.records
              if "reconnecting in" in r.getMessage()]
    assert delays[:5] == [0.02, 0.04, 0.08, 0.16, 0.16]
    assert any("not permitted" in r.getMessage() for r in caplog.records)


def test_a_review_waits_out_an_outage_and_a_restart_and_is_sent_once(fake, tmp_path):
    fake.upload(PROJECT, 7, SHA1)
    conn, _ = connect(fake, tmp_path, **{"api-retries": 0})
    fake.rest_down = True
    summary = {"change": {"project": PROJECT, "number": 7, "sha": SHA1}, "result": "SUCCESS",
               "jobs": [], "status_url": "http://gate/items/x"}
    conn.reporter.report(Report("x", "check", "success", {"gerrit": {"Verified": 1}}, summary))
    wait_for(lambda: conn.store.head() and conn.store.head().attempts, 10, "a failed attempt")
    conn.stop()
    fake.rest_down = False
    conn, _ = connect(fake, tmp_path)
    try:
        wait_for(lambda: fake.reviews, 10, "the review after the restart")
        wait_for(lambda: conn.store.pending() == 0, 10, "the outbox to drain")
        time.sleep(0.3)
        assert [body["labels"] for *_, body in fake.reviews] == [{"Verified": 1}]
    finally:
        conn.stop()


def test_a_requeued_patchset_is_emitted_once_and_does_not_move_the_cursor(fake, live):
    from ccci_gate.drivers.gerrit.api import ChangeInfo
    conn, events = live
    fake.upload(PROJECT, 7, SHA1)
    wait_for(lambda: events, 10, "an event")
    settle(conn)
    cursor = conn.store.cursor("stream")
    time.sleep(1.1)
    fake.changes[(PROJECT, 7)].revisions.append((SHA2, time.time(), "alice"))  # not streamed
    info = ChangeInfo(PROJECT, "main", 7, "NEW", SHA2, 2, "refs/changes/07/7/2", ())
    conn.requeue(info)
    conn.requeue(info)
    settle(conn)
    assert events.kinds() == ["PatchsetCreated", "PatchsetCreated"]
    assert events[1].change.sha == SHA2 and conn.store.cursor("stream") == cursor


def test_comments_on_an_old_patchset_or_a_closed_change_do_not_trigger(fake, live):
    conn, events = live
    fake.upload(PROJECT, 7, SHA1)
    fake.comment(PROJECT, 7, "bob", "recheck")
    wait_for(lambda: len(events) == 2, 10, "two events")
    old_comment = dict(fake.published[-1])
    fake.upload(PROJECT, 7, SHA2)
    wait_for(lambda: len(events) == 3, 10, "the new patchset")
    old_comment["eventCreatedOn"] += 1
    fake.publish(old_comment)                     # recheck on patchset 1, now outdated
    fake.changes[(PROJECT, 7)].status = "ABANDONED"
    fake.comment(PROJECT, 7, "bob", "recheck")    # on a change closed since
    settle(conn)
    assert events.kinds() == ["PatchsetCreated", "CommentAdded", "PatchsetCreated"]


def test_the_stream_socket_probes_a_silent_peer(fake, tmp_path):
    import socket
    conn, _ = connect(fake, tmp_path, keepalive=9)
    try:
        wait_for(lambda: conn.stream.connected.is_set(), 10, "the stream")
        sock = conn.stream._client.get_transport().sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 9
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
    finally:
        conn.stop()
