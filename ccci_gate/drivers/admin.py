"""The ``admin`` driver: operators enqueue through the CLI and the admin API.

``trigger: {admin: []}`` marks a pipeline operators may feed; operator requests
(``EnqueueRequest``) go straight to the named pipeline, so the driver has no filters
and no connection.
"""
from __future__ import annotations

import voluptuous as v

from .base import Driver

DRIVER = Driver(
    name="admin",
    description="operator requests from the CLI and the admin API",
    trigger_schema=v.All(v.Any(None, [], msg="admin takes no filters: write `admin: []`"),
                         lambda value: []),
    filters=lambda value: ())
