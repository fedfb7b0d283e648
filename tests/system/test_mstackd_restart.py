"""mstackd is the control plane, never the data plane: after a SIGKILL of the daemon, an
existing port keeps receiving frames for its bindings and its frames keep reaching the remote
host; a restarted daemon adopts the ports and bindings that live processes still hold, lets
their stacks reconnect (HELLO) and re-register, serves new ports, and cleans up after the
processes as before. docs/mstackd.md documents this."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mstack_testkit import Mstackd
from mstackd import libbpf

pytestmark = pytest.mark.system

TESTS = Path(__file__).resolve().parents[1]

# A long-lived "application": opens a port, registers and joins a listener on 8300, then obeys
# commands on stdin: "reconnect" (HELLO + REGISTER the same socket again), "quit".
APP = r"""
import os, socket, sys
sys.path.insert(0, sys.argv[3])
from mstack_testkit import AppClient
ip, path = sys.argv[1], sys.argv[2]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((ip, 8300))
ls.listen()
c = AppClient(path)
c.hello()
port_id, fds, _ = c.port_open()
bid = c.register(ls, 1)
c.join(bid, port_id)
print("ready", port_id, bid, flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "reconnect":
        c.close()
        c = AppClient(path)
        c.hello()
        print("registered", c.register(ls, 1), flush=True)
    elif cmd == "quit":
        break
"""

SYNS = r"""
import sys
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp
iface, dmac, src, dst, n = sys.argv[1:6]
f = [Ether(dst=dmac) / IP(src=src, dst=dst) / TCP(sport=45000 + i, dport=8300, flags="S")
     for i in range(int(n))]
sendp(f, iface=iface, verbose=False)
"""


def rx_of(bpf_dir: Path, port_id: int) -> int:
    m = libbpf.BpfMap.open_pinned(
        bpf_dir / "port_stats", "__u32", "struct mstack_port_counters", percpu=True
    )
    try:
        vals = m.lookup(port_id)
        assert isinstance(vals, list)
        return int(sum(v.rx_frames for v in vals))
    finally:
        m.close()


def test_daemon_death_leaves_the_data_path_and_restart_adopts(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    app = subprocess.Popen(
        [sys.executable, "-c", APP, h.host_ip, str(mstackd.run_dir / "app.sock"), str(TESTS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert app.stdin is not None and app.stdout is not None
    try:
        _, port_id, bid = app.stdout.readline().split()
        port_id, bid = int(port_id), int(bid)

        def syns(n: int) -> None:
            h.python(SYNS, h.remote_if, h.host_mac, h.remote_ip, h.host_ip, str(n), timeout=60)

        syns(3)
        assert mstackd.wait_until(lambda: rx_of(mstackd.bpf_dir, port_id) == 3)
        mstackd.kill()
        # The data path does not need the daemon.
        syns(4)
        assert mstackd.wait_until(lambda: rx_of(mstackd.bpf_dir, port_id) == 7)
        assert libbpf.xdp_query_id(h.host_ifindex) != 0

        mstackd.restart()
        (port,) = mstackd.admin("ports")
        assert (port["port_id"], port["pid"]) == (port_id, app.pid)
        (b,) = mstackd.admin("bindings")
        assert (b["binding_id"], b["members"], b["claimants"]) == (bid, [port_id], [app.pid])
        syns(2)
        assert mstackd.wait_until(lambda: rx_of(mstackd.bpf_dir, port_id) == 9)
        # The application reconnects and registers its socket again: same binding.
        app.stdin.write("reconnect\n")
        app.stdin.flush()
        assert app.stdout.readline().split() == ["registered", str(bid)]
        # New ports get fresh ids beside the adopted one.
        with mstackd.client() as c:
            c.hello()
            new_id, fds, _ = c.port_open()
            for fd in fds:
                os.close(fd)
            assert new_id != port_id
        # The restarted daemon still cleans up after the process.
        app.stdin.write("quit\n")
        app.stdin.flush()
        app.wait(timeout=20)
        assert mstackd.wait_until(lambda: mstackd.admin("bindings") == [])
        assert mstackd.wait_until(lambda: mstackd.admin("ports") == [])
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(10)
        app.stdin.close()
        app.stdout.close()
    assert mstackd.stop() == 0
    assert not Path("/run/netns", mstackd.ports_netns).exists()
    assert not mstackd.bpf_dir.exists()


def test_restart_clears_what_dead_processes_held(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    app = subprocess.Popen(
        [sys.executable, "-c", APP, h.host_ip, str(mstackd.run_dir / "app.sock"), str(TESTS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert app.stdout is not None and app.stdin is not None
    host_if = None
    try:
        assert app.stdout.readline().startswith("ready")
        host_if = mstackd.admin("ports")[0]["host_if"]
        mstackd.kill()
        app.kill()  # its holder dies while no daemon watches
        app.wait(10)
    finally:
        app.stdin.close()
        app.stdout.close()
    mstackd.restart()
    assert mstackd.admin("ports") == [] and mstackd.admin("bindings") == []
    assert subprocess.run(["ip", "link", "show", host_if], capture_output=True).returncode != 0
    # The kernel may give the port out again.
    import socket

    s = socket.socket()
    s.bind((h.host_ip, 8300))
    s.close()
