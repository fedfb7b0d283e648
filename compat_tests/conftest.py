"""compat_tests' conftest: the same test bed fixtures and session leak check as tests/conftest.py
(pythonpath includes tests/), plus the suite's own session-wide test bed and runner."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from compat_tests import harness
from mstack_testkit import mstackd, mstackd_factory  # noqa: F401
from testbed.fixtures import *  # noqa: F403
from testbed.leakcheck import *  # noqa: F403


@pytest.fixture(scope="session")
def compat_bed() -> Iterator[harness.Bed]:
    """One test bed for the whole suite: remote host, mstackd attached, the peer, the policy."""
    if os.geteuid() != 0:
        pytest.skip("the network test bed needs root")
    with harness.compat_bed_cm() as bed:
        yield bed


@pytest.fixture(scope="session")
def compat_runner(
    request: pytest.FixtureRequest, compat_bed: harness.Bed
) -> Iterator[harness.Runner]:
    selected = []
    for item in request.session.items:
        cs = getattr(item, "callspec", None)
        if cs is not None and isinstance(cs.params.get("sc"), harness.Scenario):
            selected.append(cs.params["sc"])
    r = harness.Runner(compat_bed, selected)
    try:
        yield r
    finally:
        r.close()
