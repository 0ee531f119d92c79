"""``ccci-gate tls init | request | sign``: the worker pool's certificates (see
``workers/README.md`` and ``ccci_gate/pki.py``)."""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("tls", help="the worker pool's certificates (see workers/README.md)")
    tls = p.add_subparsers(dest="tls_command", required=True)
    q = tls.add_parser("init", help="on the gatekeeper: make the pool's CA and its own certificate")
    q.add_argument("dir", type=Path, nargs="?", default=Path("state/tls"))
    q = tls.add_parser("request", help="on a worker host: make its key and signing request")
    q.add_argument("--name", default=socket.gethostname(), help="worker name (default: hostname)")
    q.add_argument("dir", type=Path, nargs="?", default=Path("tls"))
    q = tls.add_parser("sign", help="on the gatekeeper: sign a worker's request")
    q.add_argument("csr", type=Path, help="the worker's worker.csr")
    q.add_argument("--dir", type=Path, default=Path("state/tls"), help="the CA's folder")
    q.add_argument("--name", help="worker name to grant (default: the one requested)")
    q.add_argument("--out", type=Path, help="where to write the certificate (default: stdout)")
    p.set_defaults(func=cmd_tls)


def cmd_tls(args: argparse.Namespace) -> int:
    from .. import pki
    try:
        if args.tls_command == "init":
            files = pki.init(args.dir)
            print(f"CA {files.ca}; gatekeeper key {files.key} and certificate {files.cert}\n"
                  f"serve with: ccci-gate serve --gearman-tls-dir {args.dir}")
        elif args.tls_command == "request":
            args.dir.mkdir(parents=True, exist_ok=True)
            csr = pki.request(args.name, args.dir)
            print(f"key {args.dir / 'worker.key'} (keep it here); signing request {csr}\n"
                  f"on the gatekeeper: ccci-gate tls sign worker.csr --out worker.crt; then put "
                  f"worker.crt and the gatekeeper's ca.crt in {args.dir}")
        else:
            cert = pki.sign(args.csr.read_bytes(), args.dir, args.name)
            if args.out:
                args.out.write_bytes(cert)
                print(f"signed: {args.out}; give it to the worker with {args.dir / 'ca.crt'}")
            else:
                sys.stdout.write(cert.decode())
    except (pki.PkiError, OSError) as exc:
        print(f"ccci-gate tls: {exc}", file=sys.stderr)
        return 2
    return 0
