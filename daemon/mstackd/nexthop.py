"""The switch's egress fast path as mstackd keeps it (port_egress_xdp in switch_port.bpf.c):
per NIC, whether frames sent through the NIC DEVMAP get out (tried with a probe frame, never
guessed from the driver), and the next-hop cache the port XDP program reads — destination ->
(NIC MAC, next hop's MAC) from the kernel's routes and neighbours. Whatever is not cached or not
proven takes the TC path, which needs none of this."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from mstackd import kabi, libbpf
from mstackd.abi import consts
from mstackd.switch import ip_be, ip_text, mac_bytes

log = logging.getLogger("mstackd.nexthop")

# Neighbour states whose MAC the kernel itself would send to (include/uapi/linux/neighbour.h).
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x02, 0x04, 0x08, 0x10
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY
RTN_UNICAST = 1

# Netlink multicast groups and message types the monitor follows (linux/rtnetlink.h).
RTMGRP_LINK, RTMGRP_NEIGH, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x4, 0x10, 0x40
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 24, 25, 28, 29

TICK_S = 0.1  # how often the daemon's loop calls tick(): misses wait at most this long
AGE_S = 2.0  # every cached next hop is re-resolved this often (a changed MAC is followed)
REPROBE_S = 5.0  # every native NIC is probed again this often
MISSES_PER_TICK = 64  # bound on the work a flood of misses can cause per tick
PROBE_FRAME_LEN = 60


@dataclass
class FastNic:
    ifindex: int
    mac: str
    native: bool
    last_probe: float = 0.0
    probes: int = 0


class FastPath:
    """The fast path's maps of a loaded switch_port object, kept from netlink and probes."""

    def __init__(
        self,
        portprog: libbpf.BpfObject,
        bpf_dir: Path,
        enabled: bool = True,
        available: bool = True,
    ) -> None:
        self.enabled = enabled  # on now (NICs that pass the probe use it)
        self.available = available  # may be turned on at run time (the watch is attached)
        self.obj = portprog
        self.bpf_dir = bpf_dir
        self.devmap = portprog.map("nic_devmap", "__u32", "__u32")
        self.fast = portprog.map("nic_fast", "__u32", "struct mstack_nic_fast")
        self.xmit = portprog.map("nic_xmit", "__u32", "struct mstack_nic_xmit")
        self.nexthops = portprog.map("nexthops", "struct mstack_nh_key", "struct mstack_nexthop")
        self.wanted = portprog.map("nh_wanted", "struct mstack_nh_key", "__u64")
        self.nics: dict[int, FastNic] = {}
        self.dirty: set[int] = set()  # NICs whose cache netlink says to re-resolve now
        self.reprobe: set[int] = set()
        self.last_age = time.monotonic()
        self.mon: socket.socket | None = None
        self.watching = False

    # -- the tracepoint and the monitor ---------------------------------------------------------

    def start(self) -> None:
        """Attach the xdp_devmap_xmit watch (pinned: it keeps turning a failing NIC's fast path
        off while no daemon runs) and open the netlink monitor — also while the fast path is off,
        so that it can be turned on at run time."""
        if not self.available:
            return
        try:
            for prog, event in (
                ("nic_xmit_watch", "xdp_devmap_xmit"),
                ("nic_redirect_watch", "xdp_redirect_err"),
            ):
                self.obj.attach_tracepoint_pinned(prog, "xdp", event, self.bpf_dir / prog)
            self.watching = True
        except libbpf.BpfError as e:  # without the watch, the fast path stays off
            log.warning("egress fast path off: %s", e)
            return
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))
        self.mon = s

    def monitor_fd(self) -> int | None:
        return self.mon.fileno() if self.mon is not None else None

    def on_netlink(self) -> None:
        """Netlink said something changed: note which NICs to re-resolve (or re-probe) at the
        next tick. A route change may concern any NIC; an overrun means anything changed."""
        assert self.mon is not None
        while True:
            try:
                data = self.mon.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.dirty |= set(self.nics)
                    continue
                raise
            off = 0
            while off + 20 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                idx = struct.unpack_from("=i", data, off + 20)[0] if off + 24 <= len(data) else 0
                if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                    self.dirty |= set(self.nics)
                elif mtype in (RTM_NEWLINK, RTM_DELLINK) and idx in self.nics:
                    self.dirty.add(idx)
                    self.reprobe.add(idx)
                elif mtype in (RTM_NEWNEIGH, RTM_DELNEIGH, RTM_NEWADDR, RTM_DELADDR) and (
                    idx in self.nics
                ):
                    self.dirty.add(idx)
                off += (length + 3) & ~3

    # -- NICs -------------------------------------------------------------------------------------

    def add_nic(self, ifindex: int, mac: str, mtu: int, native: bool) -> None:
        """A NIC the switch attached to (or adopted): off until a probe proves it. In generic
        mode it stays off (the DEVMAP path needs the NIC's driver to take XDP frames)."""
        nic = FastNic(ifindex, mac, native)
        self.nics[ifindex] = nic
        if not (self.enabled and self.watching and native):
            self._set(ifindex, False, mtu)
            return
        self.devmap.update(ifindex, ifindex)
        with contextlib.suppress(libbpf.BpfError):  # EEXIST: adopted, keep its counters
            self.xmit.update(ifindex, {}, kabi.BPF_NOEXIST)
        self._set(ifindex, False, mtu)
        self.probe(ifindex)

    def remove_nic(self, ifindex: int) -> None:
        """Fast path off first, then the cache and the DEVMAP entry (detach, shutdown)."""
        self.nics.pop(ifindex, None)
        self.dirty.discard(ifindex)
        self.reprobe.discard(ifindex)
        for m in (self.fast, self.devmap, self.xmit):
            with contextlib.suppress(libbpf.BpfError):
                m.delete(ifindex)
        for m in (self.nexthops, self.wanted):
            for k in list(m.each_key()):
                if k.ifindex == ifindex:
                    with contextlib.suppress(libbpf.BpfError):
                        m.delete(k)

    def _set(self, ifindex: int, on: bool, mtu: int | None = None) -> None:
        if mtu is None:
            cur: Any = self.fast.lookup(ifindex)
            max_len = cur.max_len if cur is not None else 0
        else:
            max_len = mtu + 14  # an Ethernet frame of the NIC's MTU
        self.fast.update(ifindex, {"on": int(on), "max_len": max_len})

    def any_on(self) -> bool:
        return any(self.is_on(i) for i in self.nics)

    def is_on(self, ifindex: int) -> bool:
        v: Any = self.fast.lookup(ifindex)
        return bool(v is not None and v.on)

    def probe(self, ifindex: int) -> bool:
        """Send one harmless frame (to the NIC's own MAC, ethertype MSTACK_PROBE_ETHERTYPE)
        through the NIC DEVMAP for real and turn the fast path on only if the NIC's
        ndo_xdp_xmit sent it and nothing was lost meanwhile (the tracepoints' counts)."""
        nic = self.nics.get(ifindex)
        if nic is None or not nic.native or not self.watching:
            return False
        nic.last_probe = time.monotonic()
        nic.probes += 1
        before: Any = self.xmit.lookup(ifindex)
        mac = mac_bytes(nic.mac)
        frame = mac + mac + struct.pack("!H", consts.MSTACK_PROBE_ETHERTYPE)
        frame += struct.pack("=I", ifindex)
        frame += bytes(PROBE_FRAME_LEN - len(frame))
        ok = False
        try:
            libbpf.prog_test_run(
                self.obj.program_fd("nic_probe"), frame, flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES
            )
            after: Any = self.xmit.lookup(ifindex)
            ok = (
                before is not None
                and after is not None
                and after.sent > before.sent
                and after.drops == before.drops
                and after.redirect_errs == before.redirect_errs
            )
        except libbpf.BpfError as e:
            log.info("fast path probe of ifindex %d failed: %s", ifindex, e)
        was = self.is_on(ifindex)
        self._set(ifindex, ok)
        if ok != was:
            log.info("egress fast path of ifindex %d %s", ifindex, "on" if ok else "off")
        return ok

    # -- the next-hop cache -----------------------------------------------------------------------

    @staticmethod
    def resolve(ipr: IPRoute, ifindex: int, daddr: str) -> bytes | None:
        """The next hop's MAC for `daddr` out of `ifindex`, as bpf_redirect_neigh would pick it
        (the route through that NIC: its gateway, or the destination on-link), or None when the
        kernel has no valid neighbour entry for it (the TC path resolves it)."""
        try:
            routes = ipr.route("get", dst=daddr, oif=ifindex)
        except NetlinkError:
            return None
        if not routes:
            return None
        r = routes[0]
        if r.get("type") != RTN_UNICAST or r.get("RTA_OIF") != ifindex:
            return None
        hop = r.get("RTA_GATEWAY") or daddr
        try:
            neighs = ipr.get_neighbours(ifindex=ifindex, dst=hop, family=socket.AF_INET)
        except NetlinkError:
            return None
        for n in neighs:
            mac = n.get("NDA_LLADDR")
            if n.get("NDA_DST") == hop and n["state"] & NUD_VALID and mac:
                b = mac_bytes(mac)
                if b != bytes(6):
                    return b
        return None

    def _refresh(self, ipr: IPRoute, ifindex: int, daddr_be: int) -> bool:
        """Resolve one destination into the cache (or out of it); True if cached."""
        nic = self.nics.get(ifindex)
        key = {"ifindex": ifindex, "daddr": daddr_be}
        mac = None if nic is None else self.resolve(ipr, ifindex, ip_text(daddr_be))
        if nic is None or mac is None:
            with contextlib.suppress(libbpf.BpfError):
                self.nexthops.delete(key)
            return False
        value = {"smac": list(mac_bytes(nic.mac)), "dmac": list(mac), "pad": 0}
        cur: Any = self.nexthops.lookup(key)
        if (
            cur is None
            or bytes(list(cur.dmac)) != mac
            or bytes(list(cur.smac)) != mac_bytes(nic.mac)
        ):
            try:
                self.nexthops.update(key, value)
            except libbpf.BpfError as e:  # E2BIG: the cache is full, the TC path carries it
                log.debug("next-hop cache: %s", e)
                return False
        return True

    def tick(self, now: float | None = None) -> None:
        """The daemon's loop, every TICK_S: resolve misses (a bounded number), re-resolve what
        netlink flagged, age the whole cache every AGE_S, probe every NIC every REPROBE_S."""
        if not self.enabled or not self.nics:
            return
        now = time.monotonic() if now is None else now
        wanted = list(self.wanted.each_key())
        aging = now - self.last_age >= AGE_S
        if aging:
            self.last_age = now
        if wanted or aging or self.dirty:
            with IPRoute() as ipr:
                for i, k in enumerate(wanted):
                    with contextlib.suppress(libbpf.BpfError):
                        self.wanted.delete(k)
                    if i < MISSES_PER_TICK and k.ifindex in self.nics:
                        self._refresh(ipr, k.ifindex, k.daddr)
                if aging or self.dirty:
                    for k in list(self.nexthops.each_key()):
                        if aging or k.ifindex in self.dirty:
                            self._refresh(ipr, k.ifindex, k.daddr)
                    self.dirty.clear()
        for nic in list(self.nics.values()):
            # Also while on: a peer that stopped taking XDP frames is found without live loss.
            if nic.ifindex in self.reprobe or now - nic.last_probe >= REPROBE_S:
                self.probe(nic.ifindex)
        self.reprobe.clear()

    def add_nexthop(self, ifindex: int, daddr: str) -> bool:
        """Resolve one destination now (tests; the daemon waits for a miss)."""
        with IPRoute() as ipr:
            return self._refresh(ipr, ifindex, ip_be(daddr))

    # -- views and lifetime -----------------------------------------------------------------------

    def nic_view(self, ifindex: int) -> dict[str, Any]:
        nic = self.nics.get(ifindex)
        x: Any = self.xmit.lookup(ifindex)
        return {
            # Could it be on (native NIC, fast path enabled in this daemon, tracepoints on)?
            "enabled": bool(nic and nic.native and self.enabled and self.watching),
            "on": self.is_on(ifindex),
            "probes": nic.probes if nic else 0,
            "xmit_sent": int(x.sent) if x is not None else 0,
            "xmit_drops": int(x.drops) if x is not None else 0,
            "redirect_errs": int(x.redirect_errs) if x is not None else 0,
            "turned_off": int(x.turned_off) if x is not None else 0,
            "nexthops": sum(1 for k in self.nexthops.each_key() if k.ifindex == ifindex),
        }

    def close(self, teardown: bool) -> None:
        if teardown:
            for ifindex in list(self.nics):
                self.remove_nic(ifindex)
        if self.mon is not None:
            self.mon.close()
            self.mon = None


__all__ = ["NUD_VALID", "TICK_S", "FastPath"]
