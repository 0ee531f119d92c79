"""The pure core: model, job graph, layout values, events, actions and managers.

Nothing under this package does I/O or imports sockets, gear, docker, git,
subprocess or threading; ``tests/test_core_purity.py`` checks it.
"""
