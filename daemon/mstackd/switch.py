"""The switch's maps seen from mstackd: typed operations on NICs, local addresses, bindings,
listen groups and flows. Addresses and ports are given in host terms (strings, ints) and
stored in network byte order, exactly as the BPF programs read them (mstack_abi.h)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

from mstackd import kabi, libbpf
from mstackd.abi import consts, ffi

PROTOS = {"tcp": consts.MSTACK_PROTO_TCP, "udp": consts.MSTACK_PROTO_UDP}
KINDS = {
    "listen": consts.MSTACK_BIND_LISTEN,
    "connect": consts.MSTACK_BIND_CONNECT,
    "udp": consts.MSTACK_BIND_UDP,
}

INGRESS_COUNTERS = {
    "frames": consts.MSTACK_IN_FRAMES,
    "not_ipv4": consts.MSTACK_IN_NOT_IPV4,
    "other_mac": consts.MSTACK_IN_OTHER_MAC,
    "other_ip": consts.MSTACK_IN_OTHER_IP,
    "bad_ip": consts.MSTACK_IN_BAD_IP,
    "fragment": consts.MSTACK_IN_FRAGMENT,
    "truncated": consts.MSTACK_IN_TRUNCATED,
    "no_binding": consts.MSTACK_IN_NO_BINDING,
    "to_port_flow": consts.MSTACK_IN_TO_PORT_FLOW,
    "to_port_new": consts.MSTACK_IN_TO_PORT_NEW,
    "to_port_conn": consts.MSTACK_IN_TO_PORT_CONN,
    "to_port_icmp": consts.MSTACK_IN_TO_PORT_ICMP,
    "to_port_udp": consts.MSTACK_IN_TO_PORT_UDP,
    "group_empty": consts.MSTACK_IN_GROUP_EMPTY,
    "kernel_flow": consts.MSTACK_IN_KERNEL_FLOW,
    "no_flow": consts.MSTACK_IN_NO_FLOW,
    "group_hold": consts.MSTACK_IN_GROUP_HOLD,
}
assert len(INGRESS_COUNTERS) == consts.MSTACK_IN_NSLOTS


def ip_be(addr: str) -> int:
    """IPv4 text -> the u32 whose memory holds the address in network order."""
    return int(struct.unpack("=I", ipaddress.IPv4Address(addr).packed)[0])


def ip_text(be: int) -> str:
    return str(ipaddress.IPv4Address(struct.pack("=I", be)))


def mac_bytes(mac: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff' -> 6 bytes."""
    b = bytes.fromhex(mac.replace(":", ""))
    if len(b) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return b


def port_be(port: int) -> int:
    if not 0 <= port < 65536:
        raise ValueError(f"port out of range: {port}")
    return socket.htons(port)


@dataclass(frozen=True)
class BindKey:
    proto: str
    addr: str
    port: int

    def cdata(self) -> dict[str, int]:
        return {"addr": ip_be(self.addr), "port": port_be(self.port), "proto": PROTOS[self.proto]}


class SwitchMaps:
    """The maps of a loaded switch_ingress object (or of the pinned set a daemon reopened)."""

    def __init__(self, obj: libbpf.BpfObject, ingress: bool = True) -> None:
        self.nics = obj.map("nics", "__u32", "struct mstack_nic")
        self.local_addrs = obj.map("local_addrs", "__u32", "__u32")
        self.bindings = obj.map("bindings", "struct mstack_bind_key", "struct mstack_binding")
        self.groups = obj.map("groups", "__u32", "struct mstack_group")
        self.flows = obj.map("flows", "struct mstack_flow_key", "struct mstack_flow")
        self.port_stats = obj.map("port_stats", "__u32", "struct mstack_port_counters")
        self.port_by_host_if = obj.map("port_by_host_if", "__u32", "__u32")
        self.port_by_app_if = obj.map("port_by_app_if", "__u32", "__u32")
        if ingress:  # maps only the ingress object has
            self.port_devmap = obj.map("port_devmap", "__u32", "__u32")
            self.ingress_stats = obj.map("ingress_stats", "__u32", "__u64")

    @classmethod
    def of_port_object(cls, obj: libbpf.BpfObject) -> SwitchMaps:
        """The shared maps as seen through a switch_port object (no ingress counters)."""
        return cls(obj, ingress=False)

    def add_nic(self, ifindex: int, mac: bytes) -> None:
        if len(mac) != 6:
            raise ValueError("a MAC address has 6 bytes")
        self.nics.update(ifindex, {"mac": list(mac), "flags": 0})

    def add_local_addr(self, ifindex: int, addr: str) -> None:
        self.local_addrs.update(ip_be(addr), ifindex)

    def del_local_addr(self, ifindex: int, addr: str) -> None:
        if self.local_addrs.lookup(ip_be(addr)) == ifindex:
            self.local_addrs.delete(ip_be(addr))

    def bind(self, key: BindKey, kind: str, *, group: int = 0, port_id: int = 0) -> None:
        value = {"kind": KINDS[kind], "group": group, "port_id": port_id}
        self.bindings.update(key.cdata(), value, kabi.BPF_NOEXIST)

    def unbind(self, key: BindKey) -> bool:
        return self.bindings.delete(key.cdata())

    def set_group(
        self, group: int, members: list[int], gen: int = 0, hold_until_ns: int = 0
    ) -> None:
        """hold_until_ns (CLOCK_MONOTONIC, as bpf_ktime_get_ns): with no member, drop new flows
        until then instead of passing them to the kernel (mstack_abi.h)."""
        if len(members) > consts.MSTACK_GROUP_MAX_MEMBERS:
            raise ValueError(f"a listen group holds at most {consts.MSTACK_GROUP_MAX_MEMBERS}")
        self.groups.update(
            group,
            {"n": len(members), "gen": gen, "hold_until_ns": hold_until_ns, "members": members},
        )

    def set_port(self, port_id: int, host_ifindex: int) -> None:
        self.port_devmap.update(port_id, host_ifindex)

    def del_port(self, port_id: int) -> None:
        self.port_devmap.delete(port_id)

    def ingress_counters(self) -> dict[str, int]:
        out = {}
        for name, slot in INGRESS_COUNTERS.items():
            vals = self.ingress_stats.lookup(slot)
            assert isinstance(vals, list)
            out[name] = int(sum(vals))
        return out

    def port_counters(self, port_id: int) -> dict[str, int]:
        vals = self.port_stats.lookup(port_id)
        assert isinstance(vals, list)
        fields = ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes", "tx_dropped")
        return {f: int(sum(getattr(v, f) for v in vals)) for f in fields}

    def flow_entries(self) -> list[tuple[Any, Any]]:
        out = []
        for k in self.flows.each_key():
            out.append((k, self.flows.lookup(k)))
        return out


def flow_key(raddr: str, rport: int, laddr: str, lport: int, proto: str = "tcp") -> dict[str, int]:
    return {
        "raddr": ip_be(raddr),
        "laddr": ip_be(laddr),
        "rport": port_be(rport),
        "lport": port_be(lport),
        "proto": PROTOS[proto],
    }


__all__ = [
    "BindKey",
    "SwitchMaps",
    "ffi",
    "flow_key",
    "ip_be",
    "ip_text",
    "mac_bytes",
    "port_be",
]
