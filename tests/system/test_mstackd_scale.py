"""mstackd's switch with many ports and with listen groups, measured at the frame level by the
switch's per-port counters: 250 ports each receive exactly the frames of their own binding; a
process that never joins a listen group receives none of its flows; a listener whose group is
empty is served by the kernel's shadow listener."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from mstack_testkit import Mstackd
from mstackd.abi import consts

pytestmark = pytest.mark.system

LISTEN = consts.MSTACK_REG_LISTEN

SEND_SYNS = r"""
import sys
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp
iface, dmac, src, dst = sys.argv[1:5]
first, n = int(sys.argv[5]), int(sys.argv[6])
ip = IP(src=src, dst=dst)
frames = [
    Ether(dst=dmac) / ip / TCP(sport=40000 + i % 20000, dport=first + i, flags="S")
    for i in range(n)
]
sendp(frames, iface=iface, verbose=False)
print("sent", len(frames))
"""


def send_syns(d: Mstackd, first_port: int, n: int, per_port: int = 1) -> None:
    h = d.host
    assert h is not None
    for _ in range(per_port):
        out = h.python(
            SEND_SYNS, h.remote_if, h.host_mac, h.remote_ip, h.host_ip, str(first_port), str(n),
            timeout=120,
        )  # fmt: skip
        assert out.stdout.strip() == f"sent {n}", out.stderr


def counters(d: Mstackd) -> dict[int, int]:
    return {int(k): v["rx_frames"] for k, v in d.admin("stats")["ports"].items()}


def test_250_ports_each_get_their_own_frames_and_nothing_else(
    remote_host, mstackd_factory: Callable[..., Mstackd], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    n = 250
    cfg = tmp_path / "m.toml"
    cfg.write_text("[daemon]\nmax_ports_per_process = 256\n")
    d = mstackd_factory(remote_host, "--config", str(cfg))
    listeners: list[socket.socket] = []
    fds: list[int] = []
    with d.client() as c:
        c.hello()
        try:
            ports = []
            for i in range(n):
                port_id, pfds, _ = c.port_open(frames=64, ring=32)
                fds += pfds
                ls = socket.socket()
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((remote_host.host_ip, 20000 + i))
                ls.listen()
                listeners.append(ls)
                c.join(c.register(ls, LISTEN), port_id)
                ports.append(port_id)
            assert len(set(ports)) == n == len(d.admin("ports"))
            send_syns(d, 20000, n, per_port=2)
            assert d.wait_until(lambda: sum(counters(d).values()) >= 2 * n, timeout=20)
            got = counters(d)
            # Port i's binding is 20000+i; it got exactly its two SYNs.
            assert [got.get(p, 0) for p in ports] == [2] * n
            assert d.admin("stats")["ingress"]["to_port_new"] == 2 * n
        finally:
            for fd in fds:
                os.close(fd)
            for ls in listeners:
                ls.close()


def test_only_group_members_receive_new_flows(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with mstackd.client() as a, mstackd.client() as b, socket.socket() as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((h.host_ip, 8200))
        ls.listen()
        a.hello()
        b.hello()
        pa, fa, _ = a.port_open()
        pb, fb, _ = b.port_open()
        pc, fc, _ = b.port_open()
        try:
            bid = a.register(ls, LISTEN)
            b.claim(bid, ls)
            a.join(bid, pa)
            b.join(bid, pb)  # port pc of the same process never waits on it
            send_syns(mstackd, 8200, 1, per_port=1)
            # 60 new flows spread over the two members, none to the one that never joined.
            h.python(
                SEND_SYNS.replace("sport=40000 + i % 20000, dport=first + i",
                                  "sport=41000 + i, dport=first"),
                h.remote_if, h.host_mac, h.remote_ip, h.host_ip, "8200", "60", timeout=120,
            )  # fmt: skip
            assert mstackd.wait_until(lambda: sum(counters(mstackd).values()) >= 61)
            got = counters(mstackd)
            assert got.get(pa, 0) > 5 and got.get(pb, 0) > 5
            assert got.get(pa, 0) + got.get(pb, 0) == 61
            assert got.get(pc, 0) == 0
        finally:
            for fd in fa + fb + fc:
                os.close(fd)


CLIENT = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(b"ping")
    print(s.recv(16).decode())
"""


def test_empty_group_means_the_kernel_serves_the_flow(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with mstackd.client() as c, socket.socket() as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((h.host_ip, 8210))
        ls.listen()
        ls.settimeout(20)
        c.hello()
        port_id, fds, _ = c.port_open()
        try:
            c.register(ls, LISTEN)  # registered, nobody joined: the group is empty
            p = h.python_popen(CLIENT, h.host_ip, "8210")
            conn, _ = ls.accept()  # the kernel's shadow listener got the connection
            with conn:
                assert conn.recv(16) == b"ping"
                conn.sendall(b"pong")
            p.wait(timeout=30)
            assert p.returncode == 0
            st = mstackd.admin("stats")
            assert st["ingress"]["group_empty"] >= 1
            assert counters(mstackd).get(port_id, 0) == 0
        finally:
            for fd in fds:
                os.close(fd)
