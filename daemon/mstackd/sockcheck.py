"""What a shadow socket really is, asked of the kernel through the fd an application sent —
never of the application's word: network namespace (SO_NETNS_COOKIE), domain, type, protocol,
listening state, bound address (design.md section 4)."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from mstackd import kabi


@dataclass(frozen=True)
class SockInfo:
    inode: int
    netns_cookie: int
    domain: int
    type: int
    protocol: int
    listening: bool
    reuseport: bool
    addr: str  # IPv4 text; "0.0.0.0" for a wildcard (an IPv6 wildcard that takes IPv4 too)
    port: int


class SockCheckError(Exception):
    def __init__(self, err: int, detail: str) -> None:
        super().__init__(detail)
        self.errno = err
        self.detail = detail


def netns_cookie_of_self() -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        raw = s.getsockopt(socket.SOL_SOCKET, kabi.SO_NETNS_COOKIE, 8)
    return int(struct.unpack("=Q", raw)[0])


def inspect(fd: int) -> SockInfo:
    st = os.fstat(fd)
    if not (st.st_mode & 0o170000) == 0o140000:
        raise SockCheckError(errno.ENOTSOCK, "the fd sent is not a socket")
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise SockCheckError(errno.ENOTSOCK, f"the fd sent is not a usable socket: {e}") from e
    try:
        get = s.getsockopt
        domain = get(socket.SOL_SOCKET, kabi.SO_DOMAIN)
        if domain not in (socket.AF_INET, socket.AF_INET6):
            raise SockCheckError(errno.EAFNOSUPPORT, f"socket domain {domain} is not IPv4/IPv6")
        cookie = int(struct.unpack("=Q", get(socket.SOL_SOCKET, kabi.SO_NETNS_COOKIE, 8))[0])
        stype = get(socket.SOL_SOCKET, socket.SO_TYPE)
        proto = get(socket.SOL_SOCKET, kabi.SO_PROTOCOL)
        listening = bool(get(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        reuseport = bool(get(socket.SOL_SOCKET, socket.SO_REUSEPORT))
        name = s.getsockname()
        host, port = name[0], int(name[1])
        if domain == socket.AF_INET6:
            ip6 = ipaddress.IPv6Address(host.split("%")[0])
            v6only = bool(get(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            if ip6.ipv4_mapped is not None:
                host = str(ip6.ipv4_mapped)
            elif ip6 == ipaddress.IPv6Address("::") and not v6only:
                host = "0.0.0.0"  # an IPv6 wildcard with V6ONLY off takes IPv4 too
            else:
                raise SockCheckError(errno.EAFNOSUPPORT, f"IPv6 address {ip6}: IPv4 only so far")
        return SockInfo(st.st_ino, cookie, domain, stype, proto, listening, reuseport, host, port)
    finally:
        s.close()
