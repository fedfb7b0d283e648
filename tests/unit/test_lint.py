"""ruff keeps the Python sources lint-clean and mypy the product code typed; either failing
fails `make test`."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_check() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "pymgmt",
            "daemon",
            "tests",
            "scripts",
            "bench",
            "compat_tests",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("paths", [["daemon/mstackd", "pymgmt/mstack"], ["bench"]], ids=str)
def test_mypy_on_the_product_code_and_the_benchmark(paths: list[str]) -> None:
    # The benchmark on its own: it imports mstackd as installed, not as daemon/mstackd.
    out = subprocess.run(
        [sys.executable, "-m", "mypy", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
