"""Autohold (Zuul's name): keep the app of the next failing run of a job deployed, for
an operator to debug, instead of tearing it down.

Vocabulary:

- **hold request**: what ``ccci-gate autohold --project P --job J [--change N]
  [--count 1] [--for 4h] [--reason TEXT]`` registers (``spec.HoldRequest``, stored by
  ``store.HoldStore`` in ``state/autohold.sqlite``). It **matches** a build of job ``J``
  of project ``P`` (and of change ``N``, when given) while it is *active*: not released
  and with holds left (``count`` minus those used).
- **held app**: the app of one failing build (FAILURE or TIMED_OUT) of a matching job
  that its worker kept deployed. Its worker host records it on the run's lease
  (``swarm.holds``); the gatekeeper lists it once the worker hands it over with the
  build's result.
- **expiry**: a held app is kept ``for`` seconds from the moment it was held (``--for``,
  default 4h; Zuul's ``node-hold-expiration``). A released request releases its held
  apps at once.
- **release**: the janitor of the worker host removes a held app once it has expired,
  or once the gatekeeper says it was released (``swarm.holds.ask_gatekeeper``).

The gatekeeper's parts are ``service.Autohold`` (the dispatcher wrapper adding
``CCCI_AUTOHOLD*`` parameters, taking held apps handed over, releasing, the periodic
check) and ``api`` (the HTTP routes); the CLI is ``commands/autohold.py``.
"""
