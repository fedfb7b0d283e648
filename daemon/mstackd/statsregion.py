"""Reading a stack's statistics region (utcp_c/include/mstack_stats.h): a read-only mapping of
a memfd the application writes. The application is not trusted: sizes are checked against the
mapping, strings are bounded, and a writer that never finishes (seq odd for ever) yields an
error after a bounded number of tries, not a hang."""

from __future__ import annotations

import ipaddress
import mmap
import struct
from typing import Any

from mstackd.abi import consts, ffi

HDR = ffi.sizeof("struct mstack_stats_hdr")
CONN = ffi.sizeof("struct mstack_stats_conn")
SEQ_OFFSET = ffi.offsetof("struct mstack_stats_hdr", "seq")
TRIES = 1000


class RegionError(Exception):
    pass


def _snapshot(m: mmap.mmap) -> bytes:
    for _ in range(TRIES):
        (s1,) = struct.unpack_from("=I", m, SEQ_OFFSET)
        if s1 & 1:
            continue
        data = m[:]
        (s2,) = struct.unpack_from("=I", m, SEQ_OFFSET)
        if s1 == s2:
            return data
    raise RegionError("the stack is always in the middle of an update")


def _text(raw: Any) -> str:
    """A fixed-size char array written by the application: bounded, NUL optional."""
    return bytes(ffi.buffer(raw)).split(b"\0", 1)[0].decode("ascii", "replace")


def _ip(host_order: int) -> str:
    return str(ipaddress.IPv4Address(host_order))


def read(m: mmap.mmap) -> dict[str, Any]:
    """{"app", "pid", "updated_us", "stack": {...}, "conns": [...]} or RegionError."""
    if len(m) < HDR:
        raise RegionError(f"region of {len(m)} bytes is smaller than its header")
    data = _snapshot(m)
    hdr = ffi.from_buffer("struct mstack_stats_hdr *", data)
    if hdr.magic != consts.MSTACK_STATS_MAGIC or hdr.version != consts.MSTACK_STATS_VERSION:
        raise RegionError("not a MultiStack statistics region (magic or version)")
    n = int(hdr.n_slots)
    if n > consts.MSTACK_STATS_MAX_SLOTS or HDR + n * CONN > len(data):
        raise RegionError(f"region says {n} slots, which do not fit in {len(data)} bytes")
    stack = {k: int(getattr(hdr.stack, k)) for k in dir(hdr.stack)}
    conns = []
    slots = ffi.from_buffer("struct mstack_stats_conn[]", data[HDR : HDR + n * CONN])
    for i in range(n):
        c = slots[i]
        if not c.in_use:
            continue
        conns.append(
            {
                "slot": i,
                "local": f"{_ip(c.laddr)}:{c.lport}",
                "remote": f"{_ip(c.raddr)}:{c.rport}",
                "state": _text(c.state),
                "cc": _text(c.cc),
                "options": {
                    "mss": int(c.snd_mss),
                    "wscale": [int(c.snd_wscale), int(c.rcv_wscale)] if c.ws_ok else None,
                    "sack": bool(c.sack_ok),
                    "timestamps": bool(c.ts_ok),
                },
                "cwnd": int(c.cwnd),
                "ssthresh": int(c.ssthresh),
                "snd_wnd": int(c.snd_wnd),
                "rcv_wnd": int(c.rcv_wnd),
                "srtt_us": int(c.srtt_us),
                "rttvar_us": int(c.rttvar_us),
                "rto_us": int(c.rto_us),
                "unacked": int(c.unacked),
                "retransmits": int(c.retransmits),
                "rto_timeouts": int(c.rto_timeouts),
                "fast_retransmits": int(c.fast_retransmits),
                "bytes_acked": int(c.bytes_acked),
                "bytes_received": int(c.bytes_received),
            }
        )
    return {
        "app": _text(hdr.app),
        "pid": int(hdr.pid),
        "updated_us": int(hdr.updated_us),
        "stack": stack,
        "conns": conns,
    }
