"""The differential socket-semantics suite (issue 6's acceptance): every scenario runs natively
and under `mstack-run` against the scripted peer on the remote host; the run under the shim must
show that UTCP carried it (no kernel connection in `ss` while it held the connection open, its
own switch port moved frames, a binding covers its port, the switch's counters rose), and both
runs' observations must be equal. While the shim has no UTCP, the shim half skips."""

from __future__ import annotations

import pytest

from compat_tests import harness

pytestmark = pytest.mark.system

RESULT_TIMEOUT_S = 600.0


def _params() -> list[object]:
    try:
        scs = harness.all_scenarios()
    except (OSError, ValueError) as e:
        return [pytest.param(None, id=f"scenarios-missing ({e.__class__.__name__})")]
    return [pytest.param(s, id=s.id) for s in scs]


@pytest.mark.parametrize("sc", _params())
def test_scenario(sc: harness.Scenario | None, compat_runner: harness.Runner) -> None:
    assert sc is not None, f"{harness.C_PROG} or {harness.PY_PROG} is missing: run make build"
    native_f, shim_f = compat_runner.get(sc)
    native = native_f.result(timeout=RESULT_TIMEOUT_S)
    problems = harness.own_checks(native) + harness.native_proof_checks(native)
    assert not problems, "\n".join(problems) + "\n" + native.describe()
    shim = shim_f.result(timeout=RESULT_TIMEOUT_S)
    problems = harness.own_checks(shim) + harness.utcp_proof_checks(shim)
    if sc.differential:
        problems += harness.compare(native, shim, sc.name)
    assert not problems, "\n".join(problems) + "\n" + shim.describe()
