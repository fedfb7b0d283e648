"""The switch's data plane on the test bed, frame level (no TCP stack): mstackd's Dataplane
attaches the ingress program to the root-side link, creates ports (veth in a ports namespace,
XDP into the XSK on the app end, TC egress check on the host end, an XSK), steers the remote
host's SYNs for a bound port into it while the kernel keeps everything else, lets a port send
only from its bindings, and leaves nothing behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mstackd import libbpf
from mstackd.abi import consts
from mstackd.dataplane import AttachError, Dataplane
from mstackd.switch import BindKey
from mstackd.xsk import Geometry
from mstackd.xsk import statistics as xsk_statistics

pytestmark = pytest.mark.system

SMALL = Geometry(frames=256, rx_size=128, tx_size=128, fill_size=256, comp_size=128)


@pytest.fixture
def dp(remote_host, bpf_pin_dir: Path, testbed_name: Callable[[str], str]) -> Iterator[Dataplane]:  # type: ignore[no-untyped-def]
    d = Dataplane(bpf_pin_dir / "sw", ports_netns=testbed_name("pns"), port_prefix="mstp")
    try:
        d.attach_nic(remote_host.host_if, "native")
        yield d
    finally:
        d.close(teardown=True)


def ns_links(ns: str) -> dict[str, dict]:  # type: ignore[type-arg]
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", "link"], capture_output=True, text=True)
    return {link["ifname"]: link for link in json.loads(out.stdout or "[]")}


def root_link(name: str) -> dict | None:  # type: ignore[type-arg]
    out = subprocess.run(["ip", "-j", "-d", "link", "show", name], capture_output=True, text=True)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def test_port_lifecycle_and_teardown_leave_nothing(
    remote_host, bpf_pin_dir: Path, testbed_name: Callable[[str], str]
) -> None:  # type: ignore[no-untyped-def]
    pns = testbed_name("pns")
    d = Dataplane(bpf_pin_dir / "sw", ports_netns=pns, port_prefix="mstp")
    try:
        nic = d.attach_nic(remote_host.host_if, "native")
        assert libbpf.xdp_query_id(remote_host.host_ifindex) == nic.prog_id
        assert remote_host.host_ip in nic.addrs
        port = d.create_port(SMALL)
        app = ns_links(pns)[port.app_if]
        assert app["operstate"] == "UP" and "xdp" in app
        assert root_link(port.host_if) is not None
        assert libbpf.tc_query(port.host_ifindex) != 0
        assert d.maps.port_by_host_if.lookup(port.host_ifindex) == port.port_id
        # Pins exist while the switch runs (they are what outlives the daemon).
        pins = {p.name for p in (bpf_pin_dir / "sw").iterdir()}
        assert {"bindings", "flows", "groups", "xsks", "port_devmap", "local_addrs"} <= pins
        d.delete_port(port.port_id)
        assert root_link(port.host_if) is None
        assert port.app_if not in ns_links(pns)
        assert d.maps.port_by_host_if.lookup(port.host_ifindex) is None
    finally:
        d.close(teardown=True)
    assert libbpf.xdp_query_id(remote_host.host_ifindex) == 0
    assert not (bpf_pin_dir / "sw").exists()
    assert not Path("/run/netns", pns).exists()


def test_attach_refuses_a_foreign_program_and_generic_mode_with_gro(
    remote_host, bpf_pin_dir: Path, testbed_name: Callable[[str], str]
) -> None:  # type: ignore[no-untyped-def]
    d = Dataplane(bpf_pin_dir / "sw", ports_netns=testbed_name("pns"), port_prefix="mstp")
    try:
        subprocess.run(["ethtool", "-K", remote_host.host_if, "gro", "on"], check=True)
        with pytest.raises(AttachError, match="GRO"):
            d.attach_nic(remote_host.host_if, "generic")
        subprocess.run(["ethtool", "-K", remote_host.host_if, "gro", "off"], check=True)
        with pytest.raises(AttachError, match="no such interface"):
            d.attach_nic("mstnope0", "native")
        from mstackd.probe import PortCounter

        with PortCounter(remote_host.host_if), pytest.raises(AttachError, match="not mstackd's"):
            d.attach_nic(remote_host.host_if, "native")
        nic = d.attach_nic(remote_host.host_if, "generic")
        assert nic.mode == "generic"
    finally:
        d.close(teardown=True)


CLIENT = r"""
import socket, sys, errno
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((host, port))
    print("connected")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""


def test_bound_port_gets_the_syns_and_the_kernel_keeps_the_rest(dp: Dataplane, remote_host) -> None:  # type: ignore[no-untyped-def]
    port = dp.create_port(SMALL)
    dp.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    dp.maps.set_group(1, [port.port_id])
    before = dp.maps.port_counters(port.port_id)["rx_frames"]
    # The port's stack does not answer (nothing reads the XSK): the client's SYNs go unanswered,
    # and the kernel, which has nothing on 8080, never sees them (no reset, no "refused").
    r = remote_host.python(CLIENT, remote_host.host_ip, "8080", timeout=30)
    assert r.stdout.strip() == "timeout"
    after = dp.maps.port_counters(port.port_id)["rx_frames"]
    assert after - before >= 1
    # They reached the port's own XSK: with its fill ring empty (nobody maps it here), the
    # kernel counts them as dropped for want of a buffer.
    assert port.xsk is not None
    st = xsk_statistics(port.xsk.xsk_fd)
    assert st["rx_dropped"] + st["rx_fill_ring_empty_descs"] >= after - before
    c = dp.maps.ingress_counters()
    assert c["to_port_new"] >= 1
    # Port 8081 is nobody's: the kernel answers (refused), and ICMP echo is the kernel's.
    r = remote_host.python(CLIENT, remote_host.host_ip, "8081", timeout=30)
    assert r.stdout.strip() == "refused"
    ping = remote_host.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", remote_host.host_ip])
    assert ping.returncode == 0
    assert dp.maps.port_counters(port.port_id)["rx_frames"] == after


SEND_RAW = r"""
import socket, sys
from scapy.layers.l2 import Ether
from scapy.layers.inet import IP, TCP
ifname, dmac, src, dst, dport, sport, count = sys.argv[1:8]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
tcp = TCP(sport=int(sport), dport=int(dport), flags="SA")
f = bytes(Ether(dst=dmac) / IP(src=src, dst=dst) / tcp)
for _ in range(int(count)):
    s.send(f)
print("sent")
"""

CAPTURE = r"""
import socket, sys, time, select
ifname, want_sport, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((ifname, 0))
print("ready", flush=True)
n, end = 0, time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    if not select.select([s], [], [], left)[0]:
        break
    f, addr = s.recvfrom(2048)
    if addr[2] == socket.PACKET_OUTGOING or f[23] != 6:
        continue
    ihl = (f[14] & 15) * 4
    if int.from_bytes(f[14 + ihl:16 + ihl], "big") == want_sport:
        n += 1
print(n, flush=True)
"""


def test_port_may_send_only_from_its_bindings(dp: Dataplane, remote_host) -> None:  # type: ignore[no-untyped-def]
    port = dp.create_port(SMALL)
    dp.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    dp.maps.set_group(1, [port.port_id])

    def inject(sport: int, count: int) -> None:
        subprocess.run(
            ["ip", "netns", "exec", dp.ports_netns, sys.executable, "-c", SEND_RAW,
             port.app_if, "02:00:00:00:00:01", remote_host.host_ip, remote_host.remote_ip,
             "40000", str(sport), str(count)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    for sport, count in ((8080, 5), (9999, 7)):
        cap = remote_host.python_popen(
            CAPTURE, remote_host.remote_if, str(sport), "2.0", ready="ready"
        )
        inject(sport, count)
        out, _ = cap.communicate(timeout=30)
        got = int(out.strip().splitlines()[-1])
        assert got == (count if sport == 8080 else 0), (sport, got)
    eg = {
        slot: int(sum(dp.egress_stats.lookup(slot)))  # type: ignore[arg-type]
        for slot in (consts.MSTACK_EG_SENT, consts.MSTACK_EG_NOT_BOUND)
    }
    assert eg[consts.MSTACK_EG_SENT] == 5
    assert eg[consts.MSTACK_EG_NOT_BOUND] == 7
    pc = dp.maps.port_counters(port.port_id)
    assert (pc["tx_frames"], pc["tx_dropped"]) == (5, 7)
    # The SYN-ACK from a listening member recorded its flow.
    assert [f.port_id for _, f in dp.maps.flow_entries()] == [port.port_id]


def test_closed_flows_are_swept_after_their_quiet_time(dp: Dataplane) -> None:
    from mstackd.switch import flow_key

    now = time.monotonic_ns()
    both = consts.MSTACK_FLOW_FIN_IN | consts.MSTACK_FLOW_FIN_OUT
    entries = {
        40001: (both, now - 120 * 10**9),  # closed both ways, quiet for 2 min: goes
        40002: (both, now - 5 * 10**9),  # closed, but the peer may still be in TIME_WAIT
        40003: (consts.MSTACK_FLOW_FIN_IN, 0),  # half-closed, quiet since boot: stays
        40004: (0, 0),  # idle but open (no keepalive): stays
    }
    for sport, (flags, last) in entries.items():
        dp.maps.flows.update(
            flow_key("198.18.0.2", sport, "198.18.0.1", 8080),
            {"port_id": 3, "flags": flags, "last_ns": last},
        )
    assert dp.sweep_flows(now) == 1
    left = sorted(socket.ntohs(k.rport) for k, _ in dp.maps.flow_entries())
    assert left == [40002, 40003, 40004]
