"""Runs the C tests of libmsctl (utcp_c/ctl/tests) and of mstack-responder's frame logic
(utcp_c/tools/tests) in both builds, normal and ASan/UBSan, and checks the responder's
command line without a daemon.

One pytest test per C test case: each binary lists its cases with `--list` and runs one by
name.  A missing binary fails (the build is stale or absent), it is never skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctests import REPO, VARIANTS, cases, run, run_case

pytestmark = pytest.mark.unit

# (source directory of the test_*.c files, directory of the binaries under a build)
SUITES = {"ctl": REPO / "utcp_c" / "ctl" / "tests", "tools": REPO / "utcp_c" / "tools" / "tests"}
EX_USAGE = 64


def _binaries() -> list[tuple[str, Path]]:
    return [
        (f"{variant}-{suite}-{p.stem}", root / "tests" / suite / p.stem)
        for variant, root in VARIANTS.items()
        for suite, src in SUITES.items()
        for p in sorted(src.glob("test_*.c"))
    ]


_run = run


@pytest.mark.parametrize(("binary", "case"), cases(_binaries()))
def test_ctl_c(binary: Path, case: str | None) -> None:
    run_case(binary, case, "build utcp_c/ctl and utcp_c/tools first")


def _responder(variant: str) -> Path:
    path = VARIANTS[variant] / "bin" / "mstack-responder"
    if not path.exists():
        pytest.fail(f"{path} is missing: build utcp_c/tools first")
    return path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_responder_usage(variant: str) -> None:
    exe = str(_responder(variant))
    proc = _run([exe, "--help"], 30)
    assert proc.returncode == 0
    assert "--listen" in proc.stdout
    for bad in (
        [],
        ["--listen", "10.0.0.1"],
        ["--listen", "10.0.0.300:80"],
        ["--listen", "10.0.0.1:70000"],
        ["--listen", "10.0.0.1:80", "--max-seconds", "x"],
        ["--listen", "10.0.0.1:80", "--bogus"],
    ):
        proc = _run([exe, *bad], 30)
        assert proc.returncode == EX_USAGE, (bad, proc.stderr)
        assert proc.stderr.strip(), bad


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_responder_no_daemon(variant: str, tmp_path: Path) -> None:
    """No app.sock in the run directory: a clear message and a non-zero exit, no "ready"."""
    exe = str(_responder(variant))
    proc = _run([exe, "--run-dir", str(tmp_path), "--listen", "127.0.0.1:0"], 30)
    assert proc.returncode not in (0, EX_USAGE), proc.stderr
    assert "ready" not in proc.stdout
    assert "connect" in proc.stderr and str(tmp_path) in proc.stderr
