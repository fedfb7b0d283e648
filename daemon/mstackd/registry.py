"""The namespace registry: which 3-tuples user-level stacks hold, through which shadow sockets,
claimed by which processes, served by which listen group — and the rules that keep it honest
(design.md sections 4 and 4a). It writes the switch's bindings and groups through the data
plane; it never trusts what an application says, only what the kernel says of the fds it sent.

Lifetimes: a *port* belongs to the control connection that opened it (a process's stack; exec or
death closes the connection and the port goes). A *binding* belongs to its shadow socket(s) and
lives while some live process that claimed one still holds it; the daemon keeps its own copy of
every shadow fd until the binding is gone, so the kernel cannot hand the port to anyone else."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mstackd import sockcheck
from mstackd.abi import consts
from mstackd.switch import BindKey

log = logging.getLogger("mstackd.registry")

KIND_NAMES = {
    consts.MSTACK_REG_LISTEN: "listen",
    consts.MSTACK_REG_CONNECT: "connect",
    consts.MSTACK_REG_UDP: "udp",
}


GROUP_HOLD_S = 1.5  # see Registry._publish


class RegistryError(Exception):
    def __init__(self, err: int, detail: str) -> None:
        super().__init__(detail)
        self.errno = err
        self.detail = detail


class SwitchWriter(Protocol):
    def bind(self, key: BindKey, kind: str, *, group: int = 0, port_id: int = 0) -> None: ...
    def unbind(self, key: BindKey) -> bool: ...
    def set_group(
        self, group: int, members: list[int], gen: int = 0, hold_until_ns: int = 0
    ) -> None: ...


@dataclass
class Shadow:
    """One shadow kernel socket: the daemon's fd copy (-1 after a restart, until a holder
    registers the socket again) and the pids that claimed it."""

    inode: int
    fd: int
    claimants: set[int] = field(default_factory=set)


@dataclass
class Binding:
    id: int
    key: BindKey
    kind: str
    shadows: dict[int, Shadow] = field(default_factory=dict)  # by inode
    group: int = 0  # listen: index in the switch's groups map
    members: list[int] = field(default_factory=list)  # listen: port ids, in join order
    port_id: int = 0  # connect / udp: the owning port
    gen: int = 0

    def claimants(self) -> set[int]:
        return set().union(*(s.claimants for s in self.shadows.values()))


def socket_inodes(pid: int) -> set[int] | None:
    """The socket inodes process `pid` holds (/proc/PID/fd), or None if it is gone."""
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    return out


def pid_holds_inode(pid: int, inode: int) -> bool:
    """Does process `pid` still have a descriptor for socket `inode`?"""
    held = socket_inodes(pid)
    return held is not None and inode in held


class Registry:
    def __init__(
        self, switch: SwitchWriter, local_addrs: Callable[[], set[str]], netns_cookie: int
    ) -> None:
        self.switch = switch
        self.local_addrs = local_addrs  # IPv4 addresses of the attached NICs, as text
        self.netns_cookie = netns_cookie
        self.bindings: dict[int, Binding] = {}
        self.by_key: dict[BindKey, Binding] = {}
        self._next_id = 1
        self._free_groups = list(range(consts.MSTACK_MAX_GROUPS - 1, 0, -1))

    # -- registration ------------------------------------------------------------------------

    def register(self, fd: int, kind_code: int, pid: int, port_id: int, owns_port: bool) -> Binding:
        """Check the shadow socket `fd` (the caller keeps ownership of it) and install or join
        its binding; `pid` becomes a claimant."""
        kind = KIND_NAMES.get(kind_code)
        if kind is None:
            raise RegistryError(errno.EINVAL, f"unknown binding kind {kind_code}")
        try:
            info = sockcheck.inspect(fd)
        except sockcheck.SockCheckError as e:
            raise RegistryError(e.errno, e.detail) from e
        if info.netns_cookie != self.netns_cookie:
            raise RegistryError(
                errno.EPERM, "the socket belongs to another network namespace than the NIC's"
            )
        want_type, want_proto = (
            (socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            if kind == "udp"
            else (socket.SOCK_STREAM, socket.IPPROTO_TCP)
        )
        if info.type != want_type or info.protocol != want_proto:
            raise RegistryError(
                errno.EPROTOTYPE,
                f"a {kind} binding needs a {'UDP' if kind == 'udp' else 'TCP'} socket",
            )
        if kind == "listen" and not info.listening:
            raise RegistryError(
                errno.EINVAL, "a listener's shadow socket must be listening (listen() it first)"
            )
        if kind != "listen" and info.listening:
            raise RegistryError(errno.EINVAL, f"a {kind} binding's shadow must not listen")
        if info.port == 0:
            raise RegistryError(errno.EINVAL, "the shadow socket is not bound to a port")
        if info.addr != "0.0.0.0" and info.addr not in self.local_addrs():
            raise RegistryError(
                errno.EADDRNOTAVAIL, f"{info.addr} is not an address of an attached NIC"
            )
        if kind == "connect" and info.addr == "0.0.0.0":
            raise RegistryError(errno.EINVAL, "a connect binding needs a specific local address")
        if kind != "listen" and not owns_port:
            raise RegistryError(errno.EPERM, f"port {port_id} is not this process's")
        key = BindKey("udp" if kind == "udp" else "tcp", info.addr, info.port)
        b = self.by_key.get(key)
        if b is not None:
            return self._join_existing(b, kind, info, fd, pid)
        return self._install(key, kind, info, fd, pid, port_id)

    def _join_existing(
        self, b: Binding, kind: str, info: sockcheck.SockInfo, fd: int, pid: int
    ) -> Binding:
        if info.inode in b.shadows:  # the same socket again: a re-registration
            shadow = b.shadows[info.inode]
            shadow.claimants.add(pid)
            if shadow.fd < 0:  # after a daemon restart: hold the port in the kernel again
                shadow.fd = os.dup(fd)
            return b
        # The kernel let a second socket take this 3-tuple. Only listeners sharing it through
        # SO_REUSEPORT form one listen group; anything else would be two owners of one key.
        if kind != "listen" or b.kind != "listen" or not info.reuseport:
            raise RegistryError(
                errno.EADDRINUSE, f"{b.key.proto} {b.key.addr}:{b.key.port} is held"
            )
        b.shadows[info.inode] = Shadow(info.inode, os.dup(fd), {pid})
        return b

    def _install(
        self, key: BindKey, kind: str, info: sockcheck.SockInfo, fd: int, pid: int, port_id: int
    ) -> Binding:
        b = Binding(self._next_id, key, kind)
        if kind == "listen":
            if not self._free_groups:
                raise RegistryError(errno.ENOSPC, "no free listen group")
            b.group = self._free_groups.pop()
            self.switch.set_group(b.group, [])
            try:
                self.switch.bind(key, "listen", group=b.group)
            except OSError as e:
                self._free_groups.append(b.group)
                raise RegistryError(e.errno or errno.EIO, f"switch: {e}") from e
        else:
            b.port_id = port_id
            try:
                self.switch.bind(key, kind, port_id=port_id)
            except OSError as e:
                raise RegistryError(e.errno or errno.EIO, f"switch: {e}") from e
        b.shadows[info.inode] = Shadow(info.inode, os.dup(fd), {pid})
        self._next_id += 1
        self.bindings[b.id] = b
        self.by_key[key] = b
        log.info("binding %d: %s %s %s:%d", b.id, kind, key.proto, key.addr, key.port)
        return b

    # -- claims ------------------------------------------------------------------------------

    def _get(self, binding_id: int) -> Binding:
        b = self.bindings.get(binding_id)
        if b is None:
            raise RegistryError(errno.ENOENT, f"no binding {binding_id}")
        return b

    def claim(self, binding_id: int, fd: int, pid: int) -> Binding:
        """`pid` holds one of the binding's sockets too; the fd it sent proves it."""
        b = self._get(binding_id)
        inode = os.fstat(fd).st_ino
        shadow = b.shadows.get(inode)
        if shadow is None:
            raise RegistryError(errno.EPERM, f"that socket is not one of binding {binding_id}'s")
        shadow.claimants.add(pid)
        return b

    def release(self, binding_id: int, pid: int) -> None:
        b = self._get(binding_id)
        if pid not in b.claimants():
            raise RegistryError(errno.EPERM, f"process {pid} has not claimed binding {binding_id}")
        for s in b.shadows.values():
            s.claimants.discard(pid)
        self._collect(b)

    def process_gone(self, pid: int) -> None:
        for b in list(self.bindings.values()):
            for s in b.shadows.values():
                s.claimants.discard(pid)
            self._collect(b)

    def sweep(self) -> None:
        """Drop claims of processes that no longer hold the socket (closed it without a RELEASE,
        or lost it across exec), then collect bindings nobody holds. Each claimant's fd table
        is read once per sweep, whatever the number of bindings."""
        pids = {pid for b in self.bindings.values() for pid in b.claimants()}
        held = {pid: socket_inodes(pid) or set() for pid in pids}
        for b in list(self.bindings.values()):
            for s in b.shadows.values():
                for pid in list(s.claimants):
                    if s.inode not in held.get(pid, set()):
                        s.claimants.discard(pid)
            self._collect(b)

    def _collect(self, b: Binding) -> None:
        for inode, s in list(b.shadows.items()):
            if not s.claimants:
                if s.fd >= 0:
                    os.close(s.fd)
                del b.shadows[inode]
        if b.shadows:
            return
        self.switch.unbind(b.key)
        if b.kind == "listen":
            self.switch.set_group(b.group, [])
            self._free_groups.append(b.group)
        del self.bindings[b.id]
        del self.by_key[b.key]
        log.info("binding %d removed: no live holder", b.id)

    # -- listen groups -----------------------------------------------------------------------

    def join(self, binding_id: int, port_id: int, pid: int) -> None:
        b = self._get(binding_id)
        if b.kind != "listen":
            raise RegistryError(errno.EINVAL, f"binding {binding_id} is not a listener")
        if pid not in b.claimants():
            raise RegistryError(errno.EPERM, f"claim binding {binding_id} before joining it")
        if port_id in b.members:
            return
        if len(b.members) >= consts.MSTACK_GROUP_MAX_MEMBERS:
            raise RegistryError(errno.ENOSPC, "listen group full")
        b.members.append(port_id)
        self._publish(b)

    def leave(self, binding_id: int, port_id: int) -> None:
        b = self._get(binding_id)
        if port_id not in b.members:
            raise RegistryError(errno.ENOENT, f"port {port_id} is not in binding {binding_id}")
        b.members.remove(port_id)
        self._publish(b, hold=True)

    def port_gone(self, port_id: int) -> None:
        """A port went away: out of every group; connect/udp bindings it owned lose their
        owner (their frames fall back to the kernel until the binding goes)."""
        for b in self.bindings.values():
            if port_id in b.members:
                b.members.remove(port_id)
                self._publish(b, hold=True)

    def _publish(self, b: Binding, hold: bool = False) -> None:
        """hold: the group may just have lost its last member while processes still hold the
        socket (nginx's reload: old workers leave before the new ones join). For GROUP_HOLD_S,
        new flows are dropped — their peers retry a SYN after a second and find the new members
        — rather than handed to the kernel's shadow for their whole lifetime. A group nobody
        joins again is the kernel's after that."""
        b.gen += 1
        until = 0
        if hold and not b.members and b.claimants():
            until = time.monotonic_ns() + int(GROUP_HOLD_S * 1e9)
        self.switch.set_group(b.group, list(b.members), b.gen, until)

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        return {
            "next_id": self._next_id,
            "bindings": [
                {
                    "id": b.id,
                    "proto": b.key.proto,
                    "addr": b.key.addr,
                    "port": b.key.port,
                    "kind": b.kind,
                    "group": b.group,
                    "members": b.members,
                    "port_id": b.port_id,
                    "gen": b.gen,
                    "shadows": [
                        {"inode": sh.inode, "claimants": sorted(sh.claimants)}
                        for sh in b.shadows.values()
                    ],
                }
                for b in self.bindings.values()
            ],
        }

    def restore(self, snap: dict[str, object], live_ports: set[int]) -> None:
        """A restarted daemon: keep the bindings some live claimant still holds (the switch
        still steers them), drop the rest from the switch. The daemon lost its fd copies; a
        holder that registers its socket again gives it a new one."""
        self._next_id = max(self._next_id, int(snap.get("next_id", 1)))  # type: ignore[call-overload]
        for item in snap.get("bindings", []):  # type: ignore[attr-defined]
            key = BindKey(item["proto"], item["addr"], int(item["port"]))
            b = Binding(int(item["id"]), key, item["kind"], group=int(item["group"]),
                        port_id=int(item["port_id"]), gen=int(item["gen"]))  # fmt: skip
            for sh in item["shadows"]:
                live = {p for p in sh["claimants"] if pid_holds_inode(p, int(sh["inode"]))}
                if live:
                    b.shadows[int(sh["inode"])] = Shadow(int(sh["inode"]), -1, live)
            b.members = [m for m in item["members"] if m in live_ports]
            if not b.shadows:
                self.switch.unbind(key)
                if b.kind == "listen":
                    self.switch.set_group(b.group, [])
                continue
            if b.kind == "listen":
                self._free_groups.remove(b.group)
                self._publish(b)
            self.bindings[b.id] = b
            self.by_key[key] = b
            log.info("binding %d restored: %s %s:%d", b.id, key.proto, key.addr, key.port)

    def close(self) -> None:
        """Daemon shutdown: unbind everything and close the shadow copies."""
        for b in list(self.bindings.values()):
            for s in b.shadows.values():
                s.claimants.clear()
            self._collect(b)
