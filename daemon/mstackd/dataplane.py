"""The switch's data plane as mstackd drives it: the BPF objects (maps pinned by name under the
BPF directory, so they outlive the daemon), attaching the ingress program to NICs, and creating
and removing ports — a veth pair whose app end lives in the ports namespace with the XSK, and
whose host end carries the egress check. The control plane (registry, protocol) calls this;
nothing here knows about processes or sockets."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool

from mstackd import kabi, libbpf, paths
from mstackd.abi import consts
from mstackd.nexthop import FastPath
from mstackd.nsexec import NetnsExecutor, ensure_netns, netns_path, remove_netns
from mstackd.switch import SwitchMaps, mac_bytes
from mstackd.xsk import Geometry, XskHandle, create_xsk

log = logging.getLogger("mstackd.dataplane")

MODES = {"native": kabi.XDP_FLAGS_DRV_MODE, "generic": kabi.XDP_FLAGS_SKB_MODE}


class AttachError(Exception):
    """Attaching the switch to a NIC was refused; the message says why and what to do."""


@dataclass
class Nic:
    ifname: str
    ifindex: int
    mac: str
    mtu: int
    mode: str
    prog_id: int
    addrs: set[str] = field(default_factory=set)


@dataclass
class Port:
    port_id: int
    host_if: str
    app_if: str
    host_ifindex: int
    app_ifindex: int
    geom: Geometry
    xsk: XskHandle | None = None


def ensure_bpffs(path: Path) -> None:
    """bpffs must be mounted where the pins go (systemd mounts /sys/fs/bpf; bare hosts may not)."""
    root = Path("/sys/fs/bpf")
    if path.is_relative_to(root) and not _is_bpffs(root):
        libbpf.mount("bpf", str(root), "bpf")
    path.mkdir(parents=True, exist_ok=True)


def _is_bpffs(p: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1:3] == [str(p), "bpf"] for line in f)


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class Dataplane:
    """Loaded switch programs, attached NICs and live ports of one mstackd."""

    def __init__(
        self,
        bpf_dir: Path,
        ports_netns: str = paths.DEFAULT_PORTS_NETNS,
        port_prefix: str = "msp",
        egress_fast: bool = False,
    ) -> None:
        if len(port_prefix) > 10:  # + up to 4 digits of port id + "h"/"a" <= IFNAMSIZ (15)
            raise ValueError("port name prefix: at most 10 characters")
        self.bpf_dir = bpf_dir
        self.ports_netns = ports_netns
        self.port_prefix = port_prefix
        ensure_bpffs(bpf_dir)
        self.ingress = self._load_ingress(bpf_dir)
        self.portprog = self._load_port(bpf_dir)
        self.maps = SwitchMaps(self.ingress)
        self.xsks = self.portprog.map("xsks", "__u32", "__u32")
        self.egress_stats = self.portprog.map("egress_stats", "__u32", "__u64")
        # The XDP egress fast path (port host end -> NIC DEVMAP): on at start only if asked for
        # (config egress_fast_path, --egress-fast-path), switchable at run time (fast_path).
        # MSTACK_EGRESS_FAST=1 turns it on at start, =0 leaves it out entirely: no tracepoints,
        # no run-time switch, every port on the TC path with no XDP program on its host end.
        env = os.environ.get("MSTACK_EGRESS_FAST", "")
        self.fastpath = FastPath(
            self.portprog, bpf_dir, enabled=env == "1" or (egress_fast and env != "0"),
            available=env != "0",
        )  # fmt: skip
        self.fastpath.start()
        # Ours to remove at teardown if we made it — or a previous mstackd did (state file).
        self.created_netns = ensure_netns(ports_netns)
        self.ns = NetnsExecutor(ports_netns)
        # No IPv6 on port links: the kernel would emit solicitations on them.
        self.ns.run(_write_sysctl, "/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        self.ns.run(_write_sysctl, "/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")
        self.nics: dict[str, Nic] = {}
        self.ports: dict[int, Port] = {}
        self.port_xdp: bool | None = None  # XDP on the ports' host ends (None: not yet known)

    @staticmethod
    def _load_ingress(bpf_dir: Path) -> libbpf.BpfObject:
        obj = libbpf.BpfObject(paths.bpf_object("switch_ingress.bpf.o"), bpf_dir)
        pin = bpf_dir / "port_devmap"
        try:
            if pin.exists():  # a restarted daemon: the same devmap the attached programs use
                obj.reuse_map("port_devmap", pin)
            obj.load()
            if not pin.exists():
                obj.map("port_devmap", "__u32", "__u32").pin(pin)
        except BaseException:
            obj.close()
            raise
        return obj

    @staticmethod
    def _load_port(bpf_dir: Path) -> libbpf.BpfObject:
        obj = libbpf.BpfObject(paths.bpf_object("switch_port.bpf.o"), bpf_dir)
        pin = bpf_dir / "nic_devmap"
        try:
            if pin.exists():  # a restarted daemon: the DEVMAP attached port programs use
                obj.reuse_map("nic_devmap", pin)
            obj.load()
            if not pin.exists():
                obj.map("nic_devmap", "__u32", "__u32").pin(pin)
        except BaseException:
            obj.close()
            raise
        return obj

    # -- NICs ---------------------------------------------------------------------------------

    def attach_nic(self, ifname: str, mode: str = "native") -> Nic:
        if mode not in MODES:
            raise AttachError(f"mode must be native or generic, not {mode!r}")
        if ifname in self.nics:
            raise AttachError(f"{ifname}: already attached ({self.nics[ifname].mode})")
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as e:
            raise AttachError(f"{ifname}: no such interface") from e
        existing = libbpf.xdp_query_id(ifindex)
        if existing:
            raise AttachError(
                f"{ifname} already has an XDP program (id {existing}) that is not mstackd's; "
                "remove it first (ip link set dev IFACE xdp off) — mstackd will not replace it, "
                "and libxdp's multi-program dispatcher does not load on this kernel"
            )
        if mode == "generic" and Ethtool().get_features(ifname).features["rx-gro"].enable:
            raise AttachError(
                f"{ifname}: generic XDP runs after GRO, which merges frames beyond what a port "
                f"can hold; turn GRO off first (ethtool -K {ifname} gro off) or use native mode"
            )
        with IPRoute() as ipr:
            link = ipr.link("get", index=ifindex)[0]
            mac = link.get("IFLA_ADDRESS")
            mtu = int(link.get("IFLA_MTU"))
            addrs = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=ifindex, family=2)}
        self.maps.add_nic(ifindex, mac_bytes(mac))
        for a in addrs:
            self.maps.add_local_addr(ifindex, a)
        try:
            fd = self.ingress.program_fd("switch_ingress")
            libbpf.xdp_attach(ifindex, fd, MODES[mode] | kabi.XDP_FLAGS_UPDATE_IF_NOEXIST)
        except libbpf.BpfError as e:
            for a in addrs:
                self.maps.del_local_addr(ifindex, a)
            self.maps.nics.delete(ifindex)
            raise AttachError(f"{ifname}: attaching the switch in {mode} mode failed: {e}") from e
        nic = Nic(ifname, ifindex, mac, mtu, mode, libbpf.xdp_query_id(ifindex, MODES[mode]), addrs)
        self.nics[ifname] = nic
        self._fast_add(nic)
        log.info("attached %s (%s, prog %d), addresses %s", ifname, mode, nic.prog_id, addrs)
        return nic

    def detach_nic(self, ifname: str) -> None:
        nic = self.nics.pop(ifname, None)
        if nic is None:
            raise AttachError(f"{ifname}: not attached")
        self.fastpath.remove_nic(nic.ifindex)  # before the NIC loses its program
        self.sync_port_xdp()
        with contextlib.suppress(libbpf.BpfError, OSError):
            if libbpf.xdp_query_id(nic.ifindex, MODES[nic.mode]) == nic.prog_id:
                libbpf.xdp_detach(nic.ifindex, MODES[nic.mode])
        for a in nic.addrs:
            self.maps.del_local_addr(nic.ifindex, a)
        self.maps.nics.delete(nic.ifindex)

    def adopt_nic(self, ifname: str, ifindex: int, mode: str, prog_id: int) -> Nic | None:
        """A restarted daemon: the NIC still carries the switch program the dead daemon attached
        (it uses the same pinned maps), so keep it rather than replace it."""
        try:
            if socket.if_nametoindex(ifname) != ifindex:
                return None
        except OSError:
            return None
        if libbpf.xdp_query_id(ifindex, MODES[mode]) != prog_id:
            return None
        with IPRoute() as ipr:
            link = ipr.link("get", index=ifindex)[0]
            addrs = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=ifindex, family=2)}
        nic = Nic(ifname, ifindex, link.get("IFLA_ADDRESS"), int(link.get("IFLA_MTU")), mode,
                  prog_id, addrs)  # fmt: skip
        self.maps.add_nic(ifindex, mac_bytes(nic.mac))
        for a in addrs:
            self.maps.add_local_addr(ifindex, a)
        self.nics[ifname] = nic
        self._fast_add(nic)
        log.info("adopted %s (%s, prog %d)", ifname, mode, prog_id)
        return nic

    def _fast_add(self, nic: Nic) -> None:
        """The fast path for a NIC: only in native mode, and only once the probe passed; any
        failure leaves it off (the TC path needs none of it)."""
        try:
            self.fastpath.add_nic(nic.ifindex, nic.mac, nic.mtu, nic.mode == "native")
        except (libbpf.BpfError, OSError) as e:
            log.warning("%s: egress fast path off: %s", nic.ifname, e)
            with contextlib.suppress(libbpf.BpfError, OSError):
                self.fastpath.remove_nic(nic.ifindex)
        self.sync_port_xdp()

    def _attach_port_xdp(self, port: Port) -> None:
        """The XDP half of the egress check on a port's host end (native; it passes every frame
        it does not send itself to port_egress), while some NIC's fast path is on."""
        if not self.port_xdp:
            return
        try:
            if libbpf.xdp_query_id(port.host_ifindex) == 0:
                fd = self.portprog.program_fd("port_egress_xdp")
                libbpf.xdp_attach(port.host_ifindex, fd, kabi.XDP_FLAGS_DRV_MODE)
        except libbpf.BpfError as e:
            log.warning("port %d: no XDP egress fast path: %s", port.port_id, e)

    @staticmethod
    def _detach_port_xdp(port: Port) -> None:
        with contextlib.suppress(libbpf.BpfError, OSError):  # a host end has no XDP but ours
            if libbpf.xdp_query_id(port.host_ifindex, kabi.XDP_FLAGS_DRV_MODE):
                libbpf.xdp_detach(port.host_ifindex, kabi.XDP_FLAGS_DRV_MODE)

    def sync_port_xdp(self) -> None:
        """XDP on the ports' host ends only while some NIC's fast path is on: native XDP on a
        veth is not free (every frame is taken through XDP one by one, and copied for want of
        headroom), so with no NIC to use it the TC path stays exactly as without it."""
        want = self.fastpath.enabled and self.fastpath.any_on()
        if want == self.port_xdp:
            return
        self.port_xdp = want
        log.info("XDP egress on the ports' host ends: %s", "on" if want else "off")
        for port in self.ports.values():
            if want:
                self._attach_port_xdp(port)
            else:
                self._detach_port_xdp(port)

    def set_fast_path(self, on: bool) -> None:
        """Turn the egress fast path on or off for the whole switch at run time (an operator's
        switch, and how benchmarks compare the two paths): off takes the NICs' flags down and
        the XDP program off every port's host end, so TC carries everything as without it."""
        fp = self.fastpath
        if on and not fp.watching:
            raise AttachError("the egress fast path is not available in this daemon")
        fp.enabled = on
        for nic in self.nics.values():
            if on:
                self._fast_add(nic)
            else:
                with contextlib.suppress(libbpf.BpfError, OSError):
                    fp.add_nic(nic.ifindex, nic.mac, nic.mtu, False)  # flag off, stays off
        self.sync_port_xdp()

    def adopt_port(self, port: Port) -> bool:
        """A restarted daemon: take over a port whose links still exist (True), or clear what is
        left of it from the switch (False)."""
        self.ports[port.port_id] = port
        try:
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=port.host_if)
            if idx == [port.host_ifindex]:
                if self.port_xdp:
                    self._attach_port_xdp(port)
                elif self.port_xdp is False:
                    self._detach_port_xdp(port)
                return True
        except Exception:
            pass
        self.delete_port(port.port_id)
        return False

    def nic_addr_added(self, ifindex: int, addr: str) -> None:
        for nic in self.nics.values():
            if nic.ifindex == ifindex and addr not in nic.addrs:
                nic.addrs.add(addr)
                self.maps.add_local_addr(ifindex, addr)

    def nic_addr_removed(self, ifindex: int, addr: str) -> None:
        for nic in self.nics.values():
            if nic.ifindex == ifindex and addr in nic.addrs:
                nic.addrs.discard(addr)
                self.maps.del_local_addr(ifindex, addr)

    # -- ports --------------------------------------------------------------------------------

    def _free_port_id(self) -> int:
        for pid in range(1, consts.MSTACK_MAX_PORTS):
            if pid not in self.ports:
                return pid
        raise OSError(errno.ENOSPC, f"all {consts.MSTACK_MAX_PORTS - 1} ports are in use")

    def create_port(self, geom: Geometry | None = None) -> Port:
        """A new port with its XSK; the caller hands `port.xsk` fds to the application and then
        closes its own copies (the XSKMAP keeps the socket)."""
        geom = geom or Geometry()
        geom.validate()
        port_id = self._free_port_id()
        host_if = f"{self.port_prefix}{port_id}h"
        app_if = f"{self.port_prefix}{port_id}a"
        port = Port(port_id, host_if, app_if, 0, 0, geom)
        self.ports[port_id] = port
        try:
            with IPRoute() as ipr:
                ipr.link(
                    "add",
                    ifname=host_if,
                    kind="veth",
                    peer={"ifname": app_if, "net_ns_fd": netns_path(self.ports_netns)},
                )
                port.host_ifindex = ipr.link_lookup(ifname=host_if)[0]
                _write_sysctl(f"/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6", "1")
                ipr.link("set", index=port.host_ifindex, state="up")
            port.app_ifindex = self.ns.run(self._setup_app_end, app_if)
            self.maps.port_by_app_if.update(port.app_ifindex, port_id)
            self.maps.port_by_host_if.update(port.host_ifindex, port_id)
            libbpf.tc_attach(port.host_ifindex, self.portprog.program_fd("port_egress"))
            self._attach_port_xdp(port)
            port.xsk = self.ns.run(create_xsk, app_if, geom, f"mstack-port-{port_id}")
            self.xsks.update(port_id, port.xsk.xsk_fd)
            self.maps.set_port(port_id, port.host_ifindex)
        except BaseException:
            self.delete_port(port_id)
            raise
        log.info("port %d: %s <-> %s/%s", port_id, host_if, self.ports_netns, app_if)
        return port

    def _setup_app_end(self, app_if: str) -> int:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=app_if)[0]
            ipr.link("set", index=idx, state="up")
        fd = self.portprog.program_fd("port_xsk")
        libbpf.xdp_attach(idx, fd, kabi.XDP_FLAGS_DRV_MODE)
        return int(idx)

    def delete_port(self, port_id: int) -> None:
        """Remove a port: steering first (no frame may reach a half-gone port), then its links."""
        port = self.ports.pop(port_id, None)
        if port is None:
            return
        for m, k in (
            (self.maps.port_devmap, port_id),
            (self.xsks, port_id),
            (self.maps.port_by_host_if, port.host_ifindex),
            (self.maps.port_by_app_if, port.app_ifindex),
        ):
            with contextlib.suppress(libbpf.BpfError):
                m.delete(k)
        self._forget_port_flows(port_id)
        if port.xsk is not None:
            port.xsk.close()
        # Deleting one end of a veth deletes both, and the programs with them.
        with IPRoute() as ipr, contextlib.suppress(Exception):
            idx = ipr.link_lookup(ifname=port.host_if)
            if idx:
                ipr.link("del", index=idx[0])

    def sweep_flows(self, now_ns: int, closed_after_s: float = 60.0) -> int:
        """Remove flows that both sides have closed (FIN each way) and that have been quiet for
        `closed_after_s` (the peer's TIME_WAIT); returns how many. A RST from the port removes
        its flow at once (egress program); a port's removal removes all of its flows."""
        both = consts.MSTACK_FLOW_FIN_IN | consts.MSTACK_FLOW_FIN_OUT
        limit = now_ns - int(closed_after_s * 1e9)
        gone = 0
        for key in list(self.maps.flows.each_key()):
            f: Any = self.maps.flows.lookup(key)
            if f is not None and f.flags & both == both and f.last_ns < limit:
                gone += self.maps.flows.delete(key)
        return gone

    def _forget_port_flows(self, port_id: int) -> None:
        for key in list(self.maps.flows.each_key()):
            f: Any = self.maps.flows.lookup(key)
            if f is not None and f.port_id == port_id:
                self.maps.flows.delete(key)

    # -- lifetime -----------------------------------------------------------------------------

    def close(self, teardown: bool = True) -> None:
        """Close fds. With `teardown` (detach, shutdown), also remove every port, detach every
        NIC and unpin every map: nothing is left behind."""
        if teardown:
            for port_id in list(self.ports):
                self.delete_port(port_id)
            for ifname in list(self.nics):
                self.detach_nic(ifname)
        self.fastpath.close(teardown)
        self.ns.close()
        self.ingress.close()
        self.portprog.close()
        if teardown:
            for p in self.bpf_dir.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            with contextlib.suppress(OSError):
                self.bpf_dir.rmdir()
            if self.created_netns:
                remove_netns(self.ports_netns)
