"""``gerrit stream-events`` over SSH (paramiko), kept open for as long as the gate runs.

The stream thread connects with the account's key (public-key auth, no agent, no
other keys), runs ``gerrit stream-events`` and hands each line to ``on_line``. When the
connection drops (Gerrit restarts, the network goes: SSH and TCP keepalives notice a
peer that vanished without closing) it reconnects with exponential backoff:
``backoff`` doubling up to ``backoff_max``, reset once a stream has carried events or
stayed open a minute (so a server that accepts and at once closes, as Gerrit does for
an account without the Stream Events capability, is not hammered). It calls ``on_connect`` each time it is connected so the
driver can ask the REST API what it missed: Gerrit's stream has no replay.

Host keys: with ``known_hosts`` set, only the keys it lists are accepted; without, any
host key is accepted (logged once per connection) — set it in production.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable

import paramiko

log = logging.getLogger("ccci_gate.drivers.gerrit")

COMMAND = "gerrit stream-events"
READ_TIMEOUT = 0.5   # how often the reader checks for stop()
STABLE = 60.0        # a stream open this long (or that carried events) worked: backoff resets


class EventStream:
    """One SSH connection at a time, on its own thread, reconnecting forever."""

    def __init__(self, host: str, port: int, user: str, key_file: str,
                 on_line: Callable[[str], None], on_connect: Callable[[], None],
                 known_hosts: str = "", backoff: float = 1.0, backoff_max: float = 60.0,
                 keepalive: float = 30.0, name: str = "gerrit-stream"):
        self.host, self.port, self.user, self.key_file = host, port, user, key_file
        self.on_line, self.on_connect = on_line, on_connect
        self.known_hosts = known_hosts
        self.backoff, self.backoff_max, self.keepalive = backoff, backoff_max, keepalive
        self.name = name
        self.connected = threading.Event()
        self.connects = 0          # how many times a stream was opened
        self._stop = threading.Event()
        self._client: paramiko.SSHClient | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started, lines = float("inf"), 0
            try:
                channel = self._open()
                started = time.monotonic()
                self.connects += 1
                self.connected.set()
                self.on_connect()
                lines = self._read(channel)
                if not self._stop.is_set():
                    log.warning("%s: the stream from %s ended%s", self.name, self.host,
                                _said(channel))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if not self._stop.is_set():
                    log.warning("%s: %s:%s: %s", self.name, self.host, self.port, exc)
            except Exception:   # the thread must outlive anything paramiko or a bug raises
                if not self._stop.is_set():
                    log.exception("%s: %s:%s: unexpected error", self.name, self.host, self.port)
            finally:
                self.connected.clear()
                if self._client is not None:
                    self._client.close()
                    self._client = None
            if lines or time.monotonic() - started >= STABLE:
                failures = 0    # it worked for a while: start again from the shortest delay
            delay = min(self.backoff_max, self.backoff * 2 ** failures)
            failures += 1
            if self._stop.is_set():
                return
            log.info("%s: reconnecting in %.2fs", self.name, delay)
            if self._stop.wait(delay):
                return

    def _open(self) -> paramiko.Channel:
        client = paramiko.SSHClient()
        self._client = client
        if self.known_hosts:
            client.load_host_keys(self.known_hosts)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            log.warning("%s: no known-hosts file: accepting any host key of %s", self.name, self.host)
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(self.host, self.port, username=self.user,
                       key_filename=self.key_file or None, allow_agent=False,
                       look_for_keys=False, timeout=10, banner_timeout=10, auth_timeout=10)
        transport = client.get_transport()
        if transport is None:
            raise EOFError("the connection closed while it was opened")
        if self.keepalive:
            transport.set_keepalive(int(max(1, self.keepalive)))
            tcp_keepalive(transport.sock, self.keepalive)
        channel = transport.open_session()
        channel.settimeout(READ_TIMEOUT)
        channel.exec_command(COMMAND)
        log.info("%s: streaming events from %s@%s:%s", self.name, self.user, self.host, self.port)
        return channel

    def _read(self, channel: paramiko.Channel) -> int:
        """Hand each line to ``on_line`` until the stream ends; returns how many."""
        buffer, count = b"", 0
        transport = channel.get_transport()
        while not self._stop.is_set():
            try:
                chunk = channel.recv(65536)
            except TimeoutError:
                if transport is None or not transport.is_active():
                    return count
                continue
            if not chunk:
                return count
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    count += 1
                    self.on_line(line.decode("utf-8", "replace"))
        return count


def tcp_keepalive(sock: Any, interval: float) -> None:
    """Let the kernel notice a peer that vanished without closing (a half-open
    connection: Gerrit's stream is silent when nothing happens, so reads alone never
    notice): probes after ``interval`` idle seconds, three unanswered ones end it."""
    if not isinstance(sock, socket.socket):
        return
    seconds = int(max(1, interval))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", seconds), ("TCP_KEEPINTVL", max(1, seconds // 3)),
                        ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _said(channel: paramiko.Channel) -> str:
    """What Gerrit wrote on stderr before closing (``fatal: ... not permitted``)."""
    try:
        text = channel.recv_stderr(4096).decode("utf-8", "replace").strip() \
            if channel.recv_stderr_ready() else ""
    except (OSError, EOFError, paramiko.SSHException):
        text = ""
    return f": {text}" if text else ""
