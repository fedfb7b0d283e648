"""Runs the C tests of libmsctl (utcp_c/ctl/tests) and of mstack-responder's frame logic
(utcp_c/tools/tests) in both builds, normal and ASan/UBSan, and checks the responder's
command line without a daemon.

One pytest test per C test case: each binary lists its cases with `--list` and runs one by
name.  A missing binary fails (the build is stale or absent), it is never skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
VARIANTS = {"normal": BUILD, "asan": BUILD / "asan"}
# (source directory of the test_*.c files, directory of the binaries under a build)
SUITES = {"ctl": REPO / "utcp_c" / "ctl" / "tests", "tools": REPO / "utcp_c" / "tools" / "tests"}
CASE_TIMEOUT = 120
EX_USAGE = 64


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def _cases() -> list:
    params = []
    for variant, root in VARIANTS.items():
        for suite, src in SUITES.items():
            for binary in sorted(p.stem for p in src.glob("test_*.c")):
                path = root / "tests" / suite / binary
                tag = f"{variant}-{suite}-{binary}"
                if not path.exists():
                    params.append(pytest.param(path, None, id=f"{tag}-missing"))
                    continue
                try:
                    out = subprocess.run(
                        [str(path), "--list"],
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=True,
                        env=_env(),
                    ).stdout
                except (subprocess.SubprocessError, OSError) as exc:
                    params.append(pytest.param(path, f"!{exc}", id=f"{tag}-unlistable"))
                    continue
                for case in out.split():
                    params.append(pytest.param(path, case, id=f"{tag}-{case}"))
    return params


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.mark.parametrize(("binary", "case"), _cases())
def test_ctl_c(binary: Path, case: str | None) -> None:
    if case is None:
        pytest.fail(f"{binary} is missing: build utcp_c/ctl and utcp_c/tools first")
    if case.startswith("!"):
        pytest.fail(f"{binary} --list failed: {case[1:]}")
    proc = _run([str(binary), case], CASE_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(
            f"{binary} {case} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )


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
