"""The impairing relay, end to end between the root namespace and a remote namespace.

Counted UDP streams (numbered datagrams, receiver in the remote namespace) check what arrives
against fixed seeds and binomial bounds; a TCP transfer between two kernel stacks checks that
real traffic survives the relay byte-exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from testbed.impair import binomial_bounds
from testbed.netns import ImpairedRemoteHost, RemoteHost, stop_process
from testbed.ping import ping

pytestmark = pytest.mark.system

PORT = 9000
# Stream length for the rate tests: at 5000 a 10% loss has sigma 21, so the +-4.5 sigma band
# (405..595) already catches a relay that drops 12% or 8%.
N = 5000
FULL = os.environ.get("MSTACK_FULL") == "1"
MakeImpaired = Callable[..., ImpairedRemoteHost]

# Receives numbered datagrams until `idle` seconds pass without one (after the first), or 60 s
# in all; prints the numbers in arrival order and the datagrams whose payload was not intact.
RECEIVER = r"""
import json, socket, sys, time
ip, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: room for the whole burst
s.bind((ip, port))
print("READY", flush=True)
got, bad = [], 0
end = time.monotonic() + 60
s.settimeout(30)
while time.monotonic() < end:
    try:
        b = s.recv(65536)
    except socket.timeout:
        break
    n = int.from_bytes(b[:4], "big")
    if b[4:] != bytes((n + k) & 0xFF for k in range(len(b) - 4)):
        bad += 1
    got.append(n)
    s.settimeout(idle)
print(json.dumps({"got": got, "bad": bad}), flush=True)
"""


@dataclass
class StreamResult:
    got: list[int]  # datagram numbers in arrival order
    bad: int  # payloads that arrived altered
    sent: int


def payload(n: int, size: int) -> bytes:
    return n.to_bytes(4, "big") + bytes((n + k) & 0xFF for k in range(size - 4))


def udp_stream(
    h: RemoteHost, numbers: list[int], size: int = 200, idle: float = 1.0
) -> StreamResult:
    """Send the numbered datagrams root -> remote; return what the remote received."""
    rx = h.python_popen(RECEIVER, h.remote_ip, str(PORT), str(idle), ready="READY")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((h.host_ip, 0))
        for i, n in enumerate(numbers):
            s.sendto(payload(n, size), (h.remote_ip, PORT))
            if i % 100 == 99:
                time.sleep(0.002)  # stay well inside the relay's rate: loss must be ours only
    out, err = rx.communicate(timeout=90)
    stop_process(rx)
    assert rx.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    return StreamResult(res["got"], res["bad"], len(numbers))


def snmp(h: RemoteHost) -> dict[str, int]:
    """The remote namespace's /proc/net/snmp as {"Ip.InHdrErrors": n, ...}."""
    lines = h.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        proto = names.split(":")[0]
        for k, v in zip(names.split()[1:], values.split()[1:], strict=True):
            out[f"{proto}.{k}"] = int(v)
    return out


def test_no_impairment_stream_intact_and_in_order(
    impaired_remote_host: MakeImpaired,
) -> None:
    h = impaired_remote_host(seed=1)
    res = udp_stream(h, list(range(2000)))
    assert res.got == list(range(2000))
    assert res.bad == 0
    st = h.relay_stats(stop=True)
    assert st.to_remote.received == st.to_remote.forwarded == 2000
    assert st.to_remote.oversize == st.to_remote.kernel_drops == st.to_remote.send_errors == 0
    assert st.to_host.received == 0  # nothing else crosses: no ARP, no IPv6, no strays


def test_loss_within_binomial_bounds(impaired_remote_host: MakeImpaired) -> None:
    h = impaired_remote_host(loss=0.10, seed=11, direction="a_to_b")
    res = udp_stream(h, list(range(N)))
    lost = N - len(res.got)
    lo, hi = binomial_bounds(N, 0.10)
    assert lo <= lost <= hi, f"lost {lost} of {N}, expected {lo}..{hi}"
    assert res.got == sorted(res.got)  # loss alone never reorders
    st = h.relay_stats(stop=True)
    assert st.to_remote.dropped == lost  # and nothing but the relay lost anything
    assert st.to_remote.kernel_drops == 0


def test_reorder_every_10_gap_3_exact_order(
    impaired_remote_host: MakeImpaired,
) -> None:
    h = impaired_remote_host(reorder_every=10, reorder_gap=3, hold_timeout_ms=200, seed=1)
    res = udp_stream(h, list(range(1, 51)), idle=1.5)
    # Every 10th datagram waits behind the next 3; the 50th has no successors and leaves on
    # the hold timeout.
    expected = [
        *(1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 10),
        *(14, 15, 16, 17, 18, 19, 21, 22, 23, 20),
        *(24, 25, 26, 27, 28, 29, 31, 32, 33, 30),
        *(34, 35, 36, 37, 38, 39, 41, 42, 43, 40),
        *(44, 45, 46, 47, 48, 49, 50),
    ]
    assert res.got == expected
    st = h.relay_stats(stop=True)
    assert (st.to_remote.reordered, st.to_remote.released_by_timeout) == (5, 1)


def test_duplication_rate(impaired_remote_host: MakeImpaired) -> None:
    h = impaired_remote_host(dup=0.05, seed=3, direction="a_to_b")
    res = udp_stream(h, list(range(N)))
    dups = len(res.got) - len(set(res.got))
    lo, hi = binomial_bounds(N, 0.05)
    assert lo <= dups <= hi, f"{dups} duplicates of {N}, expected {lo}..{hi}"
    assert set(res.got) == set(range(N))
    st = h.relay_stats(stop=True)
    assert st.to_remote.duplicated == dups


REJECT_COUNTERS = (
    "Ip.InHdrErrors",
    "Ip.InAddrErrors",
    "Ip.InUnknownProtos",
    "Ip.InDiscards",
    "Udp.InErrors",
    "Udp.NoPorts",
)


def test_corruption_rate_seen_by_the_remote_kernel(
    impaired_remote_host: MakeImpaired,
) -> None:
    h = impaired_remote_host(corrupt=0.05, seed=5, direction="a_to_b")
    before = snmp(h)
    res = udp_stream(h, list(range(N)))
    after = snmp(h)
    missing = N - len(res.got)
    lo, hi = binomial_bounds(N, 0.05)
    assert lo <= missing <= hi, f"{missing} of {N} lost to corruption, expected {lo}..{hi}"
    # One flipped byte anywhere past the Ethernet header fails an IPv4 header check or a UDP
    # check (the checksum, or the length field: Udp.InErrors counts both): the remote kernel
    # counts each one and delivers none altered.
    rejected = sum(after[k] - before[k] for k in REJECT_COUNTERS)
    assert res.bad == 0
    st = h.relay_stats(stop=True)
    assert st.to_remote.corrupted == missing == rejected


def test_delay_is_a_lower_bound_on_rtt(impaired_remote_host: MakeImpaired) -> None:
    h = impaired_remote_host(delay_ms=25, jitter_ms=5, seed=2)
    rtts = ping(h.remote_ip, count=5, interval=0.02, timeout=5.0)
    assert all(r is not None for r in rtts), rtts
    # Each direction holds a frame at least delay - jitter: 2 * 20 ms per round trip.
    assert min(r for r in rtts if r is not None) >= 0.040, rtts
    st = h.relay_stats(stop=True)
    assert st.to_remote.delayed == st.to_host.delayed == 5


TCP_SERVER = r"""
import hashlib, socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(1)
s.settimeout(120)
print("READY", flush=True)
c, _ = s.accept()
c.settimeout(120)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
    n += len(b)
c.sendall(f"{n} {h.hexdigest()}\n".encode())
c.close()
"""


@pytest.mark.long
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "impairment",
    [
        pytest.param({"loss": 0.03}, id="loss3"),
        # design.md section 3's run: 3% loss, 25% reordering, 1% duplication, 5 ms delay.
        pytest.param({"loss": 0.03, "reorder": 0.25, "dup": 0.01, "delay_ms": 5}, id="design-mix"),
    ],
)
def test_tcp_through_loss_is_byte_exact(
    impaired_remote_host: MakeImpaired, impairment: dict[str, float]
) -> None:
    size = (20 if FULL else 4) << 20
    h = impaired_remote_host(seed=4, **impairment)
    data = random.Random(4).randbytes(size)
    srv = h.python_popen(TCP_SERVER, h.remote_ip, str(PORT), ready="READY")
    deadline = time.monotonic() + 120
    with socket.create_connection((h.remote_ip, PORT), timeout=30) as c:
        c.settimeout(10)
        view = memoryview(data)
        while view:
            assert time.monotonic() < deadline, f"{size - len(view)} of {size} bytes in 120 s"
            try:
                view = view[c.send(view[: 1 << 16]) :]
            except TimeoutError:
                continue
        c.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            assert time.monotonic() < deadline
            chunk = c.recv(256)
            assert chunk, f"server closed early: {reply!r}"
            reply += chunk
    n, digest = reply.decode().split()
    assert int(n) == size
    assert digest == hashlib.sha256(data).hexdigest()
    srv.wait(timeout=10)
    st = h.relay_stats(stop=True)
    # The loss really happened, and no super-frame got near the relay (offloads off).
    assert st.to_remote.dropped > 0 and st.to_host.dropped > 0
    assert st.to_remote.oversize == st.to_host.oversize == 0
    print(
        f"tcp {size >> 20} MB through {impairment}: {st.elapsed_s:.1f} s relay lifetime, "
        f"{st.to_remote.forwarded} frames forwarded, {st.to_remote.dropped} dropped",
        file=sys.stderr,
    )


THROUGHPUT_RECEIVER = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
print("READY", flush=True)
s.settimeout(30)
n, first, last = 0, 0.0, 0.0
while True:
    try:
        s.recv(2048)
    except socket.timeout:
        break
    last = time.monotonic()
    first = first or last
    n += 1
    s.settimeout(1.0)
print(json.dumps({"n": n, "seconds": last - first}), flush=True)
"""


@pytest.mark.long
def test_relay_throughput(
    impaired_remote_host: MakeImpaired, record_property: Callable[[str, Any], None]
) -> None:
    """A burst that fits the relay's socket buffer, timed at the receiver: the relay's own
    forwarding rate. Reported, with only a floor far below the measured ~100k frames/s that
    a broken event loop (a poll timeout per frame, say) would not reach."""
    frames = 5000
    h = impaired_remote_host()
    rx = h.python_popen(THROUGHPUT_RECEIVER, h.remote_ip, str(PORT), ready="READY")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(frames):
            s.sendto(b"x" * 64, (h.remote_ip, PORT))
    out, _ = rx.communicate(timeout=60)
    res = json.loads(out.strip().splitlines()[-1])
    st = h.relay_stats(stop=True)
    assert st.to_remote.kernel_drops == 0
    assert res["n"] == frames
    fps = frames / max(res["seconds"], 1e-6)
    record_property("relay_frames_per_s", round(fps))
    print(f"relay: {fps:.0f} frames/s (64-byte UDP payloads)", file=sys.stderr)
    assert fps > 5000
