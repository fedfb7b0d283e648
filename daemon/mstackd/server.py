"""mstackd's event loop: app.sock (any local process; authority comes from the fds it sends),
admin.sock (root or the configured group), process watching with pidfds, the periodic sweep of
claims and NIC addresses. One thread and a selector (not asyncio: pyroute2's synchronous API runs
an asyncio loop of its own); every request is answered or, when its header is unusable, its
connection closed — and the daemon keeps serving everyone else."""

from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import grp
import json
import logging
import mmap
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pyroute2 import IPRoute

from mstackd import __version__, proto, sockcheck, statsregion
from mstackd.abi import consts
from mstackd.config import Config
from mstackd.dataplane import AttachError, Dataplane, Port
from mstackd.handoff import Handoffs, Inbox, Timers
from mstackd.leases import LeaseError, LeaseManager
from mstackd.nexthop import TICK_S
from mstackd.registry import Registry, RegistryError
from mstackd.switch import INGRESS_COUNTERS, ip_be, ip_text, mac_bytes
from mstackd.xsk import Geometry

log = logging.getLogger("mstackd")

FD_SPACE = socket.CMSG_SPACE(consts.MSTACK_MSG_MAX_FDS * 4)
ADMIN_MAX = 64 * 1024


@dataclass
class Conn:
    sock: socket.socket
    pid: int
    uid: int
    gid: int
    hello: bool = False
    ports: dict[int, Port] = field(default_factory=dict)
    stats: dict[int, mmap.mmap] = field(default_factory=dict)
    inbox: Inbox | None = None  # this connection is a port's inbox (hand-off)


def peercred(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def recv_with_fds(sock: socket.socket, size: int) -> tuple[bytes, list[int], bool]:
    """One datagram, the fds it carried (always collected, so none leaks) and whether it was
    truncated (data or fds)."""
    data, anc, flags, _ = sock.recvmsg(size + 1, FD_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, ctype, cdata in anc:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(cdata[: len(cdata) - (len(cdata) % a.itemsize)])
            fds.extend(a)
    truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)) or len(data) > size
    return data, fds, truncated


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Daemon:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        bpf_dir: Path,
        ports_netns: str,
        port_prefix: str = "msp",
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        for name in ("app.sock", "admin.sock"):  # before touching anything of the switch
            self._check_not_served(run_dir / name)
        self.dp = Dataplane(bpf_dir, ports_netns, port_prefix, egress_fast=cfg.egress_fast_path)
        self.registry = Registry(self.dp.maps, self.local_addrs, sockcheck.netns_cookie_of_self())
        self.leases = LeaseManager(self.dp.maps)
        self.timers = Timers()
        self.handoffs = Handoffs(
            self.registry, self.dp.maps.flows, self.local_addrs, self.timers, self._reply,
            lambda c: self._drop_conn(c.sock.fileno()),
        )  # fmt: skip
        self.conns: dict[int, Conn] = {}
        self.pidfds: dict[int, int] = {}  # pid -> pidfd
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.listeners: list[socket.socket] = []
        self.admin_gid = grp.getgrnam(cfg.admin_group).gr_gid if cfg.admin_group else None
        # Ports adopted from a dead daemon: port id -> owner pid, until the owner says HELLO.
        self.orphans: dict[int, int] = {}
        self.state_path = run_dir / "state.json"

    def local_addrs(self) -> set[str]:
        return set().union(*(n.addrs for n in self.dp.nics.values())) if self.dp.nics else set()

    # -- sockets -------------------------------------------------------------------------------

    @staticmethod
    def _check_not_served(path: Path) -> None:
        """Refuse to start beside a live daemon; remove a dead one's socket."""
        if not path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(str(path))
            raise OSError(errno.EADDRINUSE, f"another mstackd serves {path}")
        except ConnectionRefusedError:
            path.unlink()
        finally:
            probe.close()

    def _listen(self, name: str, mode: int) -> socket.socket:
        path = self.run_dir / name
        self._check_not_served(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
        s.bind(str(path))
        os.chmod(path, mode)
        if name == "admin.sock" and self.admin_gid is not None:
            os.chown(path, 0, self.admin_gid)
        s.listen(128)
        return s

    def _add_reader(self, fd: int, fn: Callable[..., None], *args: object) -> None:
        self.sel.register(fd, selectors.EVENT_READ, (fn, args))

    def _remove_reader(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(fd)

    @staticmethod
    def _drain(fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 512)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then take everything down (also on any failure)."""
        try:
            self.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._recover()
            for iface in self.cfg.attach:
                if iface not in self.dp.nics:
                    self.dp.attach_nic(iface, self.cfg.mode)
            self._save()
            app = self._listen("app.sock", 0o666)
            admin = self._listen("admin.sock", 0o660)
            self.listeners = [app, admin]
            self._add_reader(app.fileno(), self._accept, app, False)
            self._add_reader(admin.fileno(), self._accept, admin, True)
            wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(wake_w)
            self._add_reader(wake_r, self._drain, wake_r)
            mon = self.dp.fastpath.monitor_fd()
            if mon is not None:
                self._add_reader(mon, self._fast_netlink)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            (self.run_dir / "mstackd.pid").write_text(f"{os.getpid()}\n")
            print("mstackd: ready", flush=True)
            log.info("mstackd %s serving %s", __version__, self.run_dir)
            next_sweep = time.monotonic() + self.cfg.sweep_interval
            next_fast = time.monotonic() + TICK_S
            while not self.stopping:
                wake = min(next_sweep, next_fast, self.timers.next_deadline() or next_sweep)
                for key, _ in self.sel.select(max(0.0, wake - time.monotonic())):
                    fn, args = key.data
                    fn(*args)
                    if self.stopping:
                        break
                self.timers.run_due()
                if time.monotonic() >= next_fast:
                    self._fast_tick()
                    next_fast = time.monotonic() + TICK_S
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + self.cfg.sweep_interval
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop serving and take everything down: no program, link, netns or pin is left."""
        for s in self.listeners:
            self._remove_reader(s.fileno())
            s.close()
        self.listeners = []
        for name in ("app.sock", "admin.sock", "mstackd.pid", "state.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / name).unlink()
        self.handoffs.close()
        for fd in list(self.conns):
            self._drop_conn(fd)
        for pid in list(self.pidfds):
            self._unwatch(pid)
        self.leases.close()
        self.registry.close()
        self.dp.close(teardown=True)

    def _sweep(self) -> None:
        try:
            self.registry.sweep()
            self._refresh_addrs()
            self.dp.sweep_flows(time.monotonic_ns())  # bpf_ktime_get_ns is CLOCK_MONOTONIC
            self._save()
        except Exception:
            log.exception("sweep failed")

    def _fast_netlink(self) -> None:
        try:
            self.dp.fastpath.on_netlink()
        except Exception:
            log.exception("netlink monitor failed")

    def _fast_tick(self) -> None:
        """The egress fast path's next-hop cache and probes (a failure costs the fast path a
        tick, never the daemon: the TC path needs none of it)."""
        try:
            self.dp.fastpath.tick()
            self.dp.sync_port_xdp()
        except Exception:
            log.exception("egress fast path tick failed")

    # -- state across a restart ----------------------------------------------------------------

    def _save(self) -> None:
        """What a daemon restarted after a crash needs to take over (run_dir/state.json)."""
        owners = {p: c.pid for c in self.conns.values() for p in c.ports} | self.orphans
        state = {
            "version": 1,
            "created_netns": self.dp.created_netns,
            "nics": [
                {"ifname": n.ifname, "ifindex": n.ifindex, "mode": n.mode, "prog_id": n.prog_id}
                for n in self.dp.nics.values()
            ],
            "ports": [
                {
                    "port_id": p.port_id,
                    "host_if": p.host_if,
                    "app_if": p.app_if,
                    "host_ifindex": p.host_ifindex,
                    "app_ifindex": p.app_ifindex,
                    "pid": owners.get(p.port_id),
                    "geom": dataclasses.asdict(p.geom),
                }
                for p in self.dp.ports.values()
            ],
            "registry": self.registry.snapshot(),
            "leases": self.leases.snapshot(),
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def _recover(self) -> None:
        """After a crash: keep what live processes still use — NICs, ports, bindings — and
        clear the rest from the switch. Documented in docs/mstackd.md."""
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable %s: %s", self.state_path, e)
            return
        self.dp.created_netns = self.dp.created_netns or bool(state.get("created_netns"))
        for n in state.get("nics", []):
            self.dp.adopt_nic(n["ifname"], n["ifindex"], n["mode"], n["prog_id"])
        for p in state.get("ports", []):
            port = Port(p["port_id"], p["host_if"], p["app_if"], p["host_ifindex"],
                        p["app_ifindex"], Geometry(**p["geom"]))  # fmt: skip
            pid = p.get("pid")
            if pid and psutil.pid_exists(pid) and self.dp.adopt_port(port):
                self.orphans[port.port_id] = pid
                self._watch(pid)
                log.info("port %d adopted, owner pid %d", port.port_id, pid)
            else:
                self.dp.ports[port.port_id] = port
                self.dp.delete_port(port.port_id)
        self.registry.restore(state.get("registry", {}), set(self.dp.ports))
        self.leases.restore(state.get("leases", []), set(self.dp.ports))
        for pid in {c for b in self.registry.bindings.values() for c in b.claimants()}:
            self._watch(pid)

    def _refresh_addrs(self) -> None:
        """NIC addresses come and go: keep the switch's local-address map in step."""
        with IPRoute() as ipr:
            for nic in list(self.dp.nics.values()):
                now = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=nic.ifindex, family=2)}
                for a in now - nic.addrs:
                    self.dp.nic_addr_added(nic.ifindex, a)
                for a in nic.addrs - now:
                    self.dp.nic_addr_removed(nic.ifindex, a)

    def _accept(self, lsock: socket.socket, admin: bool) -> None:
        try:
            s, _ = lsock.accept()
        except BlockingIOError:
            return
        s.setblocking(False)
        pid, uid, gid = peercred(s)
        if admin and not self._admin_allowed(pid, uid, gid):
            log.warning("admin.sock: refused pid %d uid %d", pid, uid)
            s.close()
            return
        conn = Conn(s, pid, uid, gid)
        self.conns[s.fileno()] = conn
        self._add_reader(s.fileno(), self._readable_admin if admin else self._readable, conn)

    def _admin_allowed(self, pid: int, uid: int, gid: int) -> bool:
        if uid == 0 or self.admin_gid is None:
            return uid == 0
        if gid == self.admin_gid:
            return True
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        return self.admin_gid in {int(g) for g in line.split()[1:]}
        except OSError:
            pass
        return False

    def _drop_conn(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        self._remove_reader(fd)
        self.handoffs.conn_gone(conn)
        for port_id in list(conn.ports):
            self._close_port(conn, port_id)
        conn.sock.close()

    def _close_port(self, conn: Conn, port_id: int) -> None:
        conn.ports.pop(port_id, None)
        region = conn.stats.pop(port_id, None)
        if region is not None:
            region.close()
        self.handoffs.port_gone(port_id)
        self.registry.port_gone(port_id)
        self.leases.port_gone(port_id)
        self.dp.delete_port(port_id)

    # -- processes -----------------------------------------------------------------------------

    def _watch(self, pid: int) -> None:
        if pid in self.pidfds:
            return
        pidfd = os.pidfd_open(pid)
        self.pidfds[pid] = pidfd
        self._add_reader(pidfd, self._process_exited, pid)

    def _unwatch(self, pid: int) -> None:
        pidfd = self.pidfds.pop(pid, None)
        if pidfd is not None:
            self._remove_reader(pidfd)
            os.close(pidfd)

    def _process_exited(self, pid: int) -> None:
        log.info("process %d exited", pid)
        self._unwatch(pid)
        for fd, conn in list(self.conns.items()):
            if conn.pid == pid:
                self._drop_conn(fd)
        for port_id, owner in list(self.orphans.items()):
            if owner == pid:
                del self.orphans[port_id]
                self.registry.port_gone(port_id)
                self.leases.port_gone(port_id)
                self.dp.delete_port(port_id)
        self.registry.process_gone(pid)
        self._save()

    # -- app.sock ------------------------------------------------------------------------------

    def _readable(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        try:
            data, fds, truncated = recv_with_fds(conn.sock, consts.MSTACK_MSG_MAX)
        except BlockingIOError:
            return
        except OSError:
            self._drop_conn(fd)
            return
        if not data and not fds:
            self._drop_conn(fd)  # orderly close
            return
        if conn.inbox is not None:  # nothing but IMPORT replies comes in on an inbox
            try:
                self.handoffs.inbox_datagram(conn.inbox, data, fds, truncated)
            except Exception:  # a bug must cost one inbox, never the daemon
                log.exception("pid %d: inbox failed", conn.pid)
                self._drop_conn(fd)
            return
        try:
            req = proto.decode(data, fds, truncated)
        except proto.ProtoError as e:
            close_fds(fds)
            if e.seq is None:
                log.warning("pid %d: %s; closing its connection", conn.pid, e.detail)
                self._drop_conn(fd)
            else:
                self._reply(conn, e.msg_type, e.seq, -e.errno, e.detail)
            return
        try:
            self._dispatch(conn, req)
        except (RegistryError, proto.ProtoError, AttachError, LeaseError) as e:
            err = getattr(e, "errno", errno.EINVAL) or errno.EINVAL
            self._reply(conn, req.type, req.seq, -err, str(e))
        except OSError as e:
            self._reply(conn, req.type, req.seq, -(e.errno or errno.EIO), str(e))
        except Exception as e:
            log.exception("pid %d: %s failed", conn.pid, req.name)
            self._reply(conn, req.type, req.seq, -errno.EIO, f"internal error: {e}")
        finally:
            close_fds(req.fds)
            self._save()

    def _reply(
        self,
        conn: Conn,
        mtype: int,
        seq: int,
        status: int = 0,
        detail: str = "",
        fields: dict[str, Any] | None = None,
        fds: list[int] | None = None,
    ) -> None:
        msg = proto.encode_reply(mtype, seq, status, detail, fields)
        anc = []
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        try:
            conn.sock.sendmsg([msg], anc)
        except OSError as e:
            log.info("pid %d: reply lost (%s)", conn.pid, e)

    def _dispatch(self, conn: Conn, req: proto.Request) -> None:
        b = req.body
        if req.type == consts.MSTACK_MSG_HELLO:
            if b.pid != conn.pid:
                raise proto.ProtoError(
                    errno.EPERM, f"HELLO says pid {b.pid}, the socket's peer is {conn.pid}"
                )
            self._watch(conn.pid)
            conn.hello = True
            for port_id, owner in list(self.orphans.items()):
                if owner == conn.pid:  # its stack reconnects after a daemon restart
                    conn.ports[port_id] = self.dp.ports[port_id]
                    del self.orphans[port_id]
            self._reply(
                conn,
                req.type,
                req.seq,
                fields={
                    "daemon_version": consts.MSTACK_PROTO_VERSION,
                    "max_ports": self.cfg.max_ports_per_process,
                },
            )
            return
        if not conn.hello:
            raise proto.ProtoError(errno.EPROTO, "HELLO first")
        if req.type == consts.MSTACK_MSG_PORT_OPEN:
            self._port_open(conn, req)
        elif req.type == consts.MSTACK_MSG_PORT_CLOSE:
            if b.port_id not in conn.ports:
                raise proto.ProtoError(errno.ENOENT, f"port {b.port_id} is not this connection's")
            self._close_port(conn, b.port_id)
            self._reply(conn, req.type, req.seq)
        elif req.type == consts.MSTACK_MSG_REGISTER:
            binding = self.registry.register(
                req.fds[0], b.kind, conn.pid, b.port_id, b.port_id in conn.ports
            )
            self._reply(
                conn, req.type, req.seq,
                fields={
                    "binding_id": binding.id,
                    "proto": 17 if binding.key.proto == "udp" else 6,
                    "addr": ip_be(binding.key.addr),
                    "port": socket.htons(binding.key.port),
                },
            )  # fmt: skip
        elif req.type == consts.MSTACK_MSG_CLAIM:
            self.registry.claim(b.binding_id, req.fds[0], conn.pid)
            self._reply(conn, req.type, req.seq)
        elif req.type == consts.MSTACK_MSG_RELEASE:
            self.registry.release(b.binding_id, conn.pid)
            self._reply(conn, req.type, req.seq)
        elif req.type in (consts.MSTACK_MSG_GROUP_JOIN, consts.MSTACK_MSG_GROUP_LEAVE):
            if b.port_id not in conn.ports:
                raise proto.ProtoError(errno.EPERM, f"port {b.port_id} is not this connection's")
            if req.type == consts.MSTACK_MSG_GROUP_JOIN:
                self.registry.join(b.binding_id, b.port_id, conn.pid)
            else:
                self.registry.leave(b.binding_id, b.port_id)
            self._reply(conn, req.type, req.seq)
        elif req.type == consts.MSTACK_MSG_STATS_REGION:
            if b.port_id not in conn.ports:
                raise proto.ProtoError(errno.EPERM, f"port {b.port_id} is not this connection's")
            size = os.fstat(req.fds[0]).st_size
            if not 0 < size <= 64 << 20:
                raise proto.ProtoError(errno.EINVAL, f"statistics region of {size} bytes")
            old = conn.stats.pop(b.port_id, None)
            if old is not None:
                old.close()
            conn.stats[b.port_id] = mmap.mmap(req.fds[0], size, mmap.MAP_SHARED, mmap.PROT_READ)
            self._reply(conn, req.type, req.seq)
        elif req.type == consts.MSTACK_MSG_LEASE:
            if b.port_id not in conn.ports:
                raise proto.ProtoError(errno.EPERM, f"port {b.port_id} is not this connection's")
            addr = ip_text(b.addr) if b.addr else ""
            if not addr:
                nic = next(iter(self.dp.nics.values()), None)
                if nic is None or not nic.addrs:
                    raise proto.ProtoError(errno.EADDRNOTAVAIL, "no address on an attached NIC")
                addr = sorted(nic.addrs)[0]
            elif addr not in self.local_addrs():
                raise proto.ProtoError(errno.EADDRNOTAVAIL, f"{addr} is not an attached NIC's")
            lease = self.leases.lease(b.port_id, addr, b.count)
            self._reply(
                conn, req.type, req.seq,
                fields={"lease_id": lease.id, "addr": ip_be(addr), "first": lease.first,
                        "count": lease.count},
            )  # fmt: skip
        elif req.type == consts.MSTACK_MSG_UNLEASE:
            held = self.leases.leases.get(b.lease_id)
            if held is None or held.port_id not in conn.ports:
                raise proto.ProtoError(errno.ENOENT, f"no lease {b.lease_id} of this process")
            self.leases.release(b.lease_id)
            self._reply(conn, req.type, req.seq)
        elif req.type == consts.MSTACK_MSG_HANDOFF:
            self.handoffs.start(conn, req)  # answered when a member adopted them, or none did
        elif req.type == consts.MSTACK_MSG_INBOX:
            holder = next((c.pid for c in self.conns.values() if b.port_id in c.ports), None)
            self.handoffs.open_inbox(conn, int(b.port_id), holder)
            self._reply(conn, req.type, req.seq)

    def _port_open(self, conn: Conn, req: proto.Request) -> None:
        if len(conn.ports) >= self.cfg.max_ports_per_process:
            raise proto.ProtoError(
                errno.EMFILE, f"at most {self.cfg.max_ports_per_process} ports per process"
            )
        held = sum(len(c.ports) for c in self.conns.values() if c.uid == conn.uid)
        if held >= self.cfg.max_ports_per_user:
            raise proto.ProtoError(
                errno.EDQUOT, f"uid {conn.uid} holds {held} ports (max_ports_per_user)"
            )
        if not self.dp.nics:
            raise proto.ProtoError(errno.ENETDOWN, "the switch is attached to no NIC")
        b = req.body
        frames = b.frames or self.cfg.umem_frames
        ring = b.ring_size or self.cfg.ring_size
        try:
            geom = Geometry(
                frames=frames, rx_size=ring, tx_size=ring, comp_size=ring, fill_size=2 * ring
            )
            geom.validate()
        except ValueError as e:
            raise proto.ProtoError(errno.EINVAL, str(e)) from e
        port = self.dp.create_port(geom)
        assert port.xsk is not None
        nic = next(iter(self.dp.nics.values()))
        addrs = sorted(nic.addrs)[: consts.MSTACK_MAX_ADDRS]
        conn.ports[port.port_id] = port
        try:
            self._reply(
                conn, req.type, req.seq,
                fields={
                    "port_id": port.port_id, "nic_ifindex": nic.ifindex,
                    "umem_size": geom.umem_size, "frame_size": geom.frame_size,
                    "frame_headroom": geom.frame_headroom, "rx_size": geom.rx_size,
                    "tx_size": geom.tx_size, "fill_size": geom.fill_size,
                    "comp_size": geom.comp_size, "bind_flags": geom.bind_flags, "mtu": nic.mtu,
                    "nic_mac": list(mac_bytes(nic.mac)), "n_addrs": len(addrs),
                    "addrs": [ip_be(a) for a in addrs],
                },
                fds=[port.xsk.umem_fd, port.xsk.xsk_fd],
            )  # fmt: skip
        finally:
            port.xsk.close()  # the application's copies (and the XSKMAP) keep it alive

    # -- admin.sock ----------------------------------------------------------------------------

    def _readable_admin(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        try:
            data, fds, truncated = recv_with_fds(conn.sock, ADMIN_MAX)
        except BlockingIOError:
            return
        except OSError:
            self._drop_conn(fd)
            return
        close_fds(fds)
        if not data:
            self._drop_conn(fd)
            return
        try:
            if truncated:
                raise ValueError("request too large")
            req = json.loads(data)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError('a request is a JSON object with a "cmd" string')
            result = self._admin(req)
            out = {"ok": True, "result": result}
        except (ValueError, AttachError, OSError, RegistryError, LeaseError) as e:
            out = {"ok": False, "error": str(e)}
        except Exception as e:  # a bug must cost one request, never the daemon
            log.exception("admin request failed")
            out = {"ok": False, "error": f"internal error: {e}"}
        with contextlib.suppress(OSError):
            conn.sock.send(json.dumps(out).encode())
        self._save()

    def _admin(self, req: dict[str, Any]) -> Any:
        cmd = req["cmd"]
        if cmd == "status":
            return self.status()
        if cmd == "ports":
            return self.ports_view()
        if cmd == "bindings":
            return self.bindings_view()
        if cmd == "stats":
            return self.stats_view()
        if cmd == "conns":
            pid = req.get("pid")
            if pid is not None and not isinstance(pid, int):
                raise ValueError("pid must be an integer")
            return self.conns_view(pid)
        if cmd == "attach":
            nic = self.dp.attach_nic(str(req.get("iface", "")), str(req.get("mode", self.cfg.mode)))
            return {"iface": nic.ifname, "mode": nic.mode, "prog_id": nic.prog_id}
        if cmd == "detach":
            iface = str(req.get("iface", ""))
            self.dp.detach_nic(iface)
            return {"iface": iface}
        if cmd == "fast_path":
            on = req.get("on")
            if not isinstance(on, bool):
                raise ValueError("on must be true or false")
            self.dp.set_fast_path(on)
            return {n.ifname: self.dp.fastpath.nic_view(n.ifindex) for n in self.dp.nics.values()}
        raise ValueError(f"unknown command {cmd!r}")

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "run_dir": str(self.run_dir),
            "bpf_dir": str(self.dp.bpf_dir),
            "ports_netns": self.dp.ports_netns,
            "nics": [
                {
                    "iface": n.ifname,
                    "ifindex": n.ifindex,
                    "mode": n.mode,
                    "mac": n.mac,
                    "mtu": n.mtu,
                    "prog_id": n.prog_id,
                    "addrs": sorted(n.addrs),
                    "fast_path": self.dp.fastpath.nic_view(n.ifindex),
                }
                for n in self.dp.nics.values()
            ],
            "ports": len(self.dp.ports),
            "bindings": len(self.registry.bindings),
            "processes": sorted(self.pidfds),
            "handoff": self.handoffs.stats(),
        }

    def ports_view(self) -> list[dict[str, Any]]:
        owners = {p: c.pid for c in self.conns.values() for p in c.ports} | self.orphans
        out = []
        for p in self.dp.ports.values():
            out.append(
                {
                    "port_id": p.port_id,
                    "pid": owners.get(p.port_id),
                    "host_if": p.host_if,
                    "app_if": p.app_if,
                    "umem_bytes": p.geom.umem_size,
                    "counters": self.dp.maps.port_counters(p.port_id),
                }
            )
        return out

    def bindings_view(self) -> list[dict[str, Any]]:
        return [
            {
                "binding_id": b.id,
                "proto": b.key.proto,
                "addr": b.key.addr,
                "port": b.key.port,
                "kind": b.kind,
                "group": b.group,
                "members": list(b.members),
                "port_id": b.port_id or None,
                "sockets": len(b.shadows),
                "claimants": sorted(b.claimants()),
            }
            for b in self.registry.bindings.values()
        ] + [
            {
                "binding_id": None,
                "lease_id": x.id,
                "proto": "tcp",
                "addr": x.addr,
                "port": x.first,
                "last_port": x.last,
                "kind": "lease",
                "group": None,
                "members": [],
                "port_id": x.port_id,
                "sockets": len(x.holders),
                "claimants": [],
            }
            for x in self.leases.leases.values()
        ]

    def conns_view(self, pid: int | None = None) -> list[dict[str, Any]]:
        """Every connection the stacks published in their statistics regions."""
        out: list[dict[str, Any]] = []
        for conn in self.conns.values():
            if pid is not None and conn.pid != pid:
                continue
            for port_id, region in conn.stats.items():
                try:
                    r = statsregion.read(region)
                except statsregion.RegionError as e:
                    out.append({"pid": conn.pid, "port_id": port_id, "error": str(e)})
                    continue
                for c in r["conns"]:
                    out.append({"pid": conn.pid, "port_id": port_id, "app": r["app"], **c})
        return out

    def stats_view(self) -> dict[str, Any]:
        eg = {}
        for name in dir(consts):
            if name.startswith("MSTACK_EG_") and name != "MSTACK_EG_NSLOTS":
                vals = self.dp.egress_stats.lookup(getattr(consts, name))
                eg[name[len("MSTACK_EG_") :].lower()] = int(sum(vals))  # type: ignore[arg-type]
        return {
            "ingress": self.dp.maps.ingress_counters(),
            "egress": eg,
            "fast_path": {
                n.ifname: self.dp.fastpath.nic_view(n.ifindex) for n in self.dp.nics.values()
            },
            "flows": sum(1 for _ in self.dp.maps.flows.each_key()),
            "ports": {p["port_id"]: p["counters"] for p in self.ports_view()},
            "handoff": self.handoffs.stats(),
        }


__all__ = ["INGRESS_COUNTERS", "Daemon"]
