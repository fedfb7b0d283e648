"""Verdicts of the XDP egress fast path (port_egress_xdp on a port's host end), frame by frame
with BPF_PROG_TEST_RUN: the checks without side effects drop exactly as port_egress does; with
the NIC's fast path on and its next hop cached, the source check runs here and the frame leaves
through the NIC DEVMAP with its Ethernet header rewritten; anything else is passed untouched to
port_egress (TC), which then does all it does today — the source check runs once per frame."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import TCP, UDP

from mstackd import libbpf
from mstackd.abi import consts
from mstackd.nexthop import FastPath
from mstackd.switch import BindKey, flow_key, ip_be, mac_bytes
from switchkit import MALFORMED, ME, OTHER, EgressRun, egress_stats, out, port_object

pytestmark = pytest.mark.system

XDP_DROP, XDP_PASS, XDP_REDIRECT = 1, 2, 4
NH_MAC = "02:11:22:33:44:55"  # the cached next hop (not the remote's real MAC: proves the rewrite)


@dataclass
class FastEgress(EgressRun):
    """port_egress_xdp, the fast path on a port's host end, and the fast path's maps."""

    fp: FastPath

    def nic(self) -> int:
        return int(self.host.host_ifindex)

    def set_fast(self, on: bool, max_len: int = 1514) -> None:
        self.fp.fast.update(self.nic(), {"on": int(on), "max_len": max_len})

    def cache(self, daddr: str, mac: str = NH_MAC) -> None:
        key = {"ifindex": self.nic(), "daddr": ip_be(daddr)}
        smac = mac_bytes(self.host.host_mac)
        self.fp.nexthops.update(key, {"smac": list(smac), "dmac": list(mac_bytes(mac))})


@pytest.fixture
def fe(remote_host, bpf_pin_dir: Path) -> Iterator[FastEgress]:  # type: ignore[no-untyped-def]
    h = remote_host
    with port_object(h, bpf_pin_dir) as (obj, maps):
        fp = FastPath(obj, bpf_pin_dir)  # its maps only: no tracepoint, no monitor
        fp.devmap.update(h.host_ifindex, h.host_ifindex)
        fd = obj.program_fd("port_egress_xdp")
        f = FastEgress(obj, maps, fd, h, egress_stats(obj), fp)
        f.set_fast(True)
        f.cache(h.remote_ip)
        yield f


def test_a_cached_next_hop_sends_through_the_devmap_with_rewritten_macs(fe: FastEgress) -> None:
    h = fe.host
    fe.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    frame = out(h, TCP(sport=50000, dport=80, flags="S"))
    verdict, data = fe.run(frame)
    assert verdict == XDP_REDIRECT
    assert data[0:6] == mac_bytes(NH_MAC)
    assert data[6:12] == mac_bytes(h.host_mac)
    assert data[12:] == frame[12:]  # nothing else touched
    c = fe.counters()
    assert (c["frames"], c["sent"], c["fast"], c["nh_miss"]) == (1, 1, 1, 0)
    assert fe.maps.port_counters(ME)["tx_frames"] == 1
    assert fe.maps.port_counters(ME)["tx_bytes"] == len(frame)


def test_fast_path_off_passes_to_tc_untouched(fe: FastEgress) -> None:
    h = fe.host
    fe.set_fast(False)
    fe.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    frame = out(h, TCP(sport=50000, dport=80, flags="S"))
    verdict, data = fe.run(frame)
    assert verdict == XDP_PASS and data == frame
    assert not any(fe.counters().values())  # port_egress counts it
    assert list(fe.fp.wanted.each_key()) == []
    fe.fp.fast.delete(fe.nic())  # a NIC without an entry: the same
    assert fe.run(frame)[0] == XDP_PASS


def test_a_miss_passes_and_asks_mstackd_once(fe: FastEgress) -> None:
    h = fe.host
    fe.maps.bind(BindKey("udp", "0.0.0.0", 5353), "udp", port_id=ME)
    other_dst = h.remote_ip.rsplit(".", 1)[0] + ".77"
    frame = out(h, UDP(sport=5353, dport=53), dst=other_dst)
    for _ in range(3):
        verdict, data = fe.run(frame)
        assert verdict == XDP_PASS and data == frame
    (k,) = list(fe.fp.wanted.each_key())
    assert (k.ifindex, k.daddr) == (fe.nic(), ip_be(other_dst))
    c = fe.counters()
    assert c["nh_miss"] == 3 and c["frames"] == 0 and c["sent"] == 0


def test_the_source_check_is_tcs_on_a_miss(fe: FastEgress) -> None:
    """A miss passes even an unbound source: port_egress drops it (and a RST on the TC path
    must not find its flow already removed here)."""
    h = fe.host
    frame = out(h, TCP(sport=50001, dport=80, flags="S"), dst="198.51.100.9")
    assert fe.run(frame)[0] == XDP_PASS
    assert fe.counters()["not_bound"] == 0


def test_a_frame_longer_than_the_nic_takes_passes(fe: FastEgress) -> None:
    h = fe.host
    fe.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    frame = out(h, TCP(sport=50000, dport=80, flags="PA") / (b"x" * 200))
    fe.set_fast(True, max_len=len(frame) - 1)
    assert fe.run(frame)[0] == XDP_PASS
    fe.set_fast(True, max_len=len(frame))
    assert fe.run(frame)[0] == XDP_REDIRECT


def test_no_devmap_entry_passes(fe: FastEgress) -> None:
    h = fe.host
    fe.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    fe.fp.devmap.delete(fe.nic())
    assert fe.run(out(h, TCP(sport=50000, dport=80, flags="S")))[0] == XDP_PASS
    assert fe.counters()["frames"] == 0


def test_unbound_and_other_ports_sources_are_dropped(fe: FastEgress) -> None:
    h = fe.host
    fe.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    fe.maps.bind(BindKey("tcp", h.host_ip, 50002), "connect", port_id=OTHER)
    fe.maps.bind(BindKey("udp", "0.0.0.0", 5353), "udp", port_id=OTHER)
    assert fe.run(out(h, TCP(sport=50001, dport=80, flags="S")))[0] == XDP_DROP
    assert fe.run(out(h, TCP(sport=50002, dport=80, flags="S")))[0] == XDP_DROP
    assert fe.run(out(h, UDP(sport=5353, dport=53)))[0] == XDP_DROP
    c = fe.counters()
    assert c["not_bound"] == 3 and c["frames"] == 3 and c["sent"] == 0
    assert fe.maps.port_counters(ME)["tx_dropped"] == 3


@pytest.mark.parametrize("fast", [True, False])
def test_spoofed_source_ip_is_dropped(fe: FastEgress, fast: bool) -> None:
    h = fe.host
    fe.set_fast(fast)
    fe.maps.bind(BindKey("tcp", "0.0.0.0", 50000), "connect", port_id=ME)
    frame = out(h, TCP(sport=50000, dport=80, flags="S"), src="198.18.255.77")
    assert fe.run(frame)[0] == XDP_DROP
    assert fe.counters()["src_not_local"] == 1 and fe.counters()["frames"] == 1


def test_listen_member_synack_records_the_flow(fe: FastEgress) -> None:
    h = fe.host
    fe.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    fe.maps.set_group(1, [OTHER, ME])
    assert fe.run(out(h, TCP(sport=8080, dport=40000, flags="SA")))[0] == XDP_REDIRECT
    ((k, f),) = fe.maps.flow_entries()
    assert f.port_id == ME
    assert k.lport == struct.unpack("=H", struct.pack("!H", 8080))[0]
    fe.maps.port_by_host_if.update(1, OTHER)
    assert fe.run(out(h, TCP(sport=8080, dport=40000, flags="A")))[0] == XDP_DROP
    assert fe.counters()["flow_clash"] == 1
    fe.maps.port_by_host_if.update(1, ME)
    fe.maps.set_group(1, [OTHER])
    assert fe.run(out(h, TCP(sport=8080, dport=40000, flags="FA")))[0] == XDP_REDIRECT
    assert fe.maps.flow_entries()[0][1].flags == consts.MSTACK_FLOW_FIN_OUT
    assert fe.run(out(h, TCP(sport=8080, dport=40000, flags="R")))[0] == XDP_REDIRECT
    assert fe.maps.flows.lookup(flow_key(h.remote_ip, 40000, h.host_ip, 8080)) is None
    assert fe.counters()["fast"] == 3


def test_a_moving_flow_is_taken_over_by_its_first_segment(fe: FastEgress) -> None:
    h = fe.host
    third = OTHER + 1
    fe.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    fe.maps.set_group(1, [OTHER, ME])
    key = flow_key(h.remote_ip, 40000, h.host_ip, 8080)
    moving = consts.MSTACK_FLOW_MOVING | consts.MSTACK_FLOW_FIN_IN
    fe.maps.flows.update(
        key,
        {"port_id": OTHER, "flags": moving | third << consts.MSTACK_FLOW_TO_SHIFT, "last_ns": 1},
    )
    data = out(h, TCP(sport=8080, dport=40000, flags="PA") / b"hello")
    assert fe.run(data)[0] == XDP_DROP
    assert fe.counters()["flow_clash"] == 1
    fe.maps.flows.update(
        key, {"port_id": OTHER, "flags": moving | ME << consts.MSTACK_FLOW_TO_SHIFT, "last_ns": 1}
    )
    assert fe.run(data)[0] == XDP_REDIRECT
    f = fe.maps.flows.lookup(key)
    assert f.port_id == ME and f.flags == consts.MSTACK_FLOW_FIN_IN
    assert fe.counters()["flow_taken"] == 1
    fe.maps.port_by_host_if.update(1, OTHER)
    assert fe.run(data)[0] == XDP_DROP
    assert fe.counters()["flow_clash"] == 2


def test_a_full_flow_table_drops_the_synack(fe: FastEgress) -> None:
    """flow_full: the SYN-ACK that cannot record its flow is dropped."""
    h = fe.host
    fe.maps.bind(BindKey("tcp", "0.0.0.0", 8080), "listen", group=1)
    fe.maps.set_group(1, [ME])
    # Fill the table with other flows, then answer one more SYN.
    n = 0
    try:
        while n < consts.MSTACK_MAX_FLOWS:
            fe.maps.flows.update(
                flow_key("198.51.100.2", n % 65536, h.host_ip, 1 + n // 65536), {"port_id": ME}
            )
            n += 1
    except libbpf.BpfError:
        pass
    assert fe.run(out(h, TCP(sport=8080, dport=40000, flags="SA")))[0] == XDP_DROP
    assert fe.counters()["flow_full"] == 1


@pytest.mark.parametrize("build, reason", MALFORMED)
def test_malformed_frames_are_dropped_by_reason(
    fe: FastEgress, build: Callable[[Any], bytes], reason: str
) -> None:
    fe.maps.bind(BindKey("tcp", "0.0.0.0", 50000), "connect", port_id=ME)
    assert fe.run(build(fe.host))[0] == XDP_DROP
    c = fe.counters()
    assert c[reason] == 1 and c["frames"] == 1, c


def test_unknown_sender_is_dropped(fe: FastEgress) -> None:
    h = fe.host
    fe.maps.port_by_host_if.delete(1)
    fe.maps.bind(BindKey("tcp", h.host_ip, 50000), "connect", port_id=ME)
    assert fe.run(out(h, TCP(sport=50000, dport=80, flags="S")))[0] == XDP_DROP
    assert fe.counters()["unknown_port"] == 1
