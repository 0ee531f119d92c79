"""Serving, probed from outside the app: a one-shot task on the app's network.

A proxy reaches an app through its swarm network, not from inside its container; so
does this probe. It fetches from **every running task** of the app at its address on
the app's first network — what ``tasks.<stack>_app`` resolves to, and how Traefik's
swarm provider reaches tasks by default — rather than the service's virtual IP (which
needs IPVS in the host's kernel): a proxy spreads requests over all replicas, so one
replica that does not serve is a broken app even when another does. The **probe image**
is built on the worker host with ``docker import``
from the host's static busybox (Debian's ``busybox-static``): no registry is needed.
The app says where to look with labels on its ``app`` service:

- ``traefik.http.services.<stack>.loadbalancer.server.port`` — the port it serves on
  (what abra recipes already declare for Traefik);
- ``ccci.health-path`` — the path to fetch (default ``/``);
- ``ccci.health-codes`` — accepted status codes, e.g. ``200,204`` or ``200-399``
  (the default).

Where no probe is possible (no port declared, no busybox on the host) serving is
**unverified**, never passed.
"""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

IMAGE = "ccci-gate/probe:busybox-1"
BUSYBOX = Path("/bin/busybox")
DEFAULT_CODES = "200-399"
_STATUS = re.compile(r"HTTP/\d(?:\.\d)?\s+(\d{3})")


def rootfs(busybox: Path = BUSYBOX) -> bytes:
    """A root filesystem tarball holding busybox and the applets the probe uses."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in ("sh", "wget", "nc"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        info = tarfile.TarInfo("tmp")
        info.type, info.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(info)
    return buf.getvalue()


# $1 is ":PORT/PATH", then one address per task: each answer is framed by "== ADDRESS"
# and "== exit N" lines. Values are arguments, never part of the script's text.
SCRIPT = ('target=$1; shift; for address; do echo "== $address"; '
          'wget -S -q -O /dev/null "http://$address$target" 2>&1; echo "== exit $?"; done')


def command(port: int, path: str, addresses: list[str]) -> list[str]:
    """The probe task's argv: fetch ``path`` on ``port`` from each address in turn."""
    hosts = [f"[{a}]" if ":" in a else a for a in addresses]
    return ["sh", "-c", SCRIPT, "probe", f":{port}{path}", *hosts]


def answers(output: str) -> dict[str, int | None]:
    """Each address's last HTTP status (None: it answered nothing readable or the probe
    stopped before reaching it), from the output of :func:`command`'s script."""
    found: dict[str, int | None] = {}
    address, lines = None, []
    for line in output.splitlines() + ["== end"]:
        if line.startswith("== "):
            if address is not None and address not in found:
                found[address] = status_code("\n".join(lines))
            word = line[3:].strip()
            address, lines = (None, []) if word.startswith(("exit", "end")) else (
                word.strip("[]"), [])
        elif address is not None:
            lines.append(line)
    return found


def status_code(output: str) -> int | None:
    """The last HTTP status line ``wget -S`` printed (after redirects), if any."""
    codes = _STATUS.findall(output)
    return int(codes[-1]) if codes else None


def accepts(codes: str, code: int) -> bool:
    """Whether ``code`` is in a spec such as ``200,204`` or ``200-399``."""
    for part in (codes or DEFAULT_CODES).split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and int(low) <= code <= int(high if high.isdigit() else low):
            return True
    return False


def valid_codes(codes: str) -> bool:
    return all(re.fullmatch(r"\d{3}(-\d{3})?", part.strip()) for part in codes.split(","))
