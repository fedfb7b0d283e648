"""UTCP against the Linux kernel over a TAP device (issue 4's tap interop), both roles,
sha256-checked, by utcp_c/tools/tap_interop.sh in a private namespace it makes and removes.
8 MB each way in `make test`; MSTACK_FULL=1 moves 100 MB each way."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.long]

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
SIZE_MB = 100 if os.environ.get("MSTACK_FULL") == "1" else 8


def test_utcp_and_the_kernel_over_tap_both_ways() -> None:
    if not (BUILD / "bin" / "utcp-tapcat").exists():
        pytest.fail("utcp-tapcat is missing: run make build")
    out = subprocess.run(
        ["bash", str(REPO / "utcp_c/tools/tap_interop.sh"), str(BUILD), str(SIZE_MB)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("sha256 OK") == 2, out.stdout
    # The kernel's view of the connection UTCP accepted: the options were negotiated.
    view = out.stdout.split("kernel's view:", 1)[1].split("sha256", 1)[0]
    assert "ts" in view.split() and "sack" in view.split() and "wscale:" in view, view
