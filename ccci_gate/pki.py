"""The worker pool's certificates: who may join, decided by one small CA.

- ``init(dir)`` makes the pool's **CA** (``ca.key``, ``ca.crt``) and the gatekeeper's
  own key and certificate (common name ``ccci-gatekeeper``) in ``dir``.
- ``request(name, dir)`` makes a worker host's key (kept there, mode 0600) and a
  certificate signing request for the common name ``worker:<name>``.
- ``sign(csr, dir)`` signs a request with the CA; the common name it grants is always
  ``worker:<name>``, whatever the request asked for, so a request cannot make a
  gatekeeper.

The Gearman server admits only certificates of this CA, and its ACL (``gearman/acl.py``)
lets ``worker:*`` register build and stop functions and nothing else; only
``ccci-gatekeeper`` may submit.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GATEKEEPER = "ccci-gatekeeper"
WORKER_PREFIX = "worker:"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DAYS = 825


class PkiError(ValueError):
    """A certificate could not be made or signed; the message says why."""


@dataclass(frozen=True)
class TlsFiles:
    """A key, its certificate and the pool's CA certificate: what one Gearman
    connection needs (``ssl_key``, ``ssl_cert``, ``ssl_ca`` in ``gear``)."""

    key: Path
    cert: Path
    ca: Path

    @classmethod
    def in_dir(cls, folder: Path, stem: str) -> "TlsFiles":
        return cls(folder / f"{stem}.key", folder / f"{stem}.crt", folder / "ca.crt")

    def check(self) -> "TlsFiles":
        for path in (self.key, self.cert, self.ca):
            if not path.is_file():
                raise PkiError(f"{path}: no such file (see workers/README.md)")
        return self


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, public_key, issuer: x509.Name, signer, ca: bool = False,
                 days: int = DAYS) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise PkiError(f"no CA in {folder} ({exc}); run `ccci-gate tls init` first") from None
    return cert, key  # type: ignore[return-value]


def init(folder: Path) -> TlsFiles:
    """The pool's CA and the gatekeeper's certificate in ``folder`` (kept if present)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "ca.key").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(folder / "ca.key", key)
        cert = _certificate("ccci-gate pool CA", key.public_key(), _name("ccci-gate pool CA"),
                            key, ca=True, days=3650)
        (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files = TlsFiles.in_dir(folder, "gatekeeper")
    if not files.cert.exists():
        ca_cert, ca_key = _load_ca(folder)
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(files.key, key)
        cert = _certificate(GATEKEEPER, key.public_key(), ca_cert.subject, ca_key)
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def request(name: str, folder: Path) -> Path:
    """A worker's key (``worker.key``) and signing request (``worker.csr``) in
    ``folder``; returns the request's path."""
    if not NAME.match(name):
        raise PkiError(f"worker name {name!r}: letters, digits, '.', '_' and '-' only")
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(folder / "worker.key", key)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(WORKER_PREFIX + name))
           .sign(key, hashes.SHA256()))
    path = folder / "worker.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def sign(csr_pem: bytes, folder: Path, name: str | None = None) -> bytes:
    """A worker certificate for the request, signed by the CA in ``folder``. The common
    name is ``worker:<name>`` (the request's name unless ``name`` is given)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError("the request's signature does not match its key")
    asked = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(asked[0].value) if asked else ""
    name = name or common.removeprefix(WORKER_PREFIX)
    if not NAME.match(name or ""):
        raise PkiError(f"worker name {name!r}: letters, digits, '.', '_' and '-' only")
    ca_cert, ca_key = _load_ca(folder)
    cert = _certificate(WORKER_PREFIX + name, csr.public_key(), ca_cert.subject, ca_key)
    return cert.public_bytes(serialization.Encoding.PEM)
