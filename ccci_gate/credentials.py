"""Per-build credentials the gatekeeper signs, and the one rule that keeps secrets out of logs.

Vocabulary:

- A **build credential** is ``HMAC-SHA256(key, "<purpose>:<subject>")`` in hex, where the
  key is the gatekeeper's secret kept in its state dir (``state/admin.token``), the
  purpose says what it allows and the subject is what it allows it for: ``result`` of a
  build id (``CCCI_RESULT_TOKEN``, ``handoff.py``), ``artifacts`` of a buildset id
  (``CCCI_ARTIFACTS_TOKEN``, ``web/artifacts.py``). It needs no table and survives a
  restart (same key, same token); a token of one purpose or subject is worth nothing for
  another. :meth:`Signer.check` compares in constant time and takes any text (a
  non-ASCII header is a refusal, not an exception).
- A **secret parameter** is a build parameter whose name contains one of
  :data:`SECRET_WORDS` (``CCCI_RESULT_TOKEN``, ``CCCI_ARTIFACTS_TOKEN``, a job's own
  ``DB_PASSWORD``...). Its value is handed to the build (a shell job gets it in its
  environment) and never shown: :func:`redact` replaces secret values in text (the
  worker's build log stream), :func:`redacted` replaces them in a parameter mapping (for
  anything that shows a build's parameters). This is the only redaction rule for build
  parameters; a new credential gets it by its name.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Iterable, Mapping

SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY")
MASK = "***"
MIN_SECRET = 4   # shorter values are not redacted (they would mask ordinary text)


def is_secret(name: str) -> bool:
    """Whether the parameter ``name`` holds a secret value."""
    return any(word in name.upper() for word in SECRET_WORDS)


def secret_values(params: Mapping[str, str]) -> list[str]:
    """The values of the secret parameters, longest first (so none is redacted in part)."""
    values = {str(v) for k, v in params.items() if is_secret(k) and len(str(v)) >= MIN_SECRET}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` (from :func:`secret_values`) masked."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def redacted(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with the value of every secret parameter masked."""
    return {k: (MASK if is_secret(k) else v) for k, v in params.items()}


def bearer(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Signer:
    """Signs and checks build credentials under one key."""

    def __init__(self, key: str):
        self._key = key.encode()

    def sign(self, purpose: str, subject: str) -> str:
        return hmac.new(self._key, f"{purpose}:{subject}".encode(), hashlib.sha256).hexdigest()

    def check(self, purpose: str, subject: str, given: str | None) -> bool:
        """Whether ``given`` is the credential for ``purpose`` of ``subject``."""
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"),
                                   self.sign(purpose, subject).encode())
