"""Nobody joins the pool who should not: Gearman over TLS with the pool's certificates,
on the embedded gear.Server (with its ACL) and on Debian's gearmand (--ssl)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import gear
import pytest

from ccci_gate import pki
from ccci_gate.core.actions import StartBuild
from ccci_gate.gearman.dispatcher import GearmanDispatcher
from ccci_gate.gearman.server import EmbeddedServer
from ccci_gate.gearman.worker import GearmanWorker
from ccci_gate.pki import TlsFiles

from conftest import free_port, require, wait_listening

ROOT = Path(__file__).resolve().parents[1]

STUNNEL = """\
foreground = yes
pid =
[gearman]
accept = 127.0.0.1:{outer}
connect = 127.0.0.1:{inner}
cert = {cert}
key = {key}
CAfile = {ca}
verifyChain = yes
requireCert = yes
"""


def tmp_path_factory_dir(request) -> Path:
    return request.getfixturevalue("tmp_path_factory").mktemp("stunnel")


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict[str, TlsFiles]:
    """The pool's CA, the gatekeeper, a worker it signed, and a stranger with a CA of
    its own that claims to be a worker."""
    root = tmp_path_factory.mktemp("pki")
    files = {"gatekeeper": pki.init(root / "gk")}
    (root / "w1").mkdir()
    csr = pki.request("w1", root / "w1")
    (root / "w1" / "worker.crt").write_bytes(pki.sign(csr.read_bytes(), root / "gk"))
    (root / "w1" / "ca.crt").write_bytes((root / "gk" / "ca.crt").read_bytes())
    files["worker"] = TlsFiles.in_dir(root / "w1", "worker").check()
    pki.init(root / "evil-ca")
    (root / "evil").mkdir()
    csr = pki.request("w1", root / "evil")
    (root / "evil" / "worker.crt").write_bytes(pki.sign(csr.read_bytes(), root / "evil-ca"))
    (root / "evil" / "ca.crt").write_bytes((root / "gk" / "ca.crt").read_bytes())
    files["stranger"] = TlsFiles.in_dir(root / "evil", "worker").check()
    return files


def test_sign_grants_only_worker_names(tmp_path):
    pki.init(tmp_path / "ca")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, pki.GATEKEEPER)]))
           .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    cert = x509.load_pem_x509_certificate(pki.sign(csr.public_bytes(Encoding.PEM), tmp_path / "ca",
                                                   name="sneaky"))
    assert cert.subject.rfc4514_string() == "CN=worker:sneaky"
    cert = x509.load_pem_x509_certificate(pki.sign(csr.public_bytes(Encoding.PEM), tmp_path / "ca"))
    assert cert.subject.rfc4514_string() == "CN=worker:ccci-gatekeeper"   # never the gatekeeper
    with pytest.raises(pki.PkiError, match="letters"):
        pki.sign(csr.public_bytes(Encoding.PEM), tmp_path / "ca", name="a b")
    with pytest.raises(pki.PkiError, match="not a certificate signing request"):
        pki.sign(b"junk", tmp_path / "ca")
    with pytest.raises(pki.PkiError, match="tls init"):
        pki.sign(csr.public_bytes(Encoding.PEM), tmp_path / "nowhere", name="x")


@pytest.fixture(params=["embedded", "gearmand"])
def tls_server(request, pool):
    gk = pool["gatekeeper"]
    if request.param == "embedded":
        server = EmbeddedServer("127.0.0.1", 0, tls=gk)
        yield ("127.0.0.1", server.port), request.param
        server.shutdown()
        return
    # Debian's gearmand is built without TLS (it takes --ssl and then speaks plain text),
    # so it listens on loopback behind stunnel, which requires a certificate of the pool
    binary = request.getfixturevalue("gearmand_bin")
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    require(stunnel is not None, "stunnel (Debian stunnel4)")
    inner, outer = free_port(), free_port()
    conf = tmp_path_factory_dir(request) / "stunnel.conf"
    conf.write_text(STUNNEL.format(outer=outer, inner=inner, cert=gk.cert, key=gk.key, ca=gk.ca))
    procs = [subprocess.Popen([binary, "-L", "127.0.0.1", "-p", str(inner), "--log-file", "none"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([stunnel, str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    wait_listening(inner)
    wait_listening(outer)
    yield ("127.0.0.1", outer), request.param
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def registered(dispatcher: GearmanDispatcher, function: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count = dispatcher.pool()["functions"].get(function, {}).get("workers", 0)
        if count:
            return count
        time.sleep(0.1)
    return count


def test_only_the_pools_workers_register_and_take_builds(tls_server, pool, tmp_path):
    server, kind = tls_server
    events: list = []
    dispatcher = GearmanDispatcher([server], events.append, tmp_path / "logs",
                                   tls=pool["gatekeeper"])
    workers = []
    try:
        dispatcher.wait_for_server(10)
        stranger = GearmanWorker([server], "w1", ["build:secret"], tls=pool["stranger"])
        plain = GearmanWorker([server], "plain", ["build:secret"])
        workers += [stranger, plain]
        assert registered(dispatcher, "build:secret", 3) == 0, "a stranger joined the pool"
        member = GearmanWorker([server], "w1", ["build:secret"], tls=pool["worker"])
        workers.append(member)
        assert registered(dispatcher, "build:secret", 10) == 1
        dispatcher.start(StartBuild(f"{7:032x}", "build:secret", {"TOKEN": "t"}))
        request = member.get_build(10)
        assert request is not None and request.parameters == {"TOKEN": "t"}
        request.complete("SUCCESS")
    finally:
        for worker in workers:
            worker.shutdown()
        dispatcher.shutdown()


def test_a_worker_certificate_cannot_submit_on_the_embedded_server(pool):
    server = EmbeddedServer("127.0.0.1", 0, tls=pool["gatekeeper"])
    client = gear.Client("rogue")
    try:
        w = pool["worker"]
        client.addServer("127.0.0.1", server.port, ssl_key=str(w.key), ssl_cert=str(w.cert),
                         ssl_ca=str(w.ca))
        client.waitForServer(10)
        job = gear.Job(b"build:anything", b"{}")
        with pytest.raises(gear.GearmanError, match="Unable to submit"):
            client.submitJob(job, timeout=10)      # the server answered "Permission denied by ACL"
    finally:
        client.shutdown()
        server.shutdown()


def test_a_worker_certificate_registers_only_build_and_stop_functions(pool, tmp_path):
    """The embedded server's ACL: ``worker:<name>`` may offer ``build:*``/``stop:*`` and
    nothing else, so a worker cannot pose as a server-side function of another kind."""
    server = EmbeddedServer("127.0.0.1", 0, tls=pool["gatekeeper"])
    dispatcher = GearmanDispatcher([("127.0.0.1", server.port)], lambda e: None,
                                   tmp_path / "logs", tls=pool["gatekeeper"])
    member = GearmanWorker([("127.0.0.1", server.port)], "w1",
                           ["build:ok", "status", "admin:enqueue", "notbuild:x"],
                           tls=pool["worker"])
    try:
        dispatcher.wait_for_server(10)
        assert registered(dispatcher, "build:ok", 10) == 1
        # stop:w1 comes on the worker's second connection: it may register a moment later
        assert registered(dispatcher, "stop:w1", 10) == 1
        functions = dispatcher.pool()["functions"]
        for refused in ("status", "admin:enqueue", "notbuild:x"):
            assert functions.get(refused, {}).get("workers", 0) == 0, (refused, functions)
    finally:
        member.shutdown()
        dispatcher.shutdown()
        server.shutdown()


def test_the_join_flow_on_the_command_line(tmp_path):
    """workers/README.md, as an operator types it: init, request, sign, then the worker's
    files check out and a settings file turns TLS on for the gatekeeper."""
    import sys
    cli = [sys.executable, "-m", "ccci_gate.cli", "tls"]

    def run(*argv: str) -> str:
        proc = subprocess.run(cli + list(argv), cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    assert "serve with: ccci-gate serve --gearman-tls-dir state/tls" in run("init")
    assert "worker.csr" in run("request", "--name", "host-1", "tls")
    run("sign", "tls/worker.csr", "--out", "tls/worker.crt")
    (tmp_path / "tls" / "ca.crt").write_bytes((tmp_path / "state/tls/ca.crt").read_bytes())
    TlsFiles.in_dir(tmp_path / "tls", "worker").check()
    assert oct((tmp_path / "tls" / "worker.key").stat().st_mode & 0o777) == "0o600"
    from ccci_gate.settings import load_settings
    settings = load_settings(None, {"gearman-tls-dir": str(tmp_path / "state/tls")})
    assert settings.gearman_tls.cert.name == "gatekeeper.crt"
    bad = subprocess.run(cli + ["sign", "nope.csr"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.csr" in bad.stderr and "Traceback" not in bad.stderr


def test_the_make_worker_key_script_makes_a_request_the_gatekeeper_signs(tmp_path):
    """``sh workers/make-worker-key.sh NAME`` (workers/README.md), with ``ccci-gate`` on
    the PATH as an installed one would be."""
    import sys
    shim = tmp_path / "bin" / "ccci-gate"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m ccci_gate.cli "$@"\n')
    shim.chmod(0o755)
    host = tmp_path / "host"
    host.mkdir()
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(["sh", str(ROOT / "workers" / "make-worker-key.sh"), "host-2"], cwd=host,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert oct((host / "tls" / "worker.key").stat().st_mode & 0o777) == "0o600"
    pki.init(tmp_path / "gk")
    cert = pki.sign((host / "tls" / "worker.csr").read_bytes(), tmp_path / "gk")
    assert b"BEGIN CERTIFICATE" in cert
