"""README.md's scenario list is the scenario table: `python -m compat_tests.harness readme`
rewrites it; this test fails while it is out of step."""

from __future__ import annotations

import pytest

from compat_tests import harness

pytestmark = pytest.mark.unit


def test_readme_lists_every_scenario() -> None:
    if not harness.C_PROG.exists():
        pytest.fail(f"{harness.C_PROG} is missing: run make build")
    want = harness.readme_list(harness.all_scenarios())
    assert want in harness.README.read_text(), (
        "compat_tests/README.md's scenario list is stale: run "
        "`python -m compat_tests.harness readme`"
    )


def test_at_least_60_scenarios_in_c_and_python() -> None:
    scs = harness.all_scenarios()
    assert len(scs) >= 60
    assert {s.lang for s in scs} == {"c", "py"}
    assert len({s.id for s in scs}) == len(scs), "scenario names are unique"
