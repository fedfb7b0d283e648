"""Test kit for the switch's port programs run frame by frame with BPF_PROG_TEST_RUN: the port
object loaded with one NIC and one sender port on the test bed's link, the frames a port sends,
and the egress counters by reason. Shared by the TC egress and the XDP egress fast path tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether

from mstackd import libbpf, paths
from mstackd.abi import consts
from mstackd.switch import SwitchMaps, mac_bytes

ME, OTHER = 3, 4  # port ids: the sender and another port

EG = {
    name[len("MSTACK_EG_") :].lower(): getattr(consts, name)
    for name in dir(consts)
    if name.startswith("MSTACK_EG_") and name != "MSTACK_EG_NSLOTS"
}


@dataclass
class EgressRun:
    """One egress program of the loaded port object, and the counters it keeps."""

    obj: libbpf.BpfObject
    maps: SwitchMaps
    fd: int
    host: Any  # the remote_host fixture's object
    stats: libbpf.BpfMap

    def run(self, frame: bytes) -> tuple[int, bytes]:
        # The sender is told by the ingress ifindex (skb->ifindex for TC, where struct
        # __sk_buff up to `ifindex` isn't settable; xdp_md.ingress_ifindex for XDP), which for
        # a test run is the loopback: port_object maps the loopback as this port's host end.
        r = libbpf.prog_test_run(self.fd, frame)
        return r.retval, r.data

    def counters(self) -> dict[str, int]:
        out = {}
        for name, slot in EG.items():
            vals = self.stats.lookup(slot)
            assert isinstance(vals, list)
            out[name] = int(sum(vals))
        return out


@contextmanager
def port_object(h: Any, bpf_pin_dir: Path) -> Iterator[tuple[libbpf.BpfObject, SwitchMaps]]:
    """switch_port.bpf.o loaded with the test bed's NIC and its address, the loopback (a test
    run's ingress) as port ME's host end; closed after."""
    obj = libbpf.BpfObject(paths.bpf_object("switch_port.bpf.o"), bpf_pin_dir).load()
    try:
        maps = SwitchMaps.of_port_object(obj)
        maps.add_nic(h.host_ifindex, mac_bytes(h.host_mac))
        maps.add_local_addr(h.host_ifindex, h.host_ip)
        maps.port_by_host_if.update(1, ME)
        yield obj, maps
    finally:
        obj.close()


def egress_stats(obj: libbpf.BpfObject) -> libbpf.BpfMap:
    return obj.map("egress_stats", "__u32", "__u64")


def out(h: Any, l4: Any, src: str | None = None, dst: str | None = None) -> bytes:
    """A frame the port sends to the remote (from its host address unless told)."""
    ip = IP(src=src or h.host_ip, dst=dst or h.remote_ip)
    return bytes(Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:bb") / ip / l4)


# Frames an egress program drops before looking at bindings, and the counter each one bumps.
MALFORMED: list[tuple[Callable[[Any], bytes], str]] = [
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
]
