"""Random and mutated requests for an HTTP listener of the gatekeeper, shared by
``tests/test_web_fuzz.py`` and ``bench/web.py``: signed and unsigned webhooks built from
the real payloads in ``tests/fixtures/conformance/gitea`` (mutated JSON, flipped bytes,
JSON nested thousands deep, random bodies), non-ASCII and malformed signatures, random
admin calls and paths, and raw requests with chunked, lying or broken framing.

``fuzz(url, port, n, seed, secret, admin_token)`` sends ``n`` of them and returns a
:class:`FuzzResult`: how many of each status, and every 5xx with what caused it.
"""
from __future__ import annotations

import copy
import json
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from fake_gitea import CONFORMANCE, headers_for, sign

PAYLOADS = sorted((CONFORMANCE / "gitea").glob("*.json"))
EVENTS = ["issue_comment", "pull_request", "push", "release", "", "issue_comment\u00e9",
          "x" * 300]


@dataclass
class FuzzResult:
    seed: int
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    signed_webhooks: int = 0


def fuzz(url: str, port: int, n: int, seed: int, secret: str, admin_token: str) -> FuzzResult:
    rng = random.Random(seed)
    result = FuzzResult(seed)
    session = requests.Session()
    started = time.perf_counter()
    for i in range(n):
        roll = rng.random()
        if roll < 0.7:
            body, headers = _webhook(rng, secret)
            if headers.get("X-Gitea-Signature") == sign(secret, body):
                result.signed_webhooks += 1
            headers = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
            status = session.post(f"{url}/webhooks/gitea", data=body, headers=headers,
                                  timeout=30).status_code
            what = f"webhook {headers.get('X-Gitea-Event')!r} body {body[:80]!r}"
        elif roll < 0.9:
            method, path, body, headers = _other(rng, admin_token)
            headers = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
            status = session.request(method, url + path, data=body, headers=headers,
                                     timeout=30).status_code
            what = f"{method} {path} body {body[:80]!r}"
        else:
            raw = _protocol(rng, secret)
            status = _raw("127.0.0.1", port, raw)
            what = f"raw {raw[:160]!r}"
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status >= 500:
            result.server_errors.append(f"#{i} {status}: {what}")
    result.requests = n
    result.seconds = time.perf_counter() - started
    return result


# --- mutations ---------------------------------------------------------------------------

def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 6)
    return [lambda: None, lambda: rng.random() < 0.5, lambda: rng.randint(-2**70, 2**70),
            lambda: rng.random() * 1e308, lambda: "".join(chr(rng.randrange(0x10FFFF))
                                                           for _ in range(rng.randrange(8))).encode(
                "utf-8", "surrogatepass").decode("utf-8", "replace"),
            lambda: rng.choice(["", "../../etc", "a" * 40, "0" * 40, "!testme", "refs/heads/main",
                                "example/example", "é" * 50, "\x00", "x" * 5000]),
            lambda: [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
            lambda: {str(rng.randrange(100)): _random_value(rng, depth + 1)
                     for _ in range(rng.randrange(4))},
            lambda: {"full_name": rng.choice(["a/b", "example/example", "../x", ""])}][choice]()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


def _mutate(rng: random.Random, payload: Any) -> Any:
    payload = copy.deepcopy(payload)
    for _ in range(rng.randrange(1, 6)):
        paths = [p for p in _paths(payload) if p]
        if not paths:
            return _random_value(rng)
        path = rng.choice(paths)
        parent = payload
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.3 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = _random_value(rng)
    return payload


def _nested(rng: random.Random) -> bytes:
    depth = rng.choice([1000, 5000, 50000, 200000])
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"repository": {"full_name": "example/example"}, "action": "created", "x": ' + inner + b"}"


def _flip(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randrange(1, 8)):
        op = rng.randrange(3)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[at:at + rng.randrange(1, 64)]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(data)


def _webhook(rng: random.Random, secret: str) -> tuple[bytes, dict[str, str]]:
    source = rng.choice(PAYLOADS)
    raw = source.read_bytes()
    kind = rng.randrange(5)
    if kind == 0:
        body = json.dumps(_mutate(rng, json.loads(raw)), ensure_ascii=rng.random() < 0.5).encode()
    elif kind == 1:
        body = _flip(rng, raw)
    elif kind == 2:
        body = _nested(rng)
    elif kind == 3:
        body = raw
    else:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    event = headers_for(source.name)[0] if rng.random() < 0.7 else rng.choice(EVENTS)
    headers = {"Content-Type": "application/json", "X-Gitea-Event": event,
               "X-Gitea-Delivery": f"fuzz-{rng.random()}"}
    sig = rng.random()
    if sig < 0.6:
        headers["X-Gitea-Signature"] = sign(secret, body)
    elif sig < 0.7:
        headers["X-Gitea-Signature"] = rng.choice(["é" * 64, "ä" + sign(secret, body)[1:], "\u00ff"])
    elif sig < 0.8:
        headers["X-Gitea-Signature"] = rng.choice(["", "zz", "0" * 64, "0" * 5000, "a" * 63 + "\t" + "b"])
    elif sig < 0.9:
        headers["X-Gitea-Signature"] = sign("wrong", body)
    return body, headers


def _other(rng: random.Random, token: str) -> tuple[str, str, bytes, dict[str, str]]:
    """A random call to the rest of the API."""
    hexid = "".join(rng.choice("0123456789abcdef") for _ in range(32))
    method, path = rng.choice([
        ("GET", "/status.json"), ("GET", "/history.json?project=" + rng.choice(["x", "é", "%ff"])),
        ("GET", f"/items/{hexid}"), ("GET", f"/logs/{hexid}"), ("GET", "/logs/../../etc/passwd"),
        ("GET", "/items/%2e%2e"), ("PUT", f"/artifacts/{hexid}/../x"), ("GET", f"/artifacts/{hexid}/a"),
        ("POST", "/admin/enqueue"), ("POST", "/admin/dequeue"), ("POST", "/admin/promote"),
        ("POST", "/admin/retrigger"), ("POST", "/admin/pause"), ("DELETE", "/status.json"),
        ("GET", "/" + "a/" * rng.randrange(200)), ("PATCH", "/webhooks/gitea"),
        ("HEAD", "/status.json"), ("HEAD", "/webhooks/gitea"), ("OPTIONS", "/status.json"),
    ])
    body = json.dumps(_random_value(rng)).encode() if rng.random() < 0.7 else _nested(rng)
    headers = {"Content-Type": "application/json"}
    if path.startswith("/admin") and rng.random() < 0.8:
        headers["Authorization"] = f"Bearer {token}"
    if rng.random() < 0.05:
        headers["Authorization"] = "Bearer é"
    return method, path, body, headers


def _raw(host: str, port: int, request: bytes) -> int:
    """Send raw bytes; the status code of the answer (0: the server closed without one)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def _protocol(rng: random.Random, secret: str) -> bytes:
    """A webhook with a chunked, lying or malformed framing."""
    body = rng.choice(PAYLOADS).read_bytes()
    head = (b"POST /webhooks/gitea HTTP/1.1\r\nHost: x\r\nX-Gitea-Event: push\r\n"
            b"X-Gitea-Signature: " + sign(secret, body).encode() + b"\r\n")
    kind = rng.randrange(7)
    if kind == 0:   # chunked, well formed
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 97]), body[i:i + 97])
                          for i in range(0, len(body), 97))
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    if kind == 1:   # chunked, bad sizes
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + rng.choice(
            [b"zz\r\nab\r\n0\r\n\r\n", b"ffffffffffffffffffff\r\nab", b"5\r\nab", b"-1\r\n\r\n"])
    if kind == 2:   # Content-Length lies or is junk
        return head + b"Content-Length: " + rng.choice(
            [b"-5", b"abc", b"99999999999999999999", b"10", b"1e3", b"5, 6"]) + b"\r\n\r\n" + body
    if kind == 3:   # both framings
        return head + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    if kind == 5:   # a broken request line or header block
        return rng.choice([
            b"GET /\xff\xfe/status.json HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n",
            b"POST /webhooks/gitea HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: " + b"b" * 70000 + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 5000 + b"\r\n",
            b"GET /status.json HTTP/1.1\r\nHost: x\r\n X-Folded: yes\r\n\r\n",
            b"POST /webhooks/gitea HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcdefg",
        ])
    if kind == 4:   # a non-ASCII header value, raw bytes
        return (b"POST /webhooks/gitea HTTP/1.1\r\nHost: x\r\nX-Gitea-Event: push\r\n"
                b"X-Gitea-Signature: \xc3\xa9\xff" + b"a" * 60 + b"\r\nContent-Length: %d\r\n\r\n"
                % len(body) + body)
    return _flip(rng, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
