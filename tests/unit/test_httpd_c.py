"""Runs mstack-httpd's C tests (httpd/tests) in both builds, normal and ASan/UBSan, and checks
the server's command line (usage errors, the UTCP mode's clear refusal) without a network.

One pytest test per C test case: each binary lists its cases with `--list` and runs one by
name.  A missing binary fails (the build is stale or absent), it is never skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctests import REPO, VARIANTS, cases, run, run_case

pytestmark = pytest.mark.unit

SOURCES = sorted(p.stem for p in (REPO / "httpd" / "tests").glob("test_*.c"))
EX_USAGE = 64
EX_NOINPUT = 66
EX_UNAVAILABLE = 69

_run = run


def test_every_source_has_cases() -> None:
    assert SOURCES, "no httpd/tests/test_*.c found"


@pytest.mark.parametrize(
    ("binary", "case"),
    cases(
        (f"{v}-{b}", root / "tests" / "httpd" / b) for v, root in VARIANTS.items() for b in SOURCES
    ),
)
def test_httpd_c(binary: Path, case: str | None) -> None:
    run_case(binary, case, "build httpd (make build, or make -C httpd) first")


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
