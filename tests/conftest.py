"""Root conftest: the test bed fixtures and the session-level leak check for every test."""

from mstack_testkit import mstackd, mstackd_factory  # noqa: F401
from testbed.fixtures import *  # noqa: F403
from testbed.leakcheck import *  # noqa: F403
