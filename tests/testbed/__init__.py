"""The network test bed: namespaces, veth pairs, an impairing L2 relay and a leak check.

Fixtures live in `testbed.fixtures`, the session leak check in `testbed.leakcheck`; both are
pulled into every test by tests/conftest.py.
"""
