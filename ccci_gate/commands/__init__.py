"""Subcommands of ``ccci-gate`` beyond the core ones in ``cli.py``, one module per topic.

Each module defines ``register(sub)`` that adds its parsers to the ``argparse``
sub-parser group and sets ``func=`` on each (``cli.main`` calls ``args.func(args)`` when a
parser has one). Shared client helpers (``--url``, the admin token) stay in ``cli.py``.
"""
