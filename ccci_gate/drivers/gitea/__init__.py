"""The Gitea driver: webhooks and polling in (``connection``, ``payloads``), statuses and
comments out (``reporter``, through the ``store``'s outbox), merges via the API (``api``)."""
