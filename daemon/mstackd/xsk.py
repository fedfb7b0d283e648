"""Creating a port's AF_XDP socket (needs CAP_NET_RAW) with libxdp, so that the unprivileged
application only maps what it is handed: the UMEM lives in a memfd, the XSK is created and
bound here, and both fds go to the application with SCM_RIGHTS. The daemon keeps no mapping:
after the handover it drops libxdp's objects; the XSKMAP entry and the application's fds keep
the socket alive."""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Any

from mstackd import kabi
from mstackd.libbpf import BpfError, ffi

ffi.cdef(
    """
    struct xsk_ring_prod { uint32_t cached_prod; uint32_t cached_cons; uint32_t mask;
                           uint32_t size; uint32_t *producer; uint32_t *consumer; void *ring;
                           uint32_t *flags; };
    struct xsk_ring_cons { uint32_t cached_prod; uint32_t cached_cons; uint32_t mask;
                           uint32_t size; uint32_t *producer; uint32_t *consumer; void *ring;
                           uint32_t *flags; };
    struct xsk_umem;
    struct xsk_socket;
    struct xsk_umem_config { uint32_t fill_size; uint32_t comp_size; uint32_t frame_size;
                             uint32_t frame_headroom; uint32_t flags; };
    struct xsk_socket_config { uint32_t rx_size; uint32_t tx_size; uint32_t libxdp_flags;
                               uint32_t xdp_flags; uint16_t bind_flags; };
    int xsk_umem__create(struct xsk_umem **umem, void *umem_area, uint64_t size,
                         struct xsk_ring_prod *fill, struct xsk_ring_cons *comp,
                         const struct xsk_umem_config *config);
    int xsk_socket__create(struct xsk_socket **xsk, const char *ifname, uint32_t queue_id,
                           struct xsk_umem *umem, struct xsk_ring_cons *rx,
                           struct xsk_ring_prod *tx, const struct xsk_socket_config *config);
    int xsk_umem__delete(struct xsk_umem *umem);
    void xsk_socket__delete(struct xsk_socket *xsk);
    int xsk_socket__fd(const struct xsk_socket *xsk);
    struct xdp_statistics { uint64_t rx_dropped; uint64_t rx_invalid_descs;
                            uint64_t tx_invalid_descs; uint64_t rx_ring_full;
                            uint64_t rx_fill_ring_empty_descs; uint64_t tx_ring_empty_descs; };
    int getsockopt(int sockfd, int level, int optname, void *optval, uint32_t *optlen);
    """
)

_libxdp: Any = None

XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD = 1
XDP_COPY = kabi.XDP_COPY
XDP_USE_NEED_WAKEUP = kabi.XDP_USE_NEED_WAKEUP


def statistics(xsk_fd: int) -> dict[str, int]:
    """The kernel's XDP_STATISTICS for an XSK (Python's socket module cannot wrap AF_XDP)."""
    st = ffi.new("struct xdp_statistics *")
    n = ffi.new("uint32_t *", ffi.sizeof("struct xdp_statistics"))
    if ffi.dlopen(None).getsockopt(xsk_fd, kabi.SOL_XDP, kabi.XDP_STATISTICS, st, n) != 0:
        raise OSError(ffi.errno, f"XDP_STATISTICS: {os.strerror(ffi.errno)}")
    fields = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
              "rx_fill_ring_empty_descs", "tx_ring_empty_descs")  # fmt: skip
    return {f: int(getattr(st, f)) for f in fields}


def libxdp() -> Any:
    global _libxdp
    if _libxdp is None:
        _libxdp = ffi.dlopen("libxdp.so.1")
    return _libxdp


@dataclass(frozen=True)
class Geometry:
    """What the application needs to map the rings (mstack_port_geom in mstack_port.h)."""

    frame_size: int = 2048
    frames: int = 4096
    frame_headroom: int = 0
    rx_size: int = 2048
    tx_size: int = 2048
    fill_size: int = 4096
    comp_size: int = 2048
    bind_flags: int = XDP_COPY | XDP_USE_NEED_WAKEUP

    @property
    def umem_size(self) -> int:
        return self.frame_size * self.frames

    def validate(self) -> None:
        def pow2(n: int) -> bool:
            return n > 0 and n & (n - 1) == 0

        if not pow2(self.frame_size) or self.frame_size < 2048 or self.frame_size > 65536:
            raise ValueError(f"frame size must be a power of two in [2048, 65536]: {self}")
        for name in ("rx_size", "tx_size", "fill_size", "comp_size"):
            if not pow2(getattr(self, name)) or getattr(self, name) > 65536:
                raise ValueError(f"{name} must be a power of two <= 65536: {self}")
        if not 64 <= self.frames <= 1 << 20:
            raise ValueError(f"frames must be in [64, 1048576]: {self}")


@dataclass
class XskHandle:
    """The fds to hand over: the UMEM memfd and the bound XSK (owned by the caller)."""

    umem_fd: int
    xsk_fd: int

    def close(self) -> None:
        for fd in (self.umem_fd, self.xsk_fd):
            if fd >= 0:
                os.close(fd)
        self.umem_fd = self.xsk_fd = -1


def create_xsk(ifname: str, geom: Geometry, name: str = "mstack-umem") -> XskHandle:
    """Create a memfd UMEM and an XSK bound to `ifname` queue 0 in the *calling thread's*
    network namespace. The rings are set up but empty; no XDP program is loaded (mstackd
    inserts the socket into the switch's XSKMAP)."""
    geom.validate()
    memfd = os.memfd_create(name, os.MFD_CLOEXEC)
    area = None
    buf: Any = None
    umem_pp = ffi.new("struct xsk_umem **")
    xsk_pp = ffi.new("struct xsk_socket **")
    try:
        os.ftruncate(memfd, geom.umem_size)
        area = mmap.mmap(memfd, geom.umem_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        fill = ffi.new("struct xsk_ring_prod *")
        comp = ffi.new("struct xsk_ring_cons *")
        ucfg = ffi.new(
            "struct xsk_umem_config *",
            {
                "fill_size": geom.fill_size,
                "comp_size": geom.comp_size,
                "frame_size": geom.frame_size,
                "frame_headroom": geom.frame_headroom,
                "flags": 0,
            },
        )
        buf = ffi.from_buffer(area)
        rc = libxdp().xsk_umem__create(umem_pp, buf, geom.umem_size, fill, comp, ucfg)
        if rc < 0:
            raise BpfError(-rc, f"register UMEM of {geom.umem_size} bytes")
        rx = ffi.new("struct xsk_ring_cons *")
        tx = ffi.new("struct xsk_ring_prod *")
        scfg = ffi.new(
            "struct xsk_socket_config *",
            {
                "rx_size": geom.rx_size,
                "tx_size": geom.tx_size,
                "libxdp_flags": XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
                "xdp_flags": 0,
                "bind_flags": geom.bind_flags,
            },
        )
        rc = libxdp().xsk_socket__create(xsk_pp, ifname.encode(), 0, umem_pp[0], rx, tx, scfg)
        if rc < 0:
            raise BpfError(-rc, f"create and bind an XSK on {ifname}")
        xsk_fd = os.dup(libxdp().xsk_socket__fd(xsk_pp[0]))
        os.set_inheritable(xsk_fd, False)
        return XskHandle(umem_fd=memfd, xsk_fd=xsk_fd)
    except BaseException:
        os.close(memfd)
        raise
    finally:
        # Drop libxdp's mappings and fds; our dup keeps the socket (and its UMEM) alive.
        if xsk_pp[0] != ffi.NULL:
            libxdp().xsk_socket__delete(xsk_pp[0])
        if umem_pp[0] != ffi.NULL:
            libxdp().xsk_umem__delete(umem_pp[0])
        if area is not None:
            buf = None  # release the buffer export, or the mmap cannot close
            area.close()
