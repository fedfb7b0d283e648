"""Verdicts of the switch's ingress program, frame by frame, in the kernel with
BPF_PROG_TEST_RUN (no link attached): what is really for this host and bound goes to the right
port; everything else goes to the kernel, counted by reason."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from mstackd import libbpf, paths
from mstackd.switch import BindKey, SwitchMaps, flow_key

pytestmark = pytest.mark.system  # loads BPF: root

XDP_DROP, XDP_PASS, XDP_REDIRECT = 1, 2, 4
LO = 1  # test runs need a real ingress device; the loopback is always there
NIC_MAC = "02:00:00:00:00:01"
LOCAL, OTHER_LOCAL, REMOTE = "198.18.0.1", "198.18.0.9", "198.18.0.2"


class Ingress:
    def __init__(self, pin_dir: Path) -> None:
        self.obj = libbpf.BpfObject(paths.bpf_object("switch_ingress.bpf.o"), pin_dir).load()
        self.maps = SwitchMaps(self.obj)
        self.fd = self.obj.program_fd("switch_ingress")
        self.maps.add_nic(LO, bytes.fromhex(NIC_MAC.replace(":", "")))
        for a in (LOCAL, OTHER_LOCAL, "127.0.0.1"):
            self.maps.add_local_addr(LO, a)
        for port_id in range(1, 9):
            self.maps.set_port(port_id, LO)

    def run(self, frame: bytes) -> int:
        ctx = struct.pack("=6I", 0, len(frame), 0, LO, 0, 0)
        return libbpf.prog_test_run(self.fd, frame, ctx).retval

    def rx(self, port_id: int) -> int:
        return self.maps.port_counters(port_id)["rx_frames"]


@pytest.fixture
def sw(bpf_pin_dir: Path) -> Iterator[Ingress]:
    s = Ingress(bpf_pin_dir)
    try:
        yield s
    finally:
        s.obj.close()


def frame(l3: object, dst_mac: str = NIC_MAC) -> bytes:
    return bytes(Ether(dst=dst_mac, src="02:00:00:00:00:02") / l3)


def syn(sport: int = 40000, dport: int = 8080, dst: str = LOCAL, src: str = REMOTE) -> bytes:
    return frame(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=1))


def test_listen_syn_goes_to_a_group_member_stably(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.set_group(1, [3, 4])
    for _ in range(3):
        assert sw.run(syn(sport=40000)) == XDP_REDIRECT
    # Retransmitted SYNs of one flow land on one member.
    assert sorted((sw.rx(3), sw.rx(4))) == [0, 3]
    for sport in range(41000, 41100):
        assert sw.run(syn(sport=sport)) == XDP_REDIRECT
    # New flows spread over both members.
    assert sw.rx(3) > 20 and sw.rx(4) > 20
    assert sw.maps.ingress_counters()["to_port_new"] == 103


def test_empty_group_passes_new_flows_to_the_kernel(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=2)
    sw.maps.set_group(2, [])
    assert sw.run(syn()) == XDP_PASS
    assert sw.maps.ingress_counters()["group_empty"] == 1


def test_a_group_that_just_lost_its_last_member_drops_new_flows_until_its_hold_ends(
    sw: Ingress,
) -> None:
    """nginx's reload: old workers leave before the new ones join. While the hold lasts, SYNs
    are dropped (the peer retries and finds the new members), not given to the kernel for the
    connection's lifetime; after it, an empty group is the kernel's again."""
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=2)
    sw.maps.set_group(2, [], hold_until_ns=time.monotonic_ns() + 60 * 10**9)
    assert sw.run(syn()) == XDP_DROP
    # Segments of flows that already exist are not held back (they are the kernel's here).
    ack = frame(IP(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=8080, flags="A"))
    assert sw.run(ack) == XDP_PASS
    sw.maps.set_group(2, [], hold_until_ns=time.monotonic_ns() - 1)
    assert sw.run(syn()) == XDP_PASS
    sw.maps.set_group(2, [5], hold_until_ns=time.monotonic_ns() + 60 * 10**9)
    assert sw.run(syn()) == XDP_REDIRECT  # members: the hold means nothing
    c = sw.maps.ingress_counters()
    assert (c["group_hold"], c["group_empty"], c["to_port_new"]) == (1, 1, 1)


def test_unbound_port_passes(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.set_group(1, [3])
    assert sw.run(syn(dport=8081)) == XDP_PASS
    assert sw.maps.ingress_counters()["no_binding"] == 1


def test_not_this_hosts_mac_or_ip_is_not_captured(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.set_group(1, [3])
    other_mac = frame(IP(src=REMOTE, dst=LOCAL) / TCP(dport=8080, flags="S"), "02:00:00:00:00:77")
    bcast = frame(IP(src=REMOTE, dst=LOCAL) / TCP(dport=8080, flags="S"), "ff:ff:ff:ff:ff:ff")
    assert sw.run(other_mac) == XDP_PASS
    assert sw.run(bcast) == XDP_PASS
    # A wildcard binding must not capture forwarded or DNAT'd traffic.
    assert sw.run(syn(dst="203.0.113.5")) == XDP_PASS
    c = sw.maps.ingress_counters()
    assert (c["other_mac"], c["other_ip"], sw.rx(3)) == (2, 1, 0)


def test_specific_address_beats_wildcard(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.bind(BindKey("tcp", OTHER_LOCAL, 8080), "listen", group=2)
    sw.maps.set_group(1, [3])
    sw.maps.set_group(2, [5])
    assert sw.run(syn(dst=OTHER_LOCAL)) == XDP_REDIRECT
    assert sw.run(syn(dst=LOCAL)) == XDP_REDIRECT
    assert (sw.rx(3), sw.rx(5)) == (1, 1)


def test_established_flow_is_never_resteered(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.set_group(1, [3])
    sw.maps.flows.update(
        flow_key(REMOTE, 40000, LOCAL, 8080), {"port_id": 6, "flags": 0, "last_ns": 0}
    )
    ack = frame(IP(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=8080, flags="A") / b"x")
    assert sw.run(ack) == XDP_REDIRECT
    sw.maps.set_group(1, [3, 4, 5])  # membership changes...
    fin = frame(IP(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=8080, flags="FA"))
    assert sw.run(fin) == XDP_REDIRECT  # ...the flow stays where it began
    assert sw.rx(6) == 2 and sw.rx(3) == 0
    ((_, f),) = sw.maps.flow_entries()
    assert f.flags == 1 and f.last_ns > 0  # FIN from the remote side seen


def test_non_syn_without_flow_goes_to_the_kernel(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.set_group(1, [3])
    for flags in ("A", "SA", "R", "FA"):
        f = frame(IP(src=REMOTE, dst=LOCAL) / TCP(sport=40001, dport=8080, flags=flags))
        assert sw.run(f) == XDP_PASS
    assert sw.maps.ingress_counters()["no_flow"] == 4 and sw.rx(3) == 0


def test_connect_binding_goes_to_its_port(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", LOCAL, 50000), "connect", port_id=7)
    synack = frame(IP(src=REMOTE, dst=LOCAL) / TCP(sport=80, dport=50000, flags="SA"))
    assert sw.run(synack) == XDP_REDIRECT
    assert sw.rx(7) == 1


def test_udp_binding(sw: Ingress) -> None:
    sw.maps.bind(BindKey("udp", "0.0.0.0", 5353), "udp", port_id=2)
    assert sw.run(frame(IP(src=REMOTE, dst=LOCAL) / UDP(sport=1, dport=5353) / b"q")) == 4
    assert sw.run(frame(IP(src=REMOTE, dst=LOCAL) / UDP(sport=1, dport=5354))) == XDP_PASS
    # A TCP binding on the same number does not capture UDP, nor the reverse.
    assert sw.run(syn(dport=5353)) == XDP_PASS
    assert sw.rx(2) == 1


def test_icmp_error_quoting_a_ports_segment_goes_to_that_port(sw: Ingress) -> None:
    sw.maps.flows.update(
        flow_key(REMOTE, 443, LOCAL, 8080), {"port_id": 4, "flags": 0, "last_ns": 0}
    )
    sw.maps.bind(BindKey("tcp", LOCAL, 50001), "connect", port_id=5)
    quoted_flow = IP(src=LOCAL, dst=REMOTE) / TCP(sport=8080, dport=443, flags="A")
    quoted_conn = IP(src=LOCAL, dst=REMOTE) / TCP(sport=50001, dport=80, flags="S")
    quoted_kernel = IP(src=LOCAL, dst=REMOTE) / TCP(sport=22, dport=5000, flags="A")
    frag_needed = ICMP(type=3, code=4, nexthopmtu=1200)
    for quoted in (quoted_flow, quoted_conn, quoted_kernel):
        f = frame(IP(src="198.18.0.254", dst=LOCAL) / frag_needed / bytes(quoted)[:28])
        sw.run(f)
    assert (sw.rx(4), sw.rx(5)) == (1, 1)
    c = sw.maps.ingress_counters()
    assert c["to_port_icmp"] == 2 and c["no_binding"] == 1
    # Echo requests are the kernel's.
    assert sw.run(frame(IP(src=REMOTE, dst=LOCAL) / ICMP(type=8))) == XDP_PASS


@pytest.mark.parametrize(
    "mangle, counter",
    [
        (lambda b: b[:14] + bytes([0x65]) + b[15:], "bad_ip"),  # version 6 in an IPv4 frame
        (lambda b: b[:14] + bytes([0x44]) + b[15:], "bad_ip"),  # IHL 4 (< 20 bytes)
        (lambda b: b[:16] + struct.pack("!H", 1500) + b[18:], "bad_ip"),  # total length > frame
        (lambda b: b[:16] + struct.pack("!H", 10) + b[18:], "bad_ip"),  # total length < IHL
        (lambda b: b[:20] + struct.pack("!H", 0x2000) + b[22:], "fragment"),  # MF
        (lambda b: b[:20] + struct.pack("!H", 0x0010) + b[22:], "fragment"),  # offset
        (lambda b: b[:16] + struct.pack("!H", 30) + b[18:44], "truncated"),  # TCP header cut
        (lambda b: b[:30], "truncated"),  # IP header cut
        (lambda b: b[:12] + b"\x86\xdd" + b[14:], "not_ipv4"),
    ],
)
def test_malformed_frames_are_counted_and_passed(sw: Ingress, mangle, counter) -> None:  # type: ignore[no-untyped-def]
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.set_group(1, [3])
    bad = mangle(syn())
    assert sw.run(bad) == XDP_PASS
    c = sw.maps.ingress_counters()
    assert c[counter] == 1, c
    assert sw.rx(3) == 0


def test_gone_port_falls_back_to_the_kernel(sw: Ingress) -> None:
    sw.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    sw.maps.set_group(1, [3])
    sw.maps.del_port(3)
    assert sw.run(syn()) == XDP_PASS


def test_syn_for_a_connection_the_kernel_holds_stays_with_the_kernel(sw: Ingress) -> None:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = ls.accept()
    try:
        sw.maps.bind(BindKey("tcp", "127.0.0.1", port), "listen", group=1)
        sw.maps.set_group(1, [3])
        sport = c.getsockname()[1]
        dup = syn(sport=sport, dport=port, dst="127.0.0.1", src="127.0.0.1")
        assert sw.run(dup) == XDP_PASS
        assert sw.maps.ingress_counters()["kernel_flow"] == 1
        # Another 4-tuple to the same listener goes to the group.
        other = syn(sport=1, dport=port, dst="127.0.0.1", src="127.0.0.1")
        assert sw.run(other) == XDP_REDIRECT
    finally:
        for x in (s, c, ls):
            x.close()
