"""The gatekeeper's HTTP listener: signed webhooks and status requests, beside the stdlib
``http.server`` listener it replaced, in one run on one gatekeeper's routes.

A real gatekeeper (embedded Gearman, SQLite, the shipped layout, a Gitea connection; no
worker) is started; its router is also served by two stdlib listeners on other ports:
the one ccci-gate shipped before (``http.server`` as is: headers and body written
separately, no ``TCP_NODELAY``) and the same one fixed (``TCP_NODELAY``, one write). For
each listener it measures, from one client thread (a socket with ``TCP_NODELAY``, as Go's
HTTP client — Gitea's — sets):

- signed webhooks (the real ``push.json`` payload, 5.5 kB, with ``X-Gitea-Signature`` and
  a fresh ``X-Gitea-Delivery``) over **one kept-alive connection**: requests/s, p50, p99;
- the same on a **new connection per request** (the plain-connection figure);
- ``GET /status.json`` p50 on a kept-alive connection, idle and while a second thread posts
  webhooks;
- the threads the listener holds for 200 idle kept-alive connections (each made one
  request and stays open, as a webhook sender's pool does).

The listener as shipped before is measured with at most 100 requests per row (each
takes ~44 ms).

Then the fuzz of ``tests/test_web_fuzz.py`` (``tests/web_fuzz.py``: mutated and nested
signed webhooks, bad signatures, broken framing, random admin calls) is sent to ours and
to the stdlib listener (fixed, so it runs at the same pace; its request handling is the
old one): how many answers were 5xx, and whether a real webhook still gets in afterwards.

    python3 bench/web.py [--requests 2000] [--status 500] [--fuzz 10000] [--seed 1]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccci_gate.app import Gatekeeper  # noqa: E402
from ccci_gate.settings import load_settings  # noqa: E402
from ccci_gate.web.routes import Request, Response, Router  # noqa: E402
from ccci_gate.web.server import MAX_BODY  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from web_fuzz import fuzz  # noqa: E402

SECRET = "bench-secret"
PAYLOAD = ROOT / "tests" / "fixtures" / "conformance" / "gitea" / "push.json"


class StdlibServer:
    """The listener ccci-gate had before (``fixed=False``), or it with Nagle's fix."""

    def __init__(self, router: Router, fixed: bool):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            if fixed:
                wbufsize = -1             # buffer headers and body: one write per response

            def setup(self) -> None:
                if fixed:
                    self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                super().setup()

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:   # the request handling of the old listener
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    return self._send(Response.error(400, "bad Content-Length"))
                if length > MAX_BODY:
                    self.close_connection = True
                    return self._send(Response.error(413, f"body over {MAX_BODY} bytes"))
                body = self.rfile.read(length) if length > 0 else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query),
                                  {k.lower(): v for k, v in self.headers.items()}, body,
                                  self.client_address[0])
                try:
                    response = outer.router.dispatch(request)
                except Exception:  # noqa: BLE001 - as the old listener did
                    response = Response.error(500, "internal error")
                self._send(response)

            def _send(self, response: Response) -> None:
                data = response.body if isinstance(response.body, bytes) else b"".join(response.body)
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        self.router = router
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Client:
    """One HTTP/1.1 connection with TCP_NODELAY (as Go's net/http, Gitea's client, sets)."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, new: bool = False) -> int:
        if new or self.conn is None:
            if self.conn is not None:
                self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status


_deliveries = iter(range(10**9))


def webhook(client: Client, body: bytes, new: bool = False) -> int:
    headers = {"Content-Type": "application/json", "X-Gitea-Event": "push",
               "X-Gitea-Delivery": f"bench-{next(_deliveries)}",
               "X-Gitea-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
    return client.request("POST", "/webhooks/gitea", body, headers, new=new)


def timed(n: int, fn) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of ``n`` calls of ``fn``."""
    times = []
    t0 = time.perf_counter()
    for _ in range(n):
        start = time.perf_counter()
        status = fn()
        times.append(time.perf_counter() - start)
        assert status < 400, status
    total = time.perf_counter() - t0
    times.sort()
    return n / total, statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000


def measure(port: int, body: bytes, n: int, n_status: int) -> dict[str, tuple[float, float, float]]:
    out = {}
    client = Client(port)
    webhook(client, body)                                          # warm up
    out["webhook, kept-alive"] = timed(n, lambda: webhook(client, body))
    out["webhook, new connection"] = timed(max(n // 4, 50), lambda: webhook(client, body, new=True))
    client = Client(port)
    out["status, kept-alive"] = timed(n_status, lambda: client.request("GET", "/status.json"))
    stop = threading.Event()

    def load() -> None:
        other = Client(port)
        while not stop.is_set():
            webhook(other, body)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    out["status, under webhook load"] = timed(n_status, lambda: client.request("GET", "/status.json"))
    stop.set()
    loader.join()
    return out


def idle_threads(port: int, connections: int = 200) -> int:
    """Threads the process gained while ``connections`` idle kept-alive clients stay open."""
    before = threading.active_count()
    clients = [Client(port) for _ in range(connections)]
    for c in clients:
        c.request("GET", "/status.json")
    time.sleep(0.5)
    gained = threading.active_count() - before
    for c in clients:
        c.conn.close()
    return gained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="webhooks per measurement")
    parser.add_argument("--status", type=int, default=500, help="status requests per measurement")
    parser.add_argument("--fuzz", type=int, default=10000, help="fuzzed requests per listener")
    parser.add_argument("--seed", type=int, default=1, help="the fuzz's seed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # the driver's complaints about the fuzz (and its Gitea, which is not there) are expected
    logging.getLogger("ccci_gate.drivers").setLevel(logging.CRITICAL)
    body = PAYLOAD.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, {
            "state-dir": f"{tmp}/state", "listen": "127.0.0.1:0", "gearman-listen": "127.0.0.1:0",
            "layout": [str(ROOT / "layouts"), str(ROOT / "jobs")], "jobs-dir": str(ROOT / "jobs"),
            "repos": f"{tmp}/repos", "worker": {"enabled": False},
            "connections": {"gitea": {"driver": "gitea", "url": "http://127.0.0.1:9",
                                      "token": "bench-token-unused", "webhook-secret": SECRET}}})
        gk = Gatekeeper(settings)
        gk.start()
        listeners = {"ccci-gate (cheroot)": gk.web.port}
        stdlib = {"stdlib http.server, as shipped before": StdlibServer(gk.router, fixed=False),
                  "stdlib http.server + TCP_NODELAY, one write": StdlibServer(gk.router, fixed=True)}
        listeners.update({name: s.port for name, s in stdlib.items()})
        results, threads = {}, {}
        for name, port in listeners.items():
            slow = name.endswith("as shipped before")
            results[name] = measure(port, body, min(args.requests, 100) if slow else args.requests,
                                    min(args.status, 100) if slow else args.status)
            threads[name] = idle_threads(port)
        fuzzed = {}
        logging.disable(logging.ERROR)     # the fuzz makes the driver log every refusal
        for name, port in (("ccci-gate (cheroot)", gk.web.port),
                           ("stdlib http.server, old request handling",
                            stdlib["stdlib http.server + TCP_NODELAY, one write"].port)):
            result = fuzz(f"http://127.0.0.1:{port}", port, args.fuzz, args.seed, SECRET,
                          gk.admin_token)
            fuzzed[name] = (result, webhook(Client(port), body) == 202)
        logging.disable(logging.NOTSET)
        for s in stdlib.values():
            s.shutdown()
        gk.stop()
    print(f"\n{'listener':<44} {'fuzzed':>7} {'signed webhooks':>16} {'5xx':>6} "
          f"{'req/s':>7}  a real webhook afterwards")
    for name, (result, alive) in fuzzed.items():
        print(f"{name:<44} {result.requests:>7} {result.signed_webhooks:>16} "
              f"{len(result.server_errors):>6} {result.requests / result.seconds:>7.0f}  "
              f"{'accepted' if alive else 'REFUSED'}")
    print()
    ours = results["ccci-gate (cheroot)"]
    print(f"{'listener':<44} {'measurement':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rows in results.items():
        for what, (rate, p50, p99) in rows.items():
            print(f"{name:<44} {what:<28} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f}")
        print(f"{name:<44} {'threads for 200 idle conns':<28} {threads[name]:>8}")
    kept, new = ours["webhook, kept-alive"], ours["webhook, new connection"]
    old = results["stdlib http.server, as shipped before"]["webhook, kept-alive"]
    print(f"\nours: {kept[0]:.0f} signed webhooks/s over one kept-alive connection "
          f"(p50 {kept[1]:.2f} ms) = {kept[0] / new[0]:.2f}x a new connection per request "
          f"({new[0]:.0f}/s) and {kept[0] / old[0]:.1f}x the old listener kept-alive ({old[0]:.0f}/s); "
          f"status p50 {ours['status, kept-alive'][1]:.2f} ms idle, "
          f"{ours['status, under webhook load'][1]:.2f} ms under webhook load")


if __name__ == "__main__":
    main()
