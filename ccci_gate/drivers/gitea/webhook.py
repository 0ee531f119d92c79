"""Webhooks in: ``POST /webhooks/<connection>``, checked, parsed and queued at once.

``X-Gitea-Signature`` is the hex HMAC-SHA256 of the raw body, compared in constant
time (a signature that is not ASCII is simply wrong); a payload over the size limit,
unsigned, badly signed, malformed (JSON nested too deep included) or unusable gets a
4xx and nothing is queued. An accepted hook is queued durably (the connection's
store) before the 202 answer; a redelivery (same ``X-Gitea-Delivery``) of an accepted
hook is dropped. The receiver never calls Gitea: what needs the API happens on the
connection's event thread.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Callable

from ...web.routes import Request, Response
from .payloads import Hook, PayloadError, parse

log = logging.getLogger("ccci_gate.drivers.gitea")


def verify_signature(secret: str, body: bytes, signature: str) -> bool:
    """Gitea's ``X-Gitea-Signature``: lowercase hex HMAC-SHA256 of the raw body."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = signature.strip().lower()
    if not given.isascii():      # compare_digest refuses non-ASCII text: no hex digest anyway
        return False
    return hmac.compare_digest(expected, given)


class WebhookReceiver:
    """Turns one webhook request into a queued :class:`Hook` (or a 4xx)."""

    def __init__(self, secret: str, max_payload: int, submit: Callable[[Hook, str], bool]):
        self.secret = secret
        self.max_payload = max_payload
        self.submit = submit

    def handle(self, request: Request) -> Response:
        """Check, parse and queue one webhook; never raises, never blocks on Gitea."""
        if not self.secret:
            return Response.error(403, "this connection has no webhook secret configured")
        signature = request.header("X-Gitea-Signature")
        if not signature:
            log.warning("webhook from %s without X-Gitea-Signature refused", request.client)
            return Response.error(401, "missing X-Gitea-Signature")
        if len(request.body) > self.max_payload:
            return Response.error(413, f"payload over {self.max_payload} bytes")
        if not verify_signature(self.secret, request.body, signature):
            log.warning("webhook from %s with a bad signature refused", request.client)
            return Response.error(403, "bad X-Gitea-Signature")
        try:
            payload = json.loads(request.body.decode("utf-8"))
            hook = parse(request.header("X-Gitea-Event"), payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("webhook with malformed JSON refused: %s", exc)
            return Response.error(400, f"malformed JSON: {exc}")
        except RecursionError:
            log.warning("webhook with JSON nested too deep refused")
            return Response.error(400, "malformed JSON: nested too deep")
        except PayloadError as exc:
            log.warning("webhook %s refused: %s", request.header("X-Gitea-Event"), exc)
            return Response.error(422, str(exc))
        if hook.event == "ignored":
            log.info("webhook ignored: %s", hook.why_ignored)
            return Response.json({"accepted": False, "reason": hook.why_ignored}, 200)
        if not self.submit(hook, request.header("X-Gitea-Delivery")):
            return Response.json({"accepted": False, "reason": "duplicate delivery"}, 200)
        return Response.json({"accepted": True}, 202)
