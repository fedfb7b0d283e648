"""Verdicts of the port egress program (TC on a port's host end), frame by frame with
BPF_PROG_TEST_RUN on the test bed's link: a user-level stack may send only from its own
bindings and flows, from a local address of the NIC the route leaves by; every drop is counted
by reason; a listening member's SYN-ACK records the flow that ingress then follows."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from mstackd import libbpf, paths
from mstackd.abi import consts
from mstackd.switch import BindKey, SwitchMaps, flow_key, mac_bytes

pytestmark = pytest.mark.system

TC_ACT_SHOT, TC_ACT_REDIRECT = 2, 7
ME, OTHER = 3, 4  # port ids: the sender and another port

EG = {
    name[len("MSTACK_EG_") :].lower(): getattr(consts, name)
    for name in dir(consts)
    if name.startswith("MSTACK_EG_") and name != "MSTACK_EG_NSLOTS"
}


@dataclass
class Egress:
    obj: libbpf.BpfObject
    maps: SwitchMaps
    fd: int
    host: object  # the remote_host fixture's object
    stats: libbpf.BpfMap

    def run(self, frame: bytes) -> tuple[int, bytes]:
        # struct __sk_buff up to `ifindex` isn't settable; the sender is told by skb->ifindex,
        # which for a test run is the loopback: map the loopback as this port's host end.
        r = libbpf.prog_test_run(self.fd, frame)
        return r.retval, r.data

    def counters(self) -> dict[str, int]:
        out = {}
        for name, slot in EG.items():
            vals = self.stats.lookup(slot)
            assert isinstance(vals, list)
            out[name] = int(sum(vals))
        return out


@pytest.fixture
def eg(remote_host, bpf_pin_dir: Path) -> Iterator[Egress]:  # type: ignore[no-untyped-def]
    obj = libbpf.BpfObject(paths.bpf_object("switch_port.bpf.o"), bpf_pin_dir).load()
    try:
        maps = SwitchMaps.of_port_object(obj)
        maps.add_nic(remote_host.host_ifindex, mac_bytes(remote_host.host_mac))
        maps.add_local_addr(remote_host.host_ifindex, remote_host.host_ip)
        maps.port_by_host_if.update(1, ME)
        stats = obj.map("egress_stats", "__u32", "__u64")
        yield Egress(obj, maps, obj.program_fd("port_egress"), remote_host, stats)
    finally:
        obj.close()


def out(h, l4, src: str | None = None, dst: str | None = None) -> bytes:  # type: ignore[no-untyped-def]
    ip = IP(src=src or h.host_ip, dst=dst or h.remote_ip)
    return bytes(Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:bb") / ip / l4)


def test_connect_binding_may_send(eg: Egress) -> None:
    h = eg.host
    eg.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    verdict, _ = eg.run(out(h, TCP(sport=50000, dport=80, flags="S")))
    assert verdict == TC_ACT_REDIRECT
    assert eg.counters()["sent"] == 1
    assert eg.maps.port_counters(ME)["tx_frames"] == 1


def test_unbound_source_port_is_dropped(eg: Egress) -> None:
    h = eg.host
    eg.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    verdict, _ = eg.run(out(h, TCP(sport=50001, dport=80, flags="S")))
    assert verdict == TC_ACT_SHOT
    assert eg.counters()["not_bound"] == 1
    assert eg.maps.port_counters(ME)["tx_dropped"] == 1


def test_another_ports_binding_is_dropped(eg: Egress) -> None:
    h = eg.host
    eg.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=OTHER)
    eg.maps.bind(BindKey("udp", "0.0.0.0", 5353), "udp", port_id=OTHER)
    assert eg.run(out(h, TCP(sport=50000, dport=80, flags="S")))[0] == TC_ACT_SHOT
    assert eg.run(out(h, UDP(sport=5353, dport=53)))[0] == TC_ACT_SHOT
    assert eg.counters()["not_bound"] == 2


def test_spoofed_source_ip_is_dropped(eg: Egress) -> None:
    h = eg.host
    eg.maps.bind(BindKey("tcp", "0.0.0.0", 50000), "connect", port_id=ME)
    frame = out(h, TCP(sport=50000, dport=80, flags="S"), src="198.18.255.77")
    assert eg.run(frame)[0] == TC_ACT_SHOT
    assert eg.counters()["src_not_local"] == 1


def test_listen_member_synack_records_the_flow(eg: Egress) -> None:
    h = eg.host
    eg.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    eg.maps.set_group(1, [OTHER, ME])
    synack = out(h, TCP(sport=8080, dport=40000, flags="SA"))
    assert eg.run(synack)[0] == TC_ACT_REDIRECT
    ((k, f),) = eg.maps.flow_entries()
    assert f.port_id == ME
    assert k.lport == struct.unpack("=H", struct.pack("!H", 8080))[0]
    # Once the flow is ME's, the other member cannot answer on it...
    eg.maps.port_by_host_if.update(1, OTHER)
    assert eg.run(out(h, TCP(sport=8080, dport=40000, flags="A")))[0] == TC_ACT_SHOT
    assert eg.counters()["flow_clash"] == 1
    # ...and ME keeps sending on it even after leaving the group; its RST ends the flow.
    eg.maps.port_by_host_if.update(1, ME)
    eg.maps.set_group(1, [OTHER])
    assert eg.run(out(h, TCP(sport=8080, dport=40000, flags="FA")))[0] == TC_ACT_REDIRECT
    assert eg.maps.flow_entries()[0][1].flags == consts.MSTACK_FLOW_FIN_OUT
    assert eg.run(out(h, TCP(sport=8080, dport=40000, flags="R")))[0] == TC_ACT_REDIRECT
    assert eg.maps.flow_entries() == []
    key = flow_key(h.remote_ip, 40000, h.host_ip, 8080)
    assert eg.maps.flows.lookup(key) is None


def test_a_flow_moving_to_a_port_is_taken_over_by_its_first_segment(eg: Egress) -> None:
    """mstackd's hand-off marks a flow as moving to the port that adopts the connection: that
    port's first segment makes the flow its own; any other port still clashes."""
    h = eg.host
    third = OTHER + 1
    eg.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    eg.maps.set_group(1, [OTHER, ME])
    key = flow_key(h.remote_ip, 40000, h.host_ip, 8080)
    moving = consts.MSTACK_FLOW_MOVING | consts.MSTACK_FLOW_FIN_IN
    eg.maps.flows.update(
        key,
        {"port_id": OTHER, "flags": moving | third << consts.MSTACK_FLOW_TO_SHIFT, "last_ns": 1},
    )
    data = out(h, TCP(sport=8080, dport=40000, flags="PA") / b"hello")
    assert eg.run(data)[0] == TC_ACT_SHOT  # moving, but to another port
    assert eg.counters()["flow_clash"] == 1
    eg.maps.flows.update(
        key, {"port_id": OTHER, "flags": moving | ME << consts.MSTACK_FLOW_TO_SHIFT, "last_ns": 1}
    )
    assert eg.run(data)[0] == TC_ACT_REDIRECT
    f = eg.maps.flows.lookup(key)
    assert f.port_id == ME and f.flags == consts.MSTACK_FLOW_FIN_IN  # the mark is gone
    assert eg.counters()["flow_taken"] == 1
    eg.maps.port_by_host_if.update(1, OTHER)  # the old owner can no longer send on it
    assert eg.run(data)[0] == TC_ACT_SHOT
    assert eg.counters()["flow_clash"] == 2


def test_non_member_cannot_send_from_a_listen_binding(eg: Egress) -> None:
    h = eg.host
    eg.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    eg.maps.set_group(1, [OTHER])
    assert eg.run(out(h, TCP(sport=8080, dport=40000, flags="SA")))[0] == TC_ACT_SHOT
    assert eg.maps.flow_entries() == []


@pytest.mark.parametrize(
    "build, reason",
    [
        (lambda h: bytes(Ether() / ARP(pdst=h.remote_ip)), "not_ipv4"),
        (lambda h: out(h, ICMP(type=8)), "bad_proto"),
        # (A frame shorter than Ethernet + IPv4 headers: the kernel's test run refuses it.)
        (
            lambda h: bytes(Ether() / IP(src=h.host_ip, dst=h.remote_ip, len=26) / TCP())[:40],
            "truncated",
        ),
        (
            lambda h: bytes(Ether() / IP(src=h.host_ip, dst=h.remote_ip, flags="MF") / TCP()),
            "fragment",
        ),
        (lambda h: bytes(Ether() / IP(src=h.host_ip, dst=h.remote_ip, ihl=4) / TCP()), "bad_ip"),
        (lambda h: bytes(Ether() / IP(src=h.host_ip, dst=h.remote_ip, len=999) / TCP()), "bad_ip"),
    ],
)
def test_malformed_and_unroutable_frames_are_dropped_by_reason(eg: Egress, build, reason) -> None:  # type: ignore[no-untyped-def]
    eg.maps.bind(BindKey("tcp", "0.0.0.0", 50000), "connect", port_id=ME)
    assert eg.run(build(eg.host))[0] == TC_ACT_SHOT
    c = eg.counters()
    assert c[reason] == 1, c


def test_unknown_sender_is_dropped(eg: Egress) -> None:
    h = eg.host
    eg.maps.port_by_host_if.delete(1)
    eg.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    assert eg.run(out(h, TCP(sport=50000, dport=80, flags="S")))[0] == TC_ACT_SHOT
    assert eg.counters()["unknown_port"] == 1
