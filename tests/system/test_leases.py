"""Leased port blocks for active opens: kept from the kernel's ephemeral choice and from
explicit binds, steered to the port, given back on UNLEASE and with the port — and
ip_local_reserved_ports is as it was afterwards."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from mstack_testkit import Mstackd, ReplyError
from mstackd.abi import consts
from mstackd.leases import compress, format_ranges, parse_ranges
from mstackd.switch import ip_be

pytestmark = pytest.mark.system

RESERVED = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")

SYNACKS = r"""
import sys
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp
iface, dmac, src, dst, first, n = sys.argv[1:5] + [int(x) for x in sys.argv[5:7]]
sendp([Ether(dst=dmac) / IP(src=src, dst=dst) / TCP(sport=80, dport=first + i, flags="SA")
       for i in range(n)], iface=iface, verbose=False)
"""


def test_ranges_round_trip() -> None:
    assert compress({1, 2, 3, 7, 9, 10}) == [(1, 3), (7, 7), (9, 10)]
    assert parse_ranges("8080,50000-50063\n") == [(8080, 8080), (50000, 50063)]
    assert format_ranges([(50000, 50063), (8080, 8080)]) == "8080,50000-50063"
    assert parse_ranges("") == []


def reserved() -> list[tuple[int, int]]:
    return parse_ranges(RESERVED.read_text())


def is_reserved(first: int, last: int) -> bool:
    """Every port of first..last reserved (the kernel merges adjacent ranges, ours and others')."""
    return all(any(a <= p <= b for a, b in reserved()) for p in range(first, last + 1))


def none_reserved(first: int, last: int) -> bool:
    return not any(any(a <= p <= b for a, b in reserved()) for p in range(first, last + 1))


def lease(c, port_id: int, count: int = 16, addr: int = 0):  # type: ignore[no-untyped-def]
    msg, _ = c.request(consts.MSTACK_MSG_LEASE, {"port_id": port_id, "count": count, "addr": addr})
    return int(msg.lease_id), int(msg.first), int(msg.count)


def test_lease_is_held_steered_and_given_back(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    before = RESERVED.read_text()
    with mstackd.client() as c:
        c.hello()
        port_id, fds, _ = c.port_open()
        try:
            lease_id, first, count = lease(c, port_id, 16)
            assert count == 16 and first % 16 == 0
            assert is_reserved(first, first + 15)
            for addr in (h.host_ip, "0.0.0.0"):
                s = socket.socket()
                with pytest.raises(OSError) as ei:
                    s.bind((addr, first + 3))
                assert ei.value.errno == errno.EADDRINUSE
                s.close()
            (b,) = [x for x in mstackd.admin("bindings") if x["kind"] == "lease"]
            assert (b["port"], b["last_port"], b["port_id"]) == (first, first + 15, port_id)
            # Segments for the leased ports reach the port.
            h.python(SYNACKS, h.remote_if, h.host_mac, h.remote_ip, h.host_ip, str(first), "16")
            assert mstackd.wait_until(
                lambda: mstackd.admin("stats")["ports"].get(str(port_id), {}).get("rx_frames") == 16
            )
            assert mstackd.admin("stats")["ingress"]["to_port_conn"] == 16
            # Another process cannot give it back; the owner can.
            with mstackd.client() as other:
                other.hello()
                with pytest.raises(ReplyError) as ei2:
                    other.request(consts.MSTACK_MSG_UNLEASE, {"lease_id": lease_id})
                assert ei2.value.errno == errno.ENOENT
            c.request(consts.MSTACK_MSG_UNLEASE, {"lease_id": lease_id})
            assert none_reserved(first, first + 15)
            socket.socket().bind((h.host_ip, first + 3))
            # A lease also ends with its port.
            _, first2, _ = lease(c, port_id, 0)
            assert is_reserved(first2, first2 + 63)
            c.request(consts.MSTACK_MSG_PORT_CLOSE, {"port_id": port_id})
            assert none_reserved(first2, first2 + 63)
        finally:
            for fd in fds:
                os.close(fd)
    assert RESERVED.read_text() == before


def test_bad_lease_requests(mstackd: Mstackd) -> None:
    before = RESERVED.read_text()
    with mstackd.client() as c:
        c.hello()
        port_id, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        for fields, err in (
            ({"port_id": port_id, "count": 99999}, errno.EINVAL),
            ({"port_id": port_id + 50}, errno.EPERM),
            ({"port_id": port_id, "addr": ip_be("127.0.0.1")}, errno.EADDRNOTAVAIL),
        ):
            with pytest.raises(ReplyError) as ei:
                c.request(consts.MSTACK_MSG_LEASE, fields)
            assert ei.value.errno == err
        lease(c, port_id, 32)
    # The process is gone: its port and lease go with it.
    assert mstackd.wait_until(lambda: RESERVED.read_text() == before)


def test_c_client_leases_through_libmsctl(mstackd: Mstackd) -> None:
    """libmsctl's LEASE, driven by mstack-responder --lease."""
    h = mstackd.host
    assert h is not None
    before = RESERVED.read_text()
    build = Path(os.environ.get("MSTACK_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
    p = subprocess.Popen(
        [str(build / "bin" / "mstack-responder"), "--run-dir", str(mstackd.run_dir),
         "--listen", f"{h.host_ip}:8400", "--lease", "32", "--max-seconds", "60",
         "--count-file", os.devnull],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        words = p.stdout.readline().split()
        assert words[0] == "lease" and words[3] == "32"
        first = int(words[2])
        assert is_reserved(first, first + 31)
        assert p.stdout.readline().startswith("ready")
    finally:
        p.terminate()
        p.wait(15)
        if p.stdout:
            p.stdout.close()
    assert mstackd.wait_until(lambda: RESERVED.read_text() == before)
    # Its counts went to /dev/null, written in place: the device node is still one.
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
