"""Runs mstack-httpd's C tests (httpd/tests) in both builds, normal and ASan/UBSan, and checks
the server's command line (usage errors, the UTCP mode's clear refusal) without a network.

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
SOURCES = sorted(p.stem for p in (REPO / "httpd" / "tests").glob("test_*.c"))
CASE_TIMEOUT = 120
EX_USAGE = 64
EX_NOINPUT = 66
EX_UNAVAILABLE = 69


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def _cases() -> list:
    params = []
    for variant, root in VARIANTS.items():
        for binary in SOURCES:
            path = root / "tests" / "httpd" / binary
            tag = f"{variant}-{binary}"
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


def test_every_source_has_cases() -> None:
    assert SOURCES, "no httpd/tests/test_*.c found"


@pytest.mark.parametrize(("binary", "case"), _cases())
def test_httpd_c(binary: Path, case: str | None) -> None:
    if case is None:
        pytest.fail(f"{binary} is missing: build httpd (make build, or make -C httpd) first")
    if case.startswith("!"):
        pytest.fail(f"{binary} --list failed: {case[1:]}")
    proc = _run([str(binary), case], CASE_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(
            f"{binary} {case} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )


def _httpd(variant: str) -> Path:
    path = VARIANTS[variant] / "bin" / "mstack-httpd"
    if not path.exists():
        pytest.fail(f"{path} is missing: build httpd (make build, or make -C httpd) first")
    return path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_httpd_usage(variant: str, tmp_path: Path) -> None:
    exe = str(_httpd(variant))
    proc = _run([exe, "--help"], 30)
    assert proc.returncode == 0
    assert "--listen" in proc.stdout and "--kernel" in proc.stdout
    root = str(tmp_path)
    for bad in (
        [],
        ["--root", root, "--kernel"],
        ["--listen", "127.0.0.1:80", "--kernel"],
        ["--listen", "127.0.0.1", "--root", root, "--kernel"],
        ["--listen", "127.0.0.300:80", "--root", root, "--kernel"],
        ["--listen", "127.0.0.1:70000", "--root", root, "--kernel"],
        ["--listen", "127.0.0.1:-1", "--root", root, "--kernel"],
        ["--listen", "[::1]:80", "--root", root, "--kernel"],
        ["--listen", "127.0.0.1:80", "--root", root, "--kernel", "--max-conns", "0"],
        ["--listen", "127.0.0.1:80", "--root", root, "--kernel", "--bogus"],
        ["--listen", "127.0.0.1:80", "--root", root, "--kernel", "extra"],
    ):
        proc = _run([exe, *bad], 30)
        assert proc.returncode == EX_USAGE, (bad, proc.stderr)
        assert proc.stderr.strip(), bad
        assert "ready" not in proc.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_httpd_utcp_mode_without_a_daemon(variant: str, tmp_path: Path) -> None:
    """Without --kernel the server runs on UTCP: with no mstackd to give it a port, it exits
    EX_UNAVAILABLE and says so."""
    exe = str(_httpd(variant))
    proc = _run([exe, "--listen", "127.0.0.1:0", "--root", str(tmp_path),
                 "--run-dir", str(tmp_path / "no-daemon")], 30)  # fmt: skip
    assert proc.returncode == EX_UNAVAILABLE, proc.stderr
    assert "mstackd" in proc.stderr
    assert "ready" not in proc.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_httpd_bad_root(variant: str, tmp_path: Path) -> None:
    exe = str(_httpd(variant))
    missing = tmp_path / "nope"
    proc = _run([exe, "--listen", "127.0.0.1:0", "--root", str(missing), "--kernel"], 30)
    assert proc.returncode == EX_NOINPUT, proc.stderr
    assert str(missing) in proc.stderr
    assert "ready" not in proc.stdout
