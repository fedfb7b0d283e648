"""Leased port blocks for active opens (design.md section 4). A bind(0) shadow per outgoing
connection would hold its port through TIME_WAIT and cap a client at a few hundred new
connections a second; instead a stack gets whole blocks of local ports. Each block is kept from
the kernel's own ephemeral choice (net.ipv4.ip_local_reserved_ports) and from explicit binds (the
daemon holds a bound socket on every port of it, without SO_REUSEADDR), and the switch steers
(tcp, addr, p) to the port for every p in it."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from mstackd.switch import BindKey

log = logging.getLogger("mstackd.leases")

RESERVED = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")
RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_BLOCK = 64
MAX_BLOCK = 4096


class LeaseError(Exception):
    def __init__(self, err: int, detail: str) -> None:
        super().__init__(detail)
        self.errno = err
        self.detail = detail


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """'8080,50000-50063' -> [(8080, 8080), (50000, 50063)]"""
    out = []
    for part in text.replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def compress(ports: set[int]) -> list[tuple[int, int]]:
    """{1, 2, 3, 7} -> [(1, 3), (7, 7)]"""
    out: list[tuple[int, int]] = []
    for p in sorted(ports):
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in sorted(ranges))


@dataclass
class Lease:
    id: int
    port_id: int
    addr: str
    first: int
    count: int
    holders: list[socket.socket] = field(default_factory=list, repr=False)

    @property
    def last(self) -> int:
        return self.first + self.count - 1


class LeaseManager:
    def __init__(self, switch: object, reserved: Path = RESERVED, port_range: Path = RANGE) -> None:
        self.switch = switch
        self.reserved = reserved
        self.port_range = port_range
        self.leases: dict[int, Lease] = {}
        self._next_id = 1

    def _ephemeral(self) -> tuple[int, int]:
        lo, hi = self.port_range.read_text().split()
        return int(lo), int(hi)

    def _reserve(self, first: int, last: int, add: bool) -> None:
        """Add or remove a block in ip_local_reserved_ports. Port by port: the kernel merges
        adjacent ranges (ours with a neighbour's), so a range written is not always read back."""
        ports = {p for a, b in parse_ranges(self.reserved.read_text()) for p in range(a, b + 1)}
        block = set(range(first, last + 1))
        ports = ports | block if add else ports - block
        self.reserved.write_text(format_ranges(compress(ports)) + "\n")

    def lease(self, port_id: int, addr: str, count: int = 0) -> Lease:
        count = count or DEFAULT_BLOCK
        if not 1 <= count <= MAX_BLOCK:
            raise LeaseError(errno.EINVAL, f"a lease is 1 to {MAX_BLOCK} ports, not {count}")
        lo, hi = self._ephemeral()
        taken = parse_ranges(self.reserved.read_text())
        # Blocks aligned to their size, from the top of the ephemeral range down: the kernel
        # picks its own ephemeral ports all over the range, so any block may be partly in use;
        # a block whose ports cannot all be held is skipped.
        first = (hi + 1) // count * count - count
        while first >= lo:
            last = first + count - 1
            overlaps = any(a <= last and first <= b for a, b in taken)
            if not overlaps and last <= hi:
                holders = self._hold(addr, first, last)
                if holders is not None:
                    return self._install(port_id, addr, first, count, holders)
            first -= count
        raise LeaseError(errno.EADDRNOTAVAIL, f"no free block of {count} ports in {lo}-{hi}")

    def _hold(self, addr: str, first: int, last: int) -> list[socket.socket] | None:
        holders: list[socket.socket] = []
        try:
            for p in range(first, last + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                holders.append(s)
                s.bind((addr, p))
        except OSError:
            for s in holders:
                s.close()
            return None
        return holders

    def _install(
        self, port_id: int, addr: str, first: int, count: int, holders: list[socket.socket]
    ) -> Lease:
        lease = Lease(self._next_id, port_id, addr, first, count, holders)
        try:
            self._reserve(first, lease.last, add=True)
            for p in range(first, first + count):
                self.switch.bind(BindKey("tcp", addr, p), "connect", port_id=port_id)  # type: ignore[attr-defined]
        except BaseException:
            self._undo(lease)
            raise
        self._next_id += 1
        self.leases[lease.id] = lease
        log.info("lease %d: %s:%d-%d to port %d", lease.id, addr, first, lease.last, port_id)
        return lease

    def _undo(self, lease: Lease) -> None:
        for p in range(lease.first, lease.first + lease.count):
            with contextlib.suppress(Exception):
                self.switch.unbind(BindKey("tcp", lease.addr, p))  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            self._reserve(lease.first, lease.last, add=False)
        for s in lease.holders:
            s.close()
        lease.holders.clear()

    def release(self, lease_id: int, port_id: int | None = None) -> None:
        lease = self.leases.get(lease_id)
        if lease is None or (port_id is not None and lease.port_id != port_id):
            raise LeaseError(errno.ENOENT, f"no lease {lease_id} of this port")
        del self.leases[lease_id]
        self._undo(lease)
        log.info("lease %d released", lease_id)

    def port_gone(self, port_id: int) -> None:
        for lease in [x for x in self.leases.values() if x.port_id == port_id]:
            self.release(lease.id)

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {"id": x.id, "port_id": x.port_id, "addr": x.addr, "first": x.first, "count": x.count}
            for x in self.leases.values()
        ]

    def restore(self, items: list[dict[str, object]], live_ports: set[int]) -> None:
        """A restarted daemon: leases of adopted ports are held again; the others are undone."""
        for item in items:
            lease = Lease(int(item["id"]), int(item["port_id"]), str(item["addr"]),  # type: ignore[call-overload]
                          int(item["first"]), int(item["count"]))  # type: ignore[call-overload]  # fmt: skip
            self._next_id = max(self._next_id, lease.id + 1)
            holders = None
            if lease.port_id in live_ports:
                holders = self._hold(lease.addr, lease.first, lease.last)
            if holders is None:
                self._undo(lease)
                continue
            lease.holders = holders
            self.leases[lease.id] = lease

    def close(self) -> None:
        for lease_id in list(self.leases):
            self.release(lease_id)
