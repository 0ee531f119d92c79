"""The gatekeeper's gear client: TCP_NODELAY, packet callbacks into the dispatcher, and
the few blocking calls the dispatcher thread makes (submit on a chosen connection,
admin requests). Callbacks run on gear's poll thread and must never call gear.
"""
from __future__ import annotations

import logging
from typing import Any

import gear
from gear import constants

from . import protocol

log = logging.getLogger("ccci_gate.dispatcher")

ADMIN_TIMEOUT = 5.0   # an admin request's answer


class Client(gear.Client):
    """gear's client with TCP_NODELAY and callbacks into the dispatcher."""

    def __init__(self, owner: Any, client_id: str):
        self.owner = owner
        super().__init__(client_id=client_id)

    def _onConnect(self, conn):  # noqa: N802 - gear's names below too
        protocol.set_nodelay(conn.conn)
        super()._onConnect(conn)

    def _onActiveConnection(self, conn):  # noqa: N802
        super()._onActiveConnection(conn)
        self.owner._on_connected(conn)

    def handleWorkData(self, packet):
        try:
            job = super().handleWorkData(packet)
        except gear.UnknownJobError:
            # not ours (any more): gearmand's "cancel job" answers OK and fails the job
            # to us even when a worker already runs it, and forwards what it sends
            self.owner._on_unknown_data(packet.getArgument(1, True))
            return
        self.owner._on_data(job, packet.getArgument(1, True))

    def handleWorkStatus(self, packet):
        job = self._known(super().handleWorkStatus, packet)
        if job is not None:
            self.owner._on_status(job)

    def handleWorkComplete(self, packet):
        job = self._known(super().handleWorkComplete, packet)
        if job is not None:
            self.owner._on_complete(job, packet.getArgument(1, True))

    def handleWorkFail(self, packet):
        job = self._known(super().handleWorkFail, packet)
        if job is not None:
            self.owner._on_lost(job, "WORK_FAIL: the worker failed or was lost")

    def handleWorkException(self, packet):
        job = self._known(super().handleWorkException, packet)
        if job is not None:
            self.owner._on_lost(job, f"WORK_EXCEPTION: {job.exception!r}")

    @staticmethod
    def _known(handle, packet):
        try:
            return handle(packet)
        except gear.UnknownJobError:
            log.debug("ignoring %s for a job that is not ours", packet)
            return None

    def handleDisconnect(self, job):
        self.owner._on_lost(job, "lost the connection to the Gearman server", disconnected=True)
        return job


SUBMIT = {"high": constants.SUBMIT_JOB_HIGH, "normal": constants.SUBMIT_JOB,
          "low": constants.SUBMIT_JOB_LOW}


def send_job(client: gear.Client, conn: Any, job: gear.Job, cmd: int,
             timeout: float) -> bool | None:
    """SUBMIT_JOB* of ``job`` on ``conn`` (gear's ``submitJob`` picks the connection
    itself): True when created, None when nothing was sent, False when it was sent and
    not acknowledged within ``timeout`` (the connection is dropped then)."""
    data = b"\x00".join((job.binary_name, job.binary_unique or b"", job.binary_arguments))
    packet = gear.Packet(constants.REQ, cmd, data)
    task = gear.SubmitJobTask(job)
    conn.pending_tasks.append(task)
    try:
        client.sendPacket(packet, conn)   # marks the connection lost on failure
    except Exception:  # noqa: BLE001
        return None
    if not task.wait(timeout) or not job.handle:
        log.error("%s:%s did not acknowledge %s", conn.host, conn.port, job)
        client._lostConnection(conn)
        return False
    job.connection = conn
    return True


def admin(conn: Any, request: gear.AdminRequest, timeout: float = ADMIN_TIMEOUT) -> bytes | None:
    """An admin request's answer, or None (logged) whatever went wrong."""
    try:
        conn.sendAdminRequest(request, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s from %s:%s failed: %r", type(request).__name__, conn.host,
                    conn.port, exc)
        return None
    return request.response


def parse_status(data: bytes) -> list[tuple[str, int, int, int]]:
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            out.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return out


def parse_workers(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        head, _, funcs = line.partition(" : ")
        parts = head.split()
        functions = funcs.split()
        if len(parts) >= 3 and functions:
            out.append({"name": parts[2], "address": parts[1], "functions": functions})
    return out
