"""Who may do what on the embedded Gearman server, by certificate common name.

With TLS on, ``gear.Server`` admits only certificates of the pool's CA (``pki.py``)
and asks this ACL before a connection registers a function (CAN_DO) or submits or
cancels a job:

- ``ccci-gatekeeper`` may submit anything, and register build and stop functions
  (the gatekeeper's own local worker shares its certificate);
- ``worker:<name>`` may register ``build:*`` and ``stop:*`` functions, and submit
  nothing;
- anyone else may do neither.

gear's own ``ACL`` matches subjects exactly; worker names are many, so this one
matches the ``worker:`` prefix.
"""
from __future__ import annotations

import re

import gear

from ..pki import GATEKEEPER, WORKER_PREFIX

WORKER_FUNCTIONS = re.compile(r"^(build|stop):[^\s]+$")


class PoolACL(gear.ACL):
    """The pool's fixed rules; ``acl grant``/``revoke`` admin commands change nothing."""

    def canRegister(self, subject, name):  # noqa: N802 - gear's name
        return bool(subject) and (subject == GATEKEEPER or subject.startswith(WORKER_PREFIX)) \
            and bool(WORKER_FUNCTIONS.match(_text(name)))

    def canInvoke(self, subject, name):  # noqa: N802 - gear's name
        return subject == GATEKEEPER

    def canGrant(self, subject):  # noqa: N802 - gear's name
        return False


def _text(name) -> str:
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
