"""ICMP echo for the test bed (this machine has no `ping` binary): raw socket, needs root.

`ping(dst, count)` returns the round-trip times of the replies; `python -m testbed.ping DST
[COUNT]` prints them as JSON, for use inside a namespace.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(
    dst: str, count: int = 3, interval: float = 0.05, timeout: float = 2.0
) -> list[float | None]:
    """RTT in seconds per echo request (None: no reply within `timeout`). Bounded in time."""
    ident = os.getpid() & 0xFFFF
    rtts: list[float | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        for seq in range(1, count + 1):
            payload = struct.pack("!d", time.monotonic()) + b"mstestbed"
            hdr = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", ICMP_ECHO, 0, _csum(hdr + payload), ident, seq) + payload
            sent = time.monotonic()
            s.sendto(pkt, (dst, 0))
            rtt = None
            deadline = sent + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([s], [], [], left)[0]:
                    break
                data, _ = s.recvfrom(2048)
                ihl = (data[0] & 0x0F) * 4
                typ, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
                if typ == ICMP_ECHOREPLY and rid == ident and rseq == seq:
                    rtt = time.monotonic() - sent
                    break
            rtts.append(rtt)
            if seq < count:
                time.sleep(interval)
    return rtts


if __name__ == "__main__":
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(json.dumps(ping(sys.argv[1], n)))
