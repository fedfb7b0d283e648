"""10,000 short connections in a row between UTCP and the Linux kernel (issue 4's acceptance),
UTCP in both roles, each connection a 64-byte request, a 64-byte response and a close by UTCP,
so that every one of them passes through UTCP's TIME-WAIT. Once TIME-WAIT has expired (10 ms in
the stack's config here), the stack's control blocks in use and its TIME-WAIT entries (a
connection entering TIME-WAIT leaves a compact entry and frees its block) are back to their
baseline, none was recycled early, the memory the stack allocated is unchanged, and the
process's RSS has not grown beyond a small bound.

Over `tap`, not `xdp`: this criterion is about UTCP's own bookkeeping, and a TAP device in the
test bed's remote namespace puts UTCP face to face with the kernel without mstackd's bindings,
leases and switch in the count (the xdp backend's connection churn is measured by
`python -m bench utcp`); the tap also leaves the whole ephemeral range to UTCP's active opens,
where an mstackd lease caps it at a block. mstack-utcpbench (bench/c) plays both ends: over
UTCP on the tap, and over the kernel's sockets in the same namespace.

The RSS bound: the stack allocates everything at creation and the pages of a control block
become resident when first used, so RSS rises while more blocks than ever before are in use at
once. Each run is a warm-up of 5,000 connections, settled, then the 10,000 (100,000 with
MSTACK_FULL=1): RSS after them may exceed RSS after the warm-up by at most 4 MB (~450 control
blocks with their buffers touched for the first time), and the RSS before any connection by no
more than the stack's own allocation plus 4 MB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.netns import RemoteHost, lease_subnet

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.switch import Tool  # noqa: E402  (the line-protocol driver of the bench's C tools)
from bench.utcp import TapEnd, add_tap  # noqa: E402

pytestmark = [pytest.mark.system, pytest.mark.long]

BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
FULL = os.environ.get("MSTACK_FULL") == "1"
COUNT = 100_000 if FULL else 10_000
WARMUP = 5_000
TIME_WAIT_MS = 10
MAX_CONNS = 4096  # blocks in TIME-WAIT at ~20k connections/s stay well below it
BUF = 4096
RSS_SLACK_KB = 4096
UMAC = "02:00:00:75:00:02"
TAP = "utcpchurn0"


@pytest.fixture
def tap_bed(remote_host: RemoteHost) -> Iterator[TapEnd]:
    """A TAP device in the remote host's namespace (gone with it), addressed from a leased
    test bed /24: the kernel's end .1, UTCP .2 (bench/utcp.py's add_tap)."""
    lease = lease_subnet()
    try:
        yield add_tap(remote_host.ns, TAP, lease, UMAC)
    finally:
        lease.release()


def tool() -> str:
    exe = BUILD / "bin" / "mstack-utcpbench"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run make build (bench/c)")
    return str(exe)


def utcp_args(bed: TapEnd) -> list[str]:
    return [
        "--backend", "tap", "--dev", bed.dev, "--ip", bed.utcp_ip, "--mac", bed.utcp_mac,
        "--gw-mac", bed.kernel_mac, "--max-conns", str(MAX_CONNS), "--buf", str(BUF),
        "--time-wait-ms", str(TIME_WAIT_MS), "--max-seconds", "600",
    ]  # fmt: skip


def client(bed: TapEnd, *argv: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ip", "netns", "exec", bed.ns, tool(), *argv],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, f"client exited {out.returncode}: {out.stdout}{out.stderr}"
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def check_back_to_baseline(
    role: str, base: dict[str, Any], warm: dict[str, Any], end: dict[str, Any], baseline: int
) -> None:
    print(
        f"UTCP as {role}: conns_in_use {base['conns_in_use']} -> {end['conns_in_use']}, "
        f"TIME-WAIT entries {base['time_wait_in_use']} -> {end['time_wait_in_use']} "
        f"(baseline {baseline}); stack memory {base['stack_memory']} -> {end['stack_memory']} B "
        f"({end['conn_memory']} B per connection); RSS {base['rss_kb']} kB before, "
        f"{warm['rss_kb']} kB after the warm-up, {end['rss_kb']} kB after {COUNT}; "
        f"drops {end['drop_reasons']}, RSTs in {end['rst_in']} out {end['rst_out']}"
    )
    assert end["conns_in_use"] == base["conns_in_use"], end
    assert end["conns_in_use"] + end["time_wait_in_use"] == baseline, end
    assert end["time_wait_recycled"] == 0, end
    assert end["stack_memory"] == base["stack_memory"], (base, end)
    assert end["rss_kb"] - warm["rss_kb"] <= RSS_SLACK_KB, (warm, end)
    assert end["rss_kb"] - base["rss_kb"] <= base["stack_memory"] // 1024 + RSS_SLACK_KB, (
        base,
        end,
    )
    assert end["timeouts"] == warm["timeouts"] == 0, end


def test_utcp_server_kernel_client_10000_connections(tap_bed: TapEnd, tmp_path: Path) -> None:
    """UTCP serves, the kernel connects; UTCP closes first (HTTP/1.0 style)."""
    bed = tap_bed
    ns = ["ip", "netns", "exec", bed.ns]
    srv = Tool([*ns, tool(), *utcp_args(bed), "serve", "7000"], "utcp-server", tmp_path)
    try:
        assert srv.readline() == "ready", srv.stderr()
        base = srv.json_cmd("stats")
        kargs = ["--ip", bed.kernel_ip, "conns", bed.utcp_ip, "7000"]
        w = client(bed, *kargs, "--count", str(WARMUP))
        warm = srv.json_cmd("settle 5000")
        c = client(bed, *kargs, "--count", str(COUNT))
        end = srv.json_cmd("settle 5000")
    finally:
        rc = srv.close()
    assert w["done"] == WARMUP and c["done"] == COUNT and c["failed"] == 0, c
    print(f"kernel client: {COUNT} connections in {c['seconds']:.2f} s")
    assert end["done"] == WARMUP + COUNT and end["failed"] == 0, end
    assert end["stack"]["passive_opens"] == WARMUP + COUNT, end
    check_back_to_baseline(
        "server", base["stack"], warm["stack"], end["stack"], base["baseline_conns_in_use"]
    )
    assert rc == 0, srv.stderr()


def test_utcp_client_kernel_server_10000_connections(tap_bed: TapEnd, tmp_path: Path) -> None:
    """The kernel serves, UTCP connects and closes first (its own TIME-WAIT, its own ports)."""
    bed = tap_bed
    ns = ["ip", "netns", "exec", bed.ns]
    srv = Tool([*ns, tool(), "--ip", bed.kernel_ip, "serve", "7001"], "kernel-server", tmp_path)
    try:
        assert srv.readline() == "ready", srv.stderr()
        c = client(
            bed, *utcp_args(bed), "conns", bed.kernel_ip, "7001", "--count", str(COUNT),
            "--warmup", str(WARMUP), "--client-closes",
        )  # fmt: skip
        served = srv.json_cmd("stats")
    finally:
        rc = srv.close()
    assert c["done"] == COUNT and c["failed"] == 0 and c["warmup_done"] == WARMUP, c
    print(f"UTCP client: {COUNT} connections in {c['seconds']:.2f} s")
    assert served["done"] == WARMUP + COUNT and served["failed"] == 0, served
    assert c["settled"]["active_opens"] == WARMUP + COUNT, c
    check_back_to_baseline(
        "client", c["before"], c["warm"], c["settled"], c["baseline_conns_in_use"]
    )
    assert rc == 0, srv.stderr()
