"""`python -m bench utcp` end to end in its smallest form (one repetition, 10 MB bulk runs,
0.2 s connection runs): every pairing — pair, tap and xdp, UTCP as client and as server, and the
kernel against itself over the test bed's veth — runs once and completes, the JSON follows the
schema (bench/utcp.py, docs/bench.md) and the table is printed, within a minute; like every
system test it leaves nothing behind (the session's leak check). Nothing is asserted about
speed: only that every run moved its bytes or made its connections without a failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import utcp  # noqa: E402


def test_smallest_utcp_bench_writes_valid_json(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the UTCP benchmark needs root")
    exe = BUILD / "bin" / "mstack-utcpbench"
    assert exe.exists(), f"{exe} missing: make -C bench/c BUILD={BUILD}"
    argv = [
        sys.executable, "-m", "bench", "utcp", "--quick", "--reps", "1", "--bulk-mb", "10",
        "--conns-seconds", "0.2", "--out", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stdout + out.stderr
    files = list(tmp_path.glob("utcp-*.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert utcp.validate(doc) == []
    assert doc["quick"] is True and doc["config"]["repetitions"] == 1
    kinds = {(r["bed"], r["system"], r["role"], r["metric"]) for r in doc["runs"]}
    want = {
        (bed, system, role, metric)
        for bed, system, roles in utcp.PAIRINGS
        for role in roles
        for metric in utcp.METRICS
    }
    assert kinds == want and len(doc["runs"]) == len(want)
    for r in doc["runs"]:
        assert r["ok"] and r["done"] >= 1 and r["failed"] == 0, r
    for r in doc["results"]:
        assert r["median"] and r["kernel_median"], r
    assert "conns" in out.stdout and "bulk" in out.stdout and "/kernel" in out.stdout
