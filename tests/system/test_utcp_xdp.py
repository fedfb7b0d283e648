"""UTCP on a port from mstackd, through the switch, against the Linux kernel on the remote host
(issue 4's xdp interop): utcp-xdpcat in both roles, sha256-checked, directly and through the
test bed's impairing relay (3% loss, 25% reordering, 1% duplication, 5 ms delay — outside the
system under test). Reduced sizes in `make test`; MSTACK_FULL=1 moves 100 MB each way and adds
the runs through the relay."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mstack_testkit import Mstackd

pytestmark = [pytest.mark.system, pytest.mark.long]

BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
FULL = os.environ.get("MSTACK_FULL") == "1"
SIZE = 100_000_000 if FULL else 8_000_000
SIZE_IMPAIRED = 100_000_000 if FULL else 3_000_000
IMPAIRMENT = {"loss": 0.03, "reorder": 0.25, "dup": 0.01, "delay_ms": 5, "seed": 7}

SENDER = r"""
import hashlib, socket, subprocess, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
s = socket.create_connection((host, port), timeout=60)
# What the kernel negotiated with UTCP: TCP_INFO, what `ss -tni` reads (Debian 12's ss does
# not print ts/sack on this kernel, even between two kernel sockets: tcpi_options is exact).
ti = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
ss = subprocess.run(["ss", "-tni", "dst", host], capture_output=True, text=True).stdout
print("OPTS", ti[5], ti[6] & 15, ti[6] >> 4, " ".join(ss.split()))
s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.settimeout(120)
while s.recv(65536):
    pass
print("ok")
"""

# A kernel server that reads everything, then sends back what it read (an echo after EOF),
# then closes: UTCP's connect role receives exactly what it sent.
ECHO_AFTER_EOF = r"""
import socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(1)
print("ready", flush=True)
ls.settimeout(60)
c, _ = ls.accept()
c.settimeout(120)
buf = bytearray()
while chunk := c.recv(1 << 16):
    buf += chunk
c.sendall(buf)
c.close()
print(len(buf), flush=True)
"""


@pytest.fixture
def payload() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mst-data-"))
    d.chmod(0o755)
    f = d / "payload"
    with open(f, "wb") as out:
        left = max(SIZE, SIZE_IMPAIRED)
        while left:
            n = min(left, 1 << 20)
            out.write(os.urandom(n))
            left -= n
    try:
        yield f
    finally:
        f.unlink()
        d.rmdir()


def sha(path: Path, n: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(n))
    return h.hexdigest()


def xdpcat(d: Mstackd, ip: str, *args: str, stdin=None, stdout=None) -> subprocess.Popen:  # type: ignore[no-untyped-def,type-arg]
    exe = BUILD / "bin" / "utcp-xdpcat"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run make build")
    p = subprocess.Popen([str(exe), "--run-dir", str(d.run_dir), "--ip", ip,
                          "--max-seconds", "300", *args],
                         stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stderr is not None
    assert p.stderr.readline().strip() == b"ready"
    return p


def utcp_receives(d: Mstackd, host, payload: Path, n: int, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    part = tmp / "part"
    part.write_bytes(payload.read_bytes()[:n])
    part.parent.chmod(0o755)
    part.chmod(0o644)
    out = tmp / "received"
    with open(out, "wb") as f:
        p = xdpcat(d, host.host_ip, "listen", "9000", stdout=f)
        t = time.monotonic()
        r = host.python(SENDER, host.host_ip, "9000", str(part), timeout=600, check=False)
        if r.returncode != 0 or not r.stdout.strip().endswith("ok"):
            p.kill()
            _, err = p.communicate(timeout=30)
            pytest.fail(f"kernel sender: {r.stdout}{r.stderr}\nutcp-xdpcat: {err.decode()}")
        opts, snd_ws, rcv_ws, ss = r.stdout.splitlines()[0].split(maxsplit=4)[1:]
        # The kernel peer negotiated timestamps (1), SACK (2) and window scaling (4) with UTCP,
        # and ss shows the scales it uses both ways.
        assert int(opts) == 7 and f"wscale:{snd_ws},{rcv_ws}" in ss, r.stdout
        assert p.wait(120) == 0, p.stderr.read() if p.stderr else ""
    elapsed = time.monotonic() - t
    assert sha(out, n) == sha(part, n) and out.stat().st_size == n
    print(f"UTCP received {n} bytes from the kernel in {elapsed:.2f} s")


def utcp_sends(d: Mstackd, host, payload: Path, n: int, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    srv = host.python_popen(ECHO_AFTER_EOF, host.remote_ip, "9001", ready="ready")
    part = tmp / "part"
    part.write_bytes(payload.read_bytes()[:n])
    out = tmp / "echoed"
    with open(part, "rb") as fin, open(out, "wb") as fout:
        p = xdpcat(d, host.host_ip, "connect", host.remote_ip, "9001", stdin=fin, stdout=fout)
        assert p.wait(600) == 0, p.stderr.read() if p.stderr else ""
    srv_out, _ = srv.communicate(timeout=60)
    assert srv_out.strip().splitlines()[-1] == str(n)
    assert sha(out, n) == sha(part, n)


def test_utcp_receives_from_the_kernel(mstackd: Mstackd, payload: Path, tmp_path: Path) -> None:
    utcp_receives(mstackd, mstackd.host, payload, SIZE, tmp_path)


def test_utcp_sends_to_the_kernel(mstackd: Mstackd, payload: Path, tmp_path: Path) -> None:
    utcp_sends(mstackd, mstackd.host, payload, SIZE, tmp_path)


@pytest.fixture
def impaired_mstackd(impaired_remote_host, mstackd_factory) -> Mstackd:  # type: ignore[no-untyped-def]
    return mstackd_factory(impaired_remote_host(**IMPAIRMENT))  # type: ignore[no-any-return]


@pytest.mark.skipif(
    not FULL,
    reason="through the relay: MSTACK_FULL=1 (make test-full); one rare failure of the kernel "
    "sender is under investigation, and make test must not depend on it",
)
def test_through_the_impairing_relay_both_ways(
    impaired_mstackd: Mstackd, payload: Path, tmp_path: Path
) -> None:
    d = impaired_mstackd
    utcp_receives(d, d.host, payload, SIZE_IMPAIRED, tmp_path)
    (tmp_path / "part").unlink()
    utcp_sends(d, d.host, payload, SIZE_IMPAIRED, tmp_path)
    assert d.host is not None
    st = d.host.relay_stats()  # type: ignore[attr-defined]
    assert st.to_remote.dropped > 0 and st.to_host.dropped > 0  # the impairment was real
