"""Running the project's C test binaries from pytest: each binary lists its cases with `--list`
and runs one by name; every case becomes one pytest test, in the normal and the ASan/UBSan
build. A missing binary fails (the build is stale or absent), it never skips."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
VARIANTS = {"normal": BUILD, "asan": BUILD / "asan"}
CASE_TIMEOUT = 300


def sanitizer_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=sanitizer_env()
    )


def cases(binaries: Iterable[tuple[str, Path]]) -> list[Any]:
    """pytest params (binary, case) for every case of every (id tag, binary path)."""
    params = []
    for tag, path in binaries:
        if not path.exists():
            params.append(pytest.param(path, None, id=f"{tag}-missing"))
            continue
        try:
            out = run([str(path), "--list"], 60)
            out.check_returncode()
        except (subprocess.SubprocessError, OSError) as exc:
            params.append(pytest.param(path, f"!{exc}", id=f"{tag}-unlistable"))
            continue
        for case in out.stdout.split():
            params.append(pytest.param(path, case, id=f"{tag}-{case}"))
    return params


def run_case(binary: Path, case: str | None, build_hint: str) -> None:
    """One C test case; fails with its output (or with how to build a missing binary)."""
    if case is None:
        pytest.fail(f"{binary} is missing: {build_hint}")
    if case.startswith("!"):
        pytest.fail(f"{binary} --list failed: {case[1:]}")
    proc = run([str(binary), case], CASE_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(
            f"{binary} {case} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
