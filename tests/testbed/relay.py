"""Impairing L2 relay: bridges two interfaces with AF_PACKET sockets, impairing each direction.

Runs in a middle network namespace, outside the system under test (design.md sections 3 and 7:
this kernel has no netem). Run as `python -m testbed.relay --if-a X --if-b Y [impairments]`
with tests/ on PYTHONPATH, or by path. The decisions are testbed.impair's; this file only moves
frames and keeps time. SIGTERM/SIGINT: write --stats and exit; SIGUSR1: write --stats and go on.

Oversize frames (longer than MTU + 14 bytes, i.e. a GSO/GRO super-frame because offloads were
left on) are counted in `oversize` and dropped: the outgoing packet socket would refuse them
(EMSGSIZE) anyway, and a counter that says so is more useful than a silent black hole.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path: make `testbed` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.impair import DirectionStats, ImpairConfig, Impairer

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SOCK_BUF = 8 << 20  # room for a burst of a few thousand frames while Python catches up
BATCH = 64  # frames drained from one socket before looking at the other and the timers

DIRECTIONS = ("a_to_b", "b_to_a")


def _ifindex(name: str) -> int:
    return socket.if_nametoindex(name)


def _mtu(name: str) -> int:
    return int(Path(f"/sys/class/net/{name}/mtu").read_text())


def open_packet_socket(ifname: str) -> socket.socket:
    # Protocol 0 at creation, ETH_P_ALL at bind: the socket never sees other interfaces' frames.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCK_BUF)
    s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SOCK_BUF)
    s.bind((ifname, ETH_P_ALL))
    mreq = struct.pack("iHH8s", _ifindex(ifname), PACKET_MR_PROMISC, 0, b"")
    s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    s.setblocking(False)
    return s


@dataclass
class _Side:
    name: str  # direction name, e.g. "a_to_b": frames received on `rx`, sent on `tx`
    rx: socket.socket
    tx: socket.socket
    max_frame: int
    imp: Impairer

    @property
    def stats(self) -> DirectionStats:
        return self.imp.stats


class Relay:
    def __init__(
        self,
        if_a: str,
        if_b: str,
        cfg: ImpairConfig,
        directions: tuple[str, ...] = DIRECTIONS,
        stats_path: Path | None = None,
    ) -> None:
        self.if_a, self.if_b, self.cfg = if_a, if_b, cfg
        self.stats_path = stats_path
        sa, sb = open_packet_socket(if_a), open_packet_socket(if_b)
        plain = ImpairConfig(seed=cfg.seed, hold_timeout_ms=cfg.hold_timeout_ms)
        self.sides = [
            _Side(
                "a_to_b",
                sa,
                sb,
                _mtu(if_b) + 14,
                Impairer(cfg if "a_to_b" in directions else plain, "a_to_b"),
            ),
            _Side(
                "b_to_a",
                sb,
                sa,
                _mtu(if_a) + 14,
                Impairer(cfg if "b_to_a" in directions else plain, "b_to_a"),
            ),
        ]
        self.directions = directions
        self._by_fd = {s.rx.fileno(): s for s in self.sides}
        self._heap: list[tuple[float, int, int, bytes]] = []  # (due, seq, side index, frame)
        self._seq = 0
        self._buf = bytearray(1 << 17)  # larger than any GSO super-frame, to detect them
        self._stop = False
        self._dump = False
        self._dumps = 0
        self._started = time.monotonic()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- signals: the wakeup fd makes poll() return, the flags say what to do --------------
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_dump)

    def _on_stop(self, signum: int, frame: Any) -> None:
        self._stop = True

    def _on_dump(self, signum: int, frame: Any) -> None:
        self._dump = True

    # -- data path --------------------------------------------------------------------------
    def _send(self, side: _Side, frame: bytes) -> None:
        for attempt in range(3):
            try:
                side.tx.send(frame)
                side.stats.forwarded += 1
                return
            except (BlockingIOError, InterruptedError):
                # The out socket's buffer is full: wait briefly for room rather than drop.
                select.select([], [side.tx], [], 0.01 * (attempt + 1))
            except OSError as e:
                if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    side.stats.send_errors += 1
                    return
                time.sleep(0.001)
        side.stats.send_errors += 1

    def _emit(self, idx: int, out: list[tuple[float, bytes]], now: float) -> None:
        side = self.sides[idx]
        for due, frame in out:
            if due <= now and not self._heap:
                self._send(side, frame)
            else:
                # Behind the heap even when due now: frames of one direction keep their order.
                self._seq += 1
                heapq.heappush(self._heap, (due, self._seq, idx, frame))

    def _drain(self, idx: int) -> None:
        side = self.sides[idx]
        sock, buf, st = side.rx, self._buf, side.stats
        mv = memoryview(buf)
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING:  # belt and braces with PACKET_IGNORE_OUTGOING
                continue
            if n > side.max_frame:
                st.received += 1
                st.oversize += 1
                continue
            now = time.monotonic()
            self._emit(idx, side.imp.on_frame(bytes(mv[:n]), now), now)

    def _run_timers(self, now: float) -> None:
        for idx, side in enumerate(self.sides):
            if side.imp.next_deadline() is not None:
                self._emit(idx, side.imp.expire(now), now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, idx, frame = heapq.heappop(heap)
            self._send(self.sides[idx], frame)

    def _timeout_ms(self, now: float) -> int:
        deadlines = [d for s in self.sides if (d := s.imp.next_deadline()) is not None]
        if self._heap:
            deadlines.append(self._heap[0][0])
        if not deadlines:
            return -1
        return max(0, int((min(deadlines) - now) * 1000.0 + 0.999))

    def run(self) -> None:
        poller = select.poll()
        for s in self.sides:
            poller.register(s.rx.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop:
            self._run_timers(time.monotonic())
            for fd, _ev in poller.poll(self._timeout_ms(time.monotonic())):
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 512)
                else:
                    self._drain(0 if fd == self.sides[0].rx.fileno() else 1)
            if self._dump:
                self._dump = False
                self.write_stats(final=False)
        self.write_stats(final=True)

    # -- statistics --------------------------------------------------------------------------
    def _kernel_drops(self) -> None:
        for side in self.sides:
            # struct tpacket_stats {unsigned tp_packets, tp_drops}; reading resets it.
            raw = side.rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            _packets, drops = struct.unpack("II", raw)
            side.stats.kernel_drops += drops

    def stats(self, final: bool) -> dict[str, Any]:
        self._kernel_drops()
        return {
            "pid": os.getpid(),
            "final": final,
            "dumps": self._dumps,
            "elapsed_s": time.monotonic() - self._started,
            "if_a": self.if_a,
            "if_b": self.if_b,
            "impaired_directions": list(self.directions),
            "config": self.cfg.to_dict(),
            "pending": len(self._heap) + sum(s.imp.held for s in self.sides),
            "directions": {s.name: s.stats.to_dict() for s in self.sides},
        }

    def write_stats(self, final: bool) -> None:
        self._dumps += 1
        if self.stats_path is None:
            return
        data = json.dumps(self.stats(final), indent=1)
        tmp = self.stats_path.with_name(self.stats_path.name + ".tmp")
        tmp.write_text(data)
        tmp.replace(self.stats_path)  # readers never see half a file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="testbed.relay", description=__doc__.splitlines()[0])
    p.add_argument("--if-a", required=True)
    p.add_argument("--if-b", required=True)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--dup", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("--reorder-every", type=int, default=0)
    p.add_argument("--reorder-gap", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--corrupt", type=float, default=0.0)
    p.add_argument("--hold-timeout-ms", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--direction",
        choices=("both", "a_to_b", "b_to_a"),
        default="both",
        help="which direction is impaired; the other is forwarded untouched",
    )
    p.add_argument("--stats", type=Path, help="JSON statistics file (SIGTERM, SIGINT, SIGUSR1)")
    p.add_argument("--ready", type=Path, help="file written once both sockets are bound")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cfg = ImpairConfig(
        loss=a.loss,
        dup=a.dup,
        reorder=a.reorder,
        reorder_every=a.reorder_every,
        reorder_gap=a.reorder_gap,
        delay_ms=a.delay_ms,
        jitter_ms=a.jitter_ms,
        corrupt=a.corrupt,
        hold_timeout_ms=a.hold_timeout_ms,
        seed=a.seed,
    )
    directions = DIRECTIONS if a.direction == "both" else (a.direction,)
    relay = Relay(a.if_a, a.if_b, cfg, directions, a.stats)
    relay.install_signals()
    if a.ready is not None:
        a.ready.write_text(f"{os.getpid()}\n")
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
