"""ruff keeps the Python sources lint-clean; a lint error fails `make test`."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_check() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "pymgmt", "daemon", "tests", "scripts", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
