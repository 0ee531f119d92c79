"""The HTTP listener (cheroot behind our Router): framing, limits, bad input as 4xx, a busy
port as one line, and handlers that never wait on the scheduler or its store lock."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from ccci_gate.store import Store
from ccci_gate.web.api import POOL_MAX_AGE, GatekeeperAPI
from ccci_gate.web.routes import Request, Response, Router
from ccci_gate.web.server import ListenerError, WebServer
from ccci_gate.web.snapshot import Snapshot


def _echo(request: Request) -> Response:
    return Response.json({"len": len(request.body), "path": request.path, "query": request.query,
                          "sig": request.header("x-sig")})


def _boom(request: Request) -> Response:
    raise RuntimeError("a bug")


def _deep(request: Request) -> Response:
    return Response.json({"parsed": type(request.json()).__name__})


@pytest.fixture
def server():
    router = Router()
    router.add("POST", "/echo", _echo)
    router.add("GET", "/boom", _boom)
    router.add("GET", "/stream", lambda r: Response(200, iter([b"a", b"b", b"c"])))
    web = WebServer(router, "127.0.0.1", 0, max_body=1000)
    web.start()
    yield web
    web.shutdown()


def _conn(web: WebServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)


def _answer(conn: http.client.HTTPConnection) -> tuple[int, dict]:
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, (json.loads(body) if body.startswith(b"{") else {"raw": body})


def test_many_requests_on_one_kept_alive_connection(server):
    conn = _conn(server)
    for i in range(50):
        conn.request("POST", f"/echo?n={i}", body=b"x" * i)
        assert _answer(conn) == (200, {"len": i, "path": "/echo", "query": {"n": [str(i)]}, "sig": ""})
    sock = conn.sock
    conn.request("POST", "/echo", body=b"")
    _answer(conn)
    assert conn.sock is sock  # still the same connection


def test_a_chunked_body_is_read(server):
    conn = _conn(server)
    conn.putrequest("POST", "/echo")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
    assert _answer(conn)[1]["len"] == 8


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413(server, chunked):
    conn = _conn(server)
    if chunked:
        conn.putrequest("POST", "/echo")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"3e8\r\n" + b"x" * 1000 + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    else:
        conn.request("POST", "/echo", body=b"x" * 1001)
    assert _answer(conn)[0] == 413
    conn = _conn(server)
    conn.request("POST", "/echo", body=b"ok")
    assert _answer(conn)[0] == 200


def test_bad_chunked_framing_is_400(server):
    conn = _conn(server)
    conn.putrequest("POST", "/echo")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"zz\r\nhello\r\n0\r\n\r\n")
    assert _answer(conn)[0] == 400


def test_a_non_ascii_header_value_is_400(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Sig: \xc3\xa9\xff\r\nContent-Length: 0\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


def test_a_request_line_that_is_not_http_1_is_400(server):
    for line in (b"GET /echo HTTP/9.9", b"GET /echo HTTP/2.0", b"GET /echo FTP/1.1"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(line + b"\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400"), line


def test_json_nested_thousands_deep_is_400():
    router = Router()
    router.add("POST", "/json", _deep)
    server = WebServer(router, "127.0.0.1", 0)
    server.start()
    conn = _conn(server)
    conn.request("POST", "/json", body=b"[" * 100000 + b"]" * 100000)
    assert _answer(conn) == (400, {"error": "input nested too deeply"})
    conn.request("POST", "/json", body=b"[[]]")
    assert _answer(conn) == (200, {"parsed": "list"})
    server.shutdown()


def test_a_failing_handler_is_500_and_the_server_keeps_serving(server):
    conn = _conn(server)
    conn.request("GET", "/boom")
    assert _answer(conn)[0] == 500
    conn = _conn(server)
    conn.request("POST", "/echo", body=b"a")
    assert _answer(conn)[0] == 200


def test_unknown_paths_and_methods(server):
    conn = _conn(server)
    conn.request("GET", "/nope")
    assert _answer(conn)[0] == 404
    conn.request("GET", "/echo")
    assert _answer(conn)[0] == 405


def test_head_is_get_without_the_body_and_the_connection_stays_usable(server):
    conn = _conn(server)
    conn.request("HEAD", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    conn.request("HEAD", "/echo")
    resp = conn.getresponse()
    assert resp.status == 405 and resp.read() == b""
    conn.request("GET", "/stream")
    assert _answer(conn) == (200, {"raw": b"abc"})


def test_a_streamed_body(server):
    conn = _conn(server)
    conn.request("GET", "/stream")
    assert _answer(conn) == (200, {"raw": b"abc"})


def test_a_busy_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenerError) as err:
            WebServer(Router(), "127.0.0.1", port)
    assert str(err.value) == f"HTTP listener on 127.0.0.1:{port}: Address already in use"


# --- never waiting on the scheduler --------------------------------------------------------

def test_a_snapshot_answers_from_the_last_value_when_its_source_is_busy():
    release = threading.Event()
    calls = []

    def status() -> dict:
        calls.append(1)
        if len(calls) > 1:
            release.wait(10)   # the scheduler is busy with a long batch
        return {"n": len(calls)}

    snap = Snapshot("test", status, wait=0.2)
    first = snap.get()
    assert first is not None and first.fresh and first.value == {"n": 1}
    started = time.monotonic()
    second = snap.get()
    assert time.monotonic() - started < 1.0
    assert second is not None and not second.fresh and second.value == {"n": 1}
    release.set()
    third = snap.get()
    assert third is not None and third.value["n"] >= 2


def test_a_snapshot_asks_once_for_many_readers():
    gate = threading.Event()
    calls = []

    def status() -> int:
        calls.append(1)
        gate.wait(5)
        return len(calls)

    snap = Snapshot("test", status, wait=5)
    readers = [threading.Thread(target=snap.get) for _ in range(20)]
    for r in readers:
        r.start()
    time.sleep(0.2)
    gate.set()
    for r in readers:
        r.join()
    assert len(calls) <= 3   # one per wave of readers, not one per reader


def test_store_reads_do_not_wait_for_the_writer_lock(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    try:
        with store._lock:   # the scheduler thread is in the middle of writing a batch
            done = []
            reader = threading.Thread(target=lambda: done.append(store.history()))
            reader.start()
            reader.join(timeout=5)
            assert done == [[]]
    finally:
        store.close()


class _Scheduler:
    """What the API reads of a scheduler: its published status."""

    def status(self) -> dict:
        return {"pipelines": [], "time": time.time()}


def test_status_does_not_wait_for_a_slow_gearman_server(tmp_path):
    release = threading.Event()
    calls = []

    def pool() -> dict:   # answers once, then hangs like a Gearman server that went away
        calls.append(1)
        if len(calls) > 1:
            release.wait(10)
        return {"functions": {"build:x": {"workers": len(calls)}}}

    store = Store(tmp_path / "s.sqlite")
    api = GatekeeperAPI(_Scheduler(), store, tmp_path, "token", reconfigure=lambda: [],
                        pool=pool, change_ref=lambda p, n: "", web_url="http://gk")
    router = Router()
    api.register(router)
    web = WebServer(router, "127.0.0.1", 0)
    web.start()
    try:
        conn = _conn(web)
        conn.request("GET", "/status.json")
        status, first = _answer(conn)
        assert status == 200 and first["pool"]["functions"]["build:x"]["workers"] == 1
        time.sleep(POOL_MAX_AGE + 0.1)   # the next status asks the servers again
        started = time.monotonic()
        conn.request("GET", "/status.json")
        status, second = _answer(conn)
        assert time.monotonic() - started < 1.5
        assert status == 200 and second["pool"] == first["pool"]   # the last answer
        assert second["recent"] == []
    finally:
        release.set()
        web.shutdown()
        store.close()
