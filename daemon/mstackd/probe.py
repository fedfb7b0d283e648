"""PortCounter: the first switch program driven by mstackd. It attaches xdp_count to a NIC,
watches chosen TCP destination ports and reads their counters, while every frame still goes
on to the kernel. It is the proof that the BPF pipeline (build -> libbpf -> XDP -> maps) is
real; the switch's ingress program replaces it with the same conventions."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Literal

from mstackd import kabi, libbpf, paths
from mstackd.abi import consts

Mode = Literal["native", "generic"]
MODE_FLAGS: dict[str, int] = {
    "native": kabi.XDP_FLAGS_DRV_MODE,
    "generic": kabi.XDP_FLAGS_SKB_MODE,
}


@dataclass(frozen=True)
class PortCount:
    port: int
    packets: int
    bytes: int


class PortCounter:
    """xdp_count attached to one interface. Use as a context manager: leaving it detaches the
    program (only if it is still ours) and closes every fd."""

    def __init__(self, ifname: str, mode: Mode = "native") -> None:
        if mode not in MODE_FLAGS:
            raise ValueError(f"mode must be one of {sorted(MODE_FLAGS)}, not {mode!r}")
        self.ifname = ifname
        self.ifindex = socket.if_nametoindex(ifname)
        self.mode = mode
        self._flags = MODE_FLAGS[mode]
        self._obj = libbpf.BpfObject(paths.bpf_object("xdp_count.bpf.o")).load()
        try:
            self._watched = self._obj.map("watched", "__u16", "struct mstack_port_count")
            self._totals = self._obj.map("totals", "__u32", "__u64")
            self._attach()
        except BaseException:
            self._obj.close()
            raise

    def _attach(self) -> None:
        existing = libbpf.xdp_query_id(self.ifindex)
        if existing:
            raise libbpf.BpfError(
                errno.EBUSY,
                f"{self.ifname} already has an XDP program (id {existing}); refusing to replace "
                "a program that is not ours",
            )
        fd = self._obj.program_fd("xdp_count")
        libbpf.xdp_attach(self.ifindex, fd, self._flags | kabi.XDP_FLAGS_UPDATE_IF_NOEXIST)
        self.prog_id = libbpf.xdp_query_id(self.ifindex, self._flags)

    def watch(self, port: int) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"TCP port out of range: {port}")
        self._watched.update(port, {"packets": 0, "bytes": 0}, kabi.BPF_NOEXIST)

    def count(self, port: int) -> PortCount:
        vals = self._watched.lookup(port)
        if vals is None:
            raise KeyError(f"port {port} is not watched")
        assert isinstance(vals, list)
        return PortCount(port, sum(v.packets for v in vals), sum(v.bytes for v in vals))

    def totals(self) -> dict[str, int]:
        names = {
            "frames": consts.MSTACK_CNT_FRAMES,
            "ipv4": consts.MSTACK_CNT_IPV4,
            "tcp": consts.MSTACK_CNT_TCP,
            "watched": consts.MSTACK_CNT_WATCHED,
            "bad_ip": consts.MSTACK_CNT_BAD_IP,
        }
        out = {}
        for name, slot in names.items():
            vals = self._totals.lookup(slot)
            assert isinstance(vals, list)
            out[name] = int(sum(vals))
        return out

    def close(self) -> None:
        try:
            if libbpf.xdp_query_id(self.ifindex, self._flags) == self.prog_id:
                libbpf.xdp_detach(self.ifindex, self._flags)
        except (libbpf.BpfError, OSError):
            pass  # the link is gone (its namespace was deleted): nothing left to detach
        finally:
            self._obj.close()

    def __enter__(self) -> PortCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
