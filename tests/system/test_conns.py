"""`mstackctl conns`: connections of user-level stacks, read from the statistics regions the
stacks hand mstackd (utcp_c/include/mstack_stats.h). A real UTCP connection (two stacks over
the pair backend, published by stats_pair) shows with its state, congestion control, RTT and
options; a region that lies about itself is reported as an error, never trusted."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from mstack_testkit import Mstackd
from mstackd.abi import consts, ffi

pytestmark = pytest.mark.system

BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))


@pytest.mark.parametrize("variant", ["normal", "asan"])
def test_conns_shows_a_utcp_connection(mstackd: Mstackd, variant: str) -> None:
    exe = BUILD / ("asan" if variant == "asan" else "") / "tests" / "stats" / "stats_pair"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run make build")
    p = subprocess.Popen([str(exe), str(mstackd.run_dir), "200000"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdin is not None
        line = p.stdout.readline().split()
        assert line[:1] == ["ready"], line
        cs = json.loads(mstackd.ctl("conns", "--json").stdout)
        assert len(cs) == 2
        client = next(c for c in cs if c["remote"] == "198.18.1.2:80")
        server = next(c for c in cs if c["local"] == "198.18.1.2:80")
        for c in (client, server):
            assert c["state"] == "ESTABLISHED" and c["pid"] == p.pid and c["app"] == "statspair"
            assert c["options"]["sack"] and c["options"]["timestamps"]
            assert c["options"]["wscale"] is not None and c["options"]["mss"] > 0
            assert c["cc"] in ("newreno", "cubic") and c["cwnd"] > 0
        # The receiver has it all; the last ACK may still be on its way back (virtual time).
        assert server["bytes_received"] >= 200000 and client["bytes_acked"] > 150000
        assert 9000 <= client["srtt_us"] <= 50000  # the pair's 10 ms round trip
        assert json.loads(mstackd.ctl("conns", "--pid", "1", "--json").stdout) == []
        text = mstackd.ctl("conns").stdout
        assert "ESTABLISHED" in text and "198.18.1.2:80" in text and "sack" in text
    finally:
        if p.stdin:
            p.stdin.close()
        p.wait(30)
        if p.stdout:
            p.stdout.close()
    assert json.loads(mstackd.ctl("conns", "--json").stdout) == []


def region(magic: int, n_slots: int, size: int) -> int:
    fd = os.memfd_create("fake-stats")
    os.ftruncate(fd, size)
    hdr = ffi.new("struct mstack_stats_hdr *")
    hdr.magic, hdr.version, hdr.n_slots = magic, consts.MSTACK_STATS_VERSION, n_slots
    os.pwrite(fd, bytes(ffi.buffer(hdr)), 0)
    return fd


@pytest.mark.parametrize(
    "magic, n_slots, size, words",
    [
        (0x1234, 1, 4096, "magic"),
        (consts.MSTACK_STATS_MAGIC, 10**6, 4096, "do not fit"),
        (consts.MSTACK_STATS_MAGIC, 100, 4096, "do not fit"),
    ],
)
def test_a_lying_region_is_reported_not_trusted(
    mstackd: Mstackd, magic, n_slots, size, words
) -> None:  # type: ignore[no-untyped-def]
    with mstackd.client() as c:
        c.hello()
        port_id, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        fd = region(magic, n_slots, size)
        try:
            c.request(consts.MSTACK_MSG_STATS_REGION, {"port_id": port_id}, [fd])
        finally:
            os.close(fd)
        (entry,) = json.loads(mstackd.ctl("conns", "--json").stdout)
        assert entry["port_id"] == port_id and words in entry["error"]
        out = mstackd.ctl("conns")
        assert out.returncode == 0 and words in out.stderr


def test_a_stuck_writer_is_an_error_not_a_hang(mstackd: Mstackd) -> None:
    with mstackd.client() as c:
        c.hello()
        port_id, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        fd = region(consts.MSTACK_STATS_MAGIC, 1, 4096)
        seq_at = ffi.offsetof("struct mstack_stats_hdr", "seq")
        os.pwrite(fd, struct.pack("=I", 1), seq_at)  # odd: "in an update", for ever
        try:
            c.request(consts.MSTACK_MSG_STATS_REGION, {"port_id": port_id}, [fd])
        finally:
            os.close(fd)
        (entry,) = json.loads(mstackd.ctl("conns", "--json").stdout)
        assert "update" in entry["error"]


HOLD = r"""
import socket, sys
conns = []
for i in range(3):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
    got = b""
    while not got.endswith(b"hello\n"):
        got += s.recv(4096)
    conns.append(s)
print("open", flush=True)
sys.stdin.readline()
"""


def test_mstack_httpd_publishes_its_connections(mstackd: Mstackd, tmp_path: Path) -> None:
    h = mstackd.host
    assert h is not None
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("hello\n")
    srv = subprocess.Popen(
        [str(BUILD / "bin" / "mstack-httpd"), "--run-dir", str(mstackd.run_dir),
         "--listen", f"{h.host_ip}:8500", "--root", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = None
    try:
        assert srv.stdout is not None
        assert [srv.stdout.readline().strip() for _ in range(2)][-1] == "ready"
        client = h.python_popen(HOLD, h.host_ip, "8500", ready="open", stdin=subprocess.PIPE)

        def three() -> bool:
            cs = json.loads(mstackd.ctl("conns", "--json").stdout)
            return len([c for c in cs if c.get("state") == "ESTABLISHED"]) == 3

        assert mstackd.wait_until(three, timeout=10)
        cs = json.loads(mstackd.ctl("conns", "--json").stdout)
        assert {c["app"] for c in cs} == {"mstack-httpd"}
        assert all(c["local"] == f"{h.host_ip}:8500" for c in cs)
        assert all(c["remote"].startswith(f"{h.remote_ip}:") for c in cs)
        assert all(c["bytes_received"] > 0 and c["bytes_acked"] > 0 for c in cs)
    finally:
        if client is not None and client.stdin is not None:
            client.stdin.close()
            client.wait(10)
        srv.terminate()
        srv.wait(15)
        for f in (srv.stdout, srv.stderr):
            if f is not None:
                f.close()
