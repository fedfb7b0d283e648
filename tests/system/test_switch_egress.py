"""Verdicts of the port egress program (TC on a port's host end), frame by frame with
BPF_PROG_TEST_RUN on the test bed's link: a user-level stack may send only from its own
bindings and flows, from a local address of the NIC the route leaves by; every drop is counted
by reason; a listening member's SYN-ACK records the flow that ingress then follows."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import TCP, UDP

from mstackd.abi import consts
from mstackd.switch import BindKey, flow_key
from switchkit import MALFORMED, ME, OTHER, EgressRun, egress_stats, out, port_object

pytestmark = pytest.mark.system

TC_ACT_SHOT, TC_ACT_REDIRECT = 2, 7


class Egress(EgressRun):
    """port_egress, the TC program on a port's host end."""


@pytest.fixture
def eg(remote_host, bpf_pin_dir: Path) -> Iterator[Egress]:  # type: ignore[no-untyped-def]
    with port_object(remote_host, bpf_pin_dir) as (obj, maps):
        yield Egress(obj, maps, obj.program_fd("port_egress"), remote_host, egress_stats(obj))


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


@pytest.mark.parametrize("build, reason", MALFORMED)
def test_malformed_and_unroutable_frames_are_dropped_by_reason(
    eg: Egress, build: Callable[[Any], bytes], reason: str
) -> None:
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
