"""Logs at rest (``logstore.py``) and served (``web/logs.py``): compressed once finished,
atomically, ranges on the text of a running or finished log, gzip as stored, 410 once
expired. A real listener, real files, SQLite."""
from __future__ import annotations

import gzip
import os
import threading
import time
import uuid

import pytest
import requests

from ccci_gate.logstore import LogStore, gz_size
from ccci_gate.web.logs import accepts_gzip, parse_range

from log_helpers import item_summary, serve_logs

TEXT = "".join(f"line {i:04d} ünïcode\n" for i in range(2000)).encode()


@pytest.fixture
def served(tmp_path):
    web, logs, store = serve_logs(tmp_path)
    yield web, logs, store
    web.shutdown()
    store.close()


def test_finish_compresses_atomically_and_a_reader_of_the_plain_file_reads_on(tmp_path):
    logs = LogStore(tmp_path)
    build = uuid.uuid4().hex
    logs.append(build, TEXT.decode()[:500])
    logs.append(build, TEXT.decode()[500:])
    assert logs.state(build) == "running" and logs.size(build) == len(TEXT)
    reader = open(logs.plain(build), "rb")
    head = reader.read(100)
    assert logs.finish(build) is True
    assert not logs.plain(build).exists() and logs.packed(build).exists()
    assert not list(tmp_path.glob(".*")), "no temporary file left"
    assert head + reader.read() == TEXT   # the open plain file outlives its removal
    reader.close()
    assert gzip.decompress(logs.packed(build).read_bytes()) == TEXT
    assert logs.state(build) == "finished" and logs.size(build) == gz_size(logs.packed(build))
    assert logs.read(build, 10, 20) == TEXT[10:20] and logs.read(build) == TEXT
    assert logs.finish(build) is False   # nothing left to finish
    # a chunk after the finish (a requeued build) reopens the log whole
    logs.append(build, "more\n")
    logs.drain()   # the reopen runs on the store's thread
    assert logs.state(build) == "running" and logs.read(build) == TEXT + b"more\n"
    assert not logs.packed(build).exists()


def test_two_finishes_of_one_log_at_once_never_show_a_truncated_log(tmp_path, monkeypatch):
    """The compress thread and the retention janitor may finish one log at once: each
    writes its own temporary file, so the one that loses never truncates the gzip the
    winner has just published."""
    from ccci_gate import logstore
    logs = LogStore(tmp_path)
    build = uuid.uuid4().hex
    logs.append(build, TEXT.decode())
    real, calls = logstore.seekgz.write, []
    second_opened, release = threading.Event(), threading.Event()

    def write(src, size, dst):
        calls.append(dst)
        if len(calls) == 1:      # the first has written it all; wait until the second opened
            real(src, size, dst)
            dst.flush()
            assert second_opened.wait(10)
        else:                    # the second opened its temporary file: hold it there
            second_opened.set()
            assert release.wait(10)
            real(src, size, dst)
    monkeypatch.setattr(logstore.seekgz, "write", write)
    results: dict[str, bool] = {}
    first = threading.Thread(target=lambda: results.update(first=logs.finish(build)))
    first.start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=lambda: results.update(second=logs.finish(build)))
    second.start()
    first.join(10)
    assert results.get("first") is True
    assert gzip.decompress(logs.packed(build).read_bytes()) == TEXT, "the published log is whole"
    release.set()
    second.join(10)
    assert results.get("second") is False and logs.read(build) == TEXT
    assert not list(tmp_path.glob(".*")), "no temporary file left"


def test_finish_later_runs_off_the_callers_thread(tmp_path):
    logs = LogStore(tmp_path)
    build = uuid.uuid4().hex
    logs.append(build, "x\n")
    caller = threading.get_ident()
    seen = []
    original = logs.finish
    logs.finish = lambda b: seen.append(threading.get_ident()) or original(b)
    logs.finish_later(build)
    logs.drain()
    assert seen and seen[0] != caller and logs.state(build) == "finished"
    logs.close()


def test_range_and_encoding_parsing():
    assert parse_range("bytes=0-9", 100) == (0, 10)
    assert parse_range("bytes=90-", 100) == (90, 100)
    assert parse_range("bytes=-10", 100) == (90, 100)
    assert parse_range("bytes=-500", 100) == (0, 100)
    assert parse_range("bytes=50-5000", 100) == (50, 100)
    assert parse_range("bytes=100-", 100) == "unsatisfiable"
    assert parse_range("bytes=-0", 100) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    for ignored in ("", "bytes=5-1", "bytes=0-1,5-6", "lines=1-2", "bytes=-", "bytes=a-b"):
        assert parse_range(ignored, 100) is None, ignored
    assert accepts_gzip("gzip, deflate") and accepts_gzip("br;q=1, gzip;q=0.5")
    assert not accepts_gzip("identity") and not accepts_gzip("gzip;q=0") and not accepts_gzip("")


def test_a_finished_log_is_served_gzip_as_stored_or_plain_with_ranges(served):
    web, logs, store = served
    build = uuid.uuid4().hex
    store.save_items([item_summary([{"id": build}])], finished=True)
    logs.append(build, TEXT.decode())
    logs.finish(build)
    url = f"{web.url}/logs/{build}"
    raw = requests.get(url, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
    assert raw.status_code == 200 and raw.headers["Content-Encoding"] == "gzip"
    assert raw.headers["X-Log-State"] == "finished" and raw.headers["Accept-Ranges"] == "bytes"
    assert raw.raw.read() == logs.packed(build).read_bytes()   # the stored bytes, as stored
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    assert plain.content == TEXT
    part = requests.get(url, headers={"Range": "bytes=100-199", "Accept-Encoding": "gzip"},
                        timeout=10)
    assert part.status_code == 206 and part.content == TEXT[100:200]
    assert "Content-Encoding" not in part.headers   # ranges are on the text
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(TEXT)}"
    tail = requests.get(url, headers={"Range": "bytes=-50"}, timeout=10)
    assert tail.status_code == 206 and tail.content == TEXT[-50:]
    assert tail.headers["Content-Range"] == f"bytes {len(TEXT) - 50}-{len(TEXT) - 1}/{len(TEXT)}"
    rest = requests.get(url, headers={"Range": f"bytes={len(TEXT) - 7}-"}, timeout=10)
    assert rest.status_code == 206 and rest.content == TEXT[-7:]
    past = requests.get(url, headers={"Range": f"bytes={len(TEXT)}-"}, timeout=10)
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(TEXT)}"
    many = requests.get(url, headers={"Range": "bytes=0-1,5-6"}, timeout=10)
    assert many.status_code == 200 and many.content == TEXT


def test_a_running_log_serves_ranges_as_it_grows(served):
    web, logs, store = served
    build = uuid.uuid4().hex
    store.save_items([item_summary([{"id": build, "state": "RUNNING", "result": None}],
                                   state="TESTING", result=None)])
    url = f"{web.url}/logs/{build}"
    empty = requests.get(url, headers={"Range": "bytes=0-"}, timeout=10)
    assert empty.status_code == 416 and empty.headers["X-Log-State"] == "running"
    assert requests.get(url, timeout=10).content == b""
    logs.append(build, "first\n")
    first = requests.get(url, headers={"Range": "bytes=0-"}, timeout=10)
    assert first.status_code == 206 and first.content == b"first\n"
    assert first.headers["Content-Range"] == "bytes 0-5/6"
    assert requests.get(url, headers={"Range": "bytes=6-"}, timeout=10).status_code == 416
    logs.append(build, "second\n")
    second = requests.get(url, headers={"Range": "bytes=6-"}, timeout=10)
    assert second.status_code == 206 and second.content == b"second\n"
    assert second.headers["X-Log-State"] == "running"


def test_unknown_and_expired_logs(served):
    web, logs, store = served
    assert requests.get(f"{web.url}/logs/{uuid.uuid4().hex}", timeout=10).status_code == 404
    assert requests.get(f"{web.url}/logs/..%2f..%2fetc%2fpasswd", timeout=10).status_code == 404
    build = uuid.uuid4().hex
    store.save_items([item_summary([{"id": build}])], finished=True)
    logs.append(build, "x\n")
    logs.finish(build)
    logs.remove(build)
    store.expire_logs([build], "older than 30d")
    gone = requests.get(f"{web.url}/logs/{build}", timeout=10)
    assert gone.status_code == 410
    assert "expired" in gone.json()["error"] and "older than 30d" in gone.json()["error"]
    record = requests.get(f"{web.url}/builds/{build}.json", timeout=10).json()
    assert record["log"]["state"] == "expired" and record["log"]["reason"] == "older than 30d"


def test_no_chunk_is_lost_when_appends_race_finishes(tmp_path):
    """Appends (gear's poll thread) racing finishes (the compressing thread, a late chunk
    reopening the log): the text at the end is every chunk, once, in order."""
    logs = LogStore(tmp_path)
    build = uuid.uuid4().hex
    lines = [f"chunk {i} {'x' * (i % 97)}\n" for i in range(4000)]
    def write() -> None:
        for i, line in enumerate(lines):
            logs.append(build, line)
            if i % 100 == 99:
                time.sleep(0.005)   # bursts, as workers flush: finishes land in between too
    writer = threading.Thread(target=write)
    writer.start()
    finishes = 0
    while writer.is_alive():
        finishes += logs.finish(build)
    writer.join()
    logs.drain()   # reopens still queued
    logs.finish(build)
    assert finishes > 0, "the race was run"
    assert logs.read(build) == "".join(lines).encode()
    assert logs.state(build) == "finished" and not list(tmp_path.glob(".*"))


def test_the_length_of_a_big_finished_log_is_exact(tmp_path):
    """Past ~3.9 MB stored, gzip's ISIZE trailer (the length mod 2**32) is no longer
    trusted: the length is counted by decompressing, once."""
    logs = LogStore(tmp_path)
    build = uuid.uuid4().hex
    text = os.urandom(4_500_000).hex()      # hex compresses ~2:1: ~4.5 MB stored
    logs.append(build, text)
    logs.finish(build)
    assert logs.packed(build).stat().st_size > 2 ** 32 // 1100
    assert logs.size(build) == len(text) == gz_size(logs.packed(build))
    assert logs.read(build, len(text) - 5) == text[-5:].encode()


def test_seekable_gzip_is_plain_gzip_to_any_reader_and_ranges_start_near_their_offset(
        tmp_path):
    import io
    import random
    import shutil
    import subprocess
    from ccci_gate import seekgz
    text = "".join(f"{i} {os.urandom(8).hex()} {'ab' * (i % 50)}\n" for i in range(20000))
    data = text.encode()
    path = tmp_path / "x.log.gz"
    with open(path, "wb") as dst:
        seekgz.write(io.BytesIO(data), len(data), dst, block=4096)
    assert gzip.decompress(path.read_bytes()) == data
    if shutil.which("zcat"):
        assert subprocess.run(["zcat", str(path)], capture_output=True).stdout == data
    with open(path, "rb") as fh:
        total, points = seekgz.index(fh)
        assert total == len(data) and len(points) == -(-len(data) // 4096)
        rng = random.Random(7)
        for _ in range(200):
            a = rng.randrange(len(data))
            b = rng.randrange(a, len(data) + 10)
            assert seekgz.read_range(fh, a, b) == data[a:b]
        assert seekgz.read_range(fh, len(data) - 3, None) == data[-3:]
        assert seekgz.read_range(fh, len(data), None) == b""
    foreign = tmp_path / "foreign.gz"
    foreign.write_bytes(gzip.compress(data))
    with open(foreign, "rb") as fh:
        assert seekgz.index(fh) is None and seekgz.read_range(fh, 0, 10) is None
    # the log store reads a gzip it did not write the slow way
    logs = LogStore(tmp_path / "logs")
    build = uuid.uuid4().hex
    logs.packed(build).write_bytes(gzip.compress(data))
    assert logs.size(build) == len(data) and logs.read(build, 100, 200) == data[100:200]


def test_a_big_log_is_streamed_not_read_whole_into_memory(tmp_path):
    """Review: ``GET /logs/<id>`` read a whole log into one bytes object per request (a
    client without gzip, or ``Range: bytes=0-``): 16 readers of a 1 GB log took 16 GB.
    Served from a running and from a finished log, the handler and its body stay within a
    few MiB while the client gets every byte."""
    import tracemalloc

    from ccci_gate.web.logs import LogRoutes
    from ccci_gate.web.routes import Request
    from ccci_gate.store import Store

    logs = LogStore(tmp_path / "logs")
    store = Store(tmp_path / "db.sqlite")
    routes = LogRoutes(logs, store)
    build = uuid.uuid4().hex
    store.save_items([item_summary([{"id": build}])], finished=True)
    line = b"x" * 99 + b"\n"
    block = line * (1 << 14)   # 1.6 MB
    with open(logs.plain(build), "wb") as fh:
        for _ in range(20):    # 32 MB
            fh.write(block)
    text_size = logs.size(build)
    for state in ("running", "finished"):
        if state == "finished":
            assert logs.finish(build)
        for headers in ({}, {"range": "bytes=0-"}, {"accept-encoding": "gzip"}):
            size = text_size
            request = Request("GET", f"/logs/{build}", {}, headers, b"")
            tracemalloc.start()
            try:
                response = routes.log(request)
                got = 0
                for chunk in ([response.body] if isinstance(response.body, bytes)
                              else response.body):
                    got += len(chunk)
                getattr(response.body, "close", lambda: None)()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            if "accept-encoding" in headers and state == "finished":
                size = logs.packed(build).stat().st_size   # the gzip as stored
            assert got == size, (state, headers)
            assert peak < 8 << 20, f"{state} {headers}: peak {peak >> 20} MiB for a " \
                                   f"{size >> 20} MiB log"
    store.close()


def test_a_chunk_after_the_finish_reopens_the_log_off_the_appending_thread(tmp_path):
    """Review: a chunk after its log was finished (gearmand handing a lost build on)
    unpacked the whole gzip inside ``append``, on gear's poll thread. Now the unpack runs
    on the store's thread; chunks that come meanwhile keep their order; readers see the
    finished text until the swap."""
    logs = LogStore(tmp_path)
    build = uuid.uuid4().hex
    logs.append(build, TEXT.decode())
    assert logs.finish(build)
    unpacked_on = []
    gate = threading.Event()
    original = logs._reopen

    def slow_reopen(build_id):
        unpacked_on.append(threading.get_ident())
        gate.wait(10)   # a big gzip: the appending thread must not wait for this
        original(build_id)
    logs._reopen = slow_reopen
    started = time.monotonic()
    for word in ("one\n", "two\n", "three\n"):
        logs.append(build, word)
    assert time.monotonic() - started < 1.0, "append waited for the unpack"
    assert logs.read(build) == TEXT   # the finished text until the swap
    gate.set()
    logs.drain()
    assert unpacked_on and unpacked_on[0] != threading.get_ident()
    assert logs.state(build) == "running"
    assert logs.read(build) == TEXT + b"one\ntwo\nthree\n"
    assert not list(tmp_path.glob(".*"))
    logs.close()


def test_a_range_too_big_for_int_is_a_416_not_a_500(served):
    """Review: ``Range: bytes=<5000 digits>-`` made ``int()`` raise (Python's 4300-digit
    limit): a 500 and a traceback in the log for a stranger's header."""
    web, logs, store = served
    build = uuid.uuid4().hex
    store.save_items([item_summary([{"id": build}])], finished=True)
    logs.append(build, "text\n")
    url = f"{web.url}/logs/{build}"
    for header in (f"bytes={'9' * 5000}-", f"bytes=0-{'9' * 5000}", f"bytes=-{'9' * 5000}"):
        answer = requests.get(url, headers={"Range": header}, timeout=10)
        assert answer.status_code in (200, 206, 416), (header[:20], answer.status_code)
    assert requests.get(url, headers={"Range": f"bytes={'9' * 5000}-"},
                        timeout=10).status_code == 416


def test_a_malformed_gzip_quality_is_not_a_500(served):
    """Review: ``Accept-Encoding: gzip;q=1.2.3`` made ``float()`` raise in
    ``accepts_gzip``: a 500 for any finished log. A quality that is no number refuses
    gzip (the plain text goes out)."""
    web, logs, store = served
    build = uuid.uuid4().hex
    store.save_items([item_summary([{"id": build}])], finished=True)
    logs.append(build, "text\n")
    assert logs.finish(build)
    for header in ("gzip;q=1.2.3", "gzip;q=.", "gzip;q=..5"):
        answer = requests.get(f"{web.url}/logs/{build}", headers={"Accept-Encoding": header},
                              timeout=10)
        assert answer.status_code == 200, (header, answer.status_code)
        assert answer.content == b"text\n"


def test_big_logs_sent_at_once_are_bounded_and_give_their_slot_back(served, monkeypatch):
    """Review: a log sent piece by piece holds an HTTP thread while its client reads; 16
    slow readers beside the 16 live logs took all 32 of cheroot's threads (webhooks and
    the status page waited). At most ``MAX_DOWNLOADS`` are sent at once, 503 beyond (a
    small log, or a range, still goes out); a client that goes away frees its slot."""
    from ccci_gate.web import logs as logs_module
    web, logs, store = served
    routes = next(h.__self__ for m, p, h in web.router._routes if p == "/logs/")
    monkeypatch.setattr(routes, "_downloads", threading.BoundedSemaphore(2))
    monkeypatch.setattr(logs_module, "MAX_DOWNLOADS", 2)
    big, small = uuid.uuid4().hex, uuid.uuid4().hex
    store.save_items([item_summary([{"id": big}, {"id": small}])], finished=True)
    logs.append(big, "y" * (8 << 20))
    logs.append(small, "small\n")
    url = f"{web.url}/logs/{big}"
    plain = {"Accept-Encoding": "identity"}
    readers = [requests.get(url, headers=plain, stream=True, timeout=10) for _ in range(2)]
    assert [r.status_code for r in readers] == [200, 200]
    refused = requests.get(url, headers=plain, timeout=10)
    assert refused.status_code == 503 and "big logs" in refused.json()["error"]
    assert requests.get(f"{web.url}/logs/{small}", timeout=10).content == b"small\n"
    assert requests.get(url, headers={"Range": "bytes=-10"}, timeout=10).status_code == 206
    for r in readers:
        r.close()   # gone without reading: the next write fails, the slot comes back
    deadline = time.monotonic() + 30
    while routes._downloads._value < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    whole = requests.get(url, headers=plain, timeout=30)
    assert whole.status_code == 200 and len(whole.content) == 8 << 20
    deadline = time.monotonic() + 10
    while routes._downloads._value < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert routes._downloads._value == 2, "a body sent whole did not give its slot back"


def test_a_follower_reads_a_big_log_in_ranges_that_need_no_download_slot(served,
                                                                         monkeypatch):
    """Review: ``ccci-gate logs -f`` asked for ``bytes=<offset>-``, the whole rest, so a
    follower catching up on a big log held a download slot (and all of it in memory),
    and with the slots taken its first read failed ("cannot reach"). It reads 1 MiB
    ranges, which never need a slot."""
    import io

    from ccci_gate.commands.logs import follow
    web, logs, store = served
    routes = next(h.__self__ for m, p, h in web.router._routes if p == "/logs/")
    monkeypatch.setattr(routes, "_downloads", threading.BoundedSemaphore(1))
    assert routes._downloads.acquire(blocking=False)   # every slot taken
    build = uuid.uuid4().hex
    store.save_items([item_summary([{"id": build}])], finished=True)
    text = "".join(f"line {i}\n" for i in range(400_000))   # 4.6 MB
    logs.append(build, text)
    assert logs.finish(build)
    out = io.BytesIO()
    assert follow(web.url, build, out, poll=0.05, settle=0.2) == "SUCCESS"
    assert out.getvalue() == text.encode()
