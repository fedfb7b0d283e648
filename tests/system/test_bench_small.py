"""`python -m bench switch` end to end in its smallest form (one frame size, one port, one
repetition, short runs, a small attach-cost transfer): it runs to the end within two minutes,
writes JSON that follows the schema (bench/schema.py, docs/bench.md), prints its table, and —
like every system test — leaves nothing behind (the session's leak check). Nothing is
asserted about speed: only that frames went each way and the figures are consistent."""

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

from bench import schema  # noqa: E402


@pytest.mark.parametrize("variant", ["normal", "asan"])
def test_quick_switch_bench_writes_valid_json(tmp_path: Path, variant: str) -> None:
    """The ASan/UBSan build of mstack-swbench plays every part once too (leaks fail it)."""
    if os.geteuid() != 0:
        pytest.skip("the switch benchmark needs root")
    build = BUILD if variant == "normal" else BUILD / "asan"
    exe = build / "bin" / "mstack-swbench"
    san = " SAN=1" if variant == "asan" else ""
    assert exe.exists(), f"{exe} missing: make -C bench/c BUILD={build}{san}"
    env = {**os.environ, "MSTACK_BENCH_BUILD": str(build)}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    argv = [
        sys.executable, "-m", "bench", "switch", "--quick", "--sizes", "64", "--attached", "1",
        "--used", "1", "--reps", "1", "--seconds", "0.2", "--bulk-mb", "10", "--bulk-reps", "1",
        "--out", str(tmp_path), "--no-plot",
    ]  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=110, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    files = list(tmp_path.glob("switch-*.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert schema.validate(doc) == []
    assert doc["quick"] is True and doc["config"]["sizes"] == [64]
    # One run each: both directions, switch and limit line, and port -> NIC with the XDP egress
    # fast path on too (the sink's XDP program lets its probe pass); frames went every way.
    kinds = {(r["direction"], r["system"]) for r in doc["runs"]}
    assert kinds == {
        ("nic_to_port", "switch"), ("nic_to_port", "limit_xdp_drop"),
        ("port_to_nic", "switch"), ("port_to_nic", "switch_xdp"), ("port_to_nic", "limit_xsk_tx"),
    }  # fmt: skip
    for r in doc["runs"]:
        assert r["delivered"] > 0 and r["sent"] > 0, r
        assert r["delivered"] <= r["switched"] <= r["sent"], r
        if r["system"] == "switch" and r["direction"] == "nic_to_port":
            assert r["detail"]["ports_hit"] == 1
            # The frames the switch redirected reached the port's XSK (taken or dropped there);
            # a loaded machine may drop a few on the veth ring between the two.
            assert 0.99 * r["detail"]["switch_to_port"] <= r["switched"], r
            assert r["switched"] <= r["detail"]["switch_to_port"], r
        if r["system"] == "switch_xdp":
            # Its frames left by the fast path (the first few by TC, until the next hop was
            # cached), and the default runs' did not.
            assert 0 < r["detail"]["egress_fast"] <= r["detail"]["egress_sent"], r
            assert r["detail"]["egress_dropped"] == 0, r
        if r["system"] == "switch" and r["direction"] == "port_to_nic":
            assert r["detail"]["egress_fast"] == 0, r
            # The egress check let every frame out, and (but for a veth ring overflowing on a
            # loaded machine) every one reached the remote end.
            assert r["detail"]["egress_dropped"] == 0, r
            assert r["delivered"] <= r["detail"]["egress_sent"] <= r["sent"], r
            assert r["delivered"] >= 0.99 * r["sent"], r
    ac = doc["attach_cost"]
    assert ac["repetitions"] == 1 and ac["mode"] in ("native", "generic")
    assert "nic_to_port" in out.stdout and "attach cost" in out.stdout
