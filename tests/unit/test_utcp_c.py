"""Runs UTCP's C tests (utcp_c/tests) in both builds: normal and ASan/UBSan.

One pytest test per C test case: each C test binary lists its cases with `--list` and
runs one by name.  A missing binary fails (it means the build is stale or absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctests import REPO, VARIANTS, cases, run_case

pytestmark = pytest.mark.unit

SOURCES = sorted(p.stem for p in (REPO / "utcp_c" / "tests").glob("test_*.c"))


@pytest.mark.parametrize(
    ("binary", "case"),
    cases((f"{v}-{b}", root / "tests" / b) for v, root in VARIANTS.items() for b in SOURCES),
)
def test_utcp_c(binary: Path, case: str | None) -> None:
    run_case(binary, case, "run `make build` (or `make utcp`) first")
