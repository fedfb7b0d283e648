"""The suite's proof that UTCP carried a run must be able to pass and to fail. The same server,
mstack-httpd, runs on UTCP (its own switch port from mstackd) and with --kernel; a connection
from the remote host is held open and the harness's hold checks judge both: UTCP passes the
proof, the kernel fails it (and the native probe, `ss`, sees the kernel's connection)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from compat_tests import harness
from compat_tests.py.common import Peer

pytestmark = pytest.mark.system

HTTPD = harness.BUILD / "bin" / "mstack-httpd"


def held_run(bed: harness.Bed, kernel: bool) -> harness.Run:
    port = bed.take_ports()
    root = Path(tempfile.mkdtemp(prefix="mst-compat-www-", dir=bed.work))
    (root / "x").write_bytes(b"x" * 100)
    argv = [str(HTTPD), "--listen", f"{bed.host.host_ip}:{port}", "--root", str(root),
            "--run-dir", str(bed.daemon.run_dir)] + (["--kernel"] if kernel else [])  # fmt: skip
    sc = harness.Scenario("c", "mstack-httpd" + (" --kernel" if kernel else ""), "server", True)
    before = harness._ingress(bed)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peer = Peer(str(bed.peer_ctl))
    try:
        assert p.stdout is not None
        lines = [p.stdout.readline().strip() for _ in range(2)]
        assert lines[-1] == "ready", lines
        peer.cmd(f"connect {port} g,ra")
        established = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not established:
            established = bed.host.run(
                ["ss", "-tnH", "state", "established", f"( dport = :{port} )"], check=False
            ).stdout.strip()
            time.sleep(0.05)
        assert established, "the peer's connection was not established"
        hold = harness.check_hold(bed, f"@hold pid={p.pid} lport={port} rport=0 conn=1")
        after = harness._ingress(bed)
        peer.go()
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
        peer.result(record=False)
        peer.sock.close()
    return harness.Run(sc, "shim", port, 0, [], [hold], "", "", before, after)


def test_proof_passes_for_utcp(compat_bed: harness.Bed) -> None:
    r = held_run(compat_bed, kernel=False)
    assert harness.utcp_proof_checks(r) == [], r.holds


def test_proof_fails_for_the_kernel(compat_bed: harness.Bed) -> None:
    r = held_run(compat_bed, kernel=True)
    problems = harness.utcp_proof_checks(r)
    assert any("the kernel holds the connection" in x for x in problems), problems
    assert any("mstackd has no port for this process" in x for x in problems), problems
    assert harness.native_proof_checks(r) == [], "natively, `ss` must see the connection"
