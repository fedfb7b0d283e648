"""Runs UTCP's C tests (utcp_c/tests) in both builds: normal and ASan/UBSan.

One pytest test per C test case: each C test binary lists its cases with `--list` and
runs one by name.  A missing binary fails (it means the build is stale or absent).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
VARIANTS = {"normal": BUILD / "tests", "asan": BUILD / "asan" / "tests"}
SOURCES = sorted(p.stem for p in (REPO / "utcp_c" / "tests").glob("test_*.c"))
CASE_TIMEOUT = 300


def _cases() -> list:
    params = []
    for variant, tdir in VARIANTS.items():
        for binary in SOURCES:
            path = tdir / binary
            if not path.exists():
                params.append(pytest.param(variant, path, None, id=f"{variant}-{binary}-missing"))
                continue
            try:
                out = subprocess.run(
                    [str(path), "--list"], capture_output=True, text=True, timeout=60, check=True
                ).stdout
            except (subprocess.SubprocessError, OSError) as exc:
                params.append(
                    pytest.param(variant, path, f"!{exc}", id=f"{variant}-{binary}-unlistable")
                )
                continue
            for case in out.split():
                params.append(pytest.param(variant, path, case, id=f"{variant}-{binary}-{case}"))
    return params


@pytest.mark.parametrize(("variant", "binary", "case"), _cases())
def test_utcp_c(variant: str, binary: Path, case: str | None) -> None:
    if case is None:
        pytest.fail(f"{binary} is missing: run `make build` (or `make utcp`) first")
    if case.startswith("!"):
        pytest.fail(f"{binary} --list failed: {case[1:]}")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    proc = subprocess.run(
        [str(binary), case], capture_output=True, text=True, timeout=CASE_TIMEOUT, env=env
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{binary.name} {case} ({variant}) exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
