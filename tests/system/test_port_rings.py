"""The app side of a port (libmsport, utcp_c/port) on a real XSK, handed over like mstackd does.

A veth pair: the app end in a fresh network namespace, the peer end in the root namespace where
the test sends and receives raw frames (AF_PACKET).  `port_helper` plays the daemon (memfd UMEM,
XDP program + XSKMAP, XSK bound in copy mode with libxdp, fds over SCM_RIGHTS) and, in a child
that is `nobody` before the port exists, the application running the library.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed import netns as tb

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
VARIANTS = {"normal": BUILD / "tests" / "port", "asan": BUILD / "asan" / "tests" / "port"}
ETH_P_TEST = 0x88B5  # IEEE local experimental ethertype: no kernel stack acts on it
NOBODY = 65534
SO_RCVBUFFORCE = 33
PACKET_STATISTICS = 6
SOL_PACKET = 263


def helper_path(variant: str = "normal") -> Path:
    path = VARIANTS[variant] / "port_helper"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make build` first")
    return path


# -- frames ----------------------------------------------------------------------------------


def gen_frame(hdr: bytes, seq: int) -> bytes:
    """The helper's gen_frame(): header, seq (big endian), (seq + i) & 0xff; 60..1514 bytes."""
    length = 60 + (seq * 7) % 1455
    body = bytes((seq + i) & 0xFF for i in range(length - 18))
    return hdr + struct.pack("!I", seq) + body


def kernel_at_least(major: int, minor: int) -> bool:
    nums = os.uname().release.split("-")[0].split(".")
    return (int(nums[0]), int(nums[1])) >= (major, minor)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


# -- topology --------------------------------------------------------------------------------


class Helper:
    """A running port_helper: stdout read without Python's buffering (lines are waited for
    with select), so a line already received can never hide behind a blocking wait."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self._buf = b""
        self.lines: list[str] = []  # every line read so far
        self._next: dict[str, int] = {}  # per prefix: where to look next

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first line starting with `prefix` not returned before, in whatever order the
        helper's processes wrote their lines (all are kept in self.lines)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                self.lines.append(raw.decode())
            for i in range(self._next.get(prefix, 0), len(self.lines)):
                if self.lines[i].startswith(prefix):
                    self._next[prefix] = i + 1
                    return self.lines[i]
            self._next[prefix] = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no {prefix!r} line in {timeout} s; saw {self.lines[-5:]}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.finish(10)
                raise EOFError(f"no {prefix!r} line; exit {self.proc.returncode}: {self.err}")
            self._buf += chunk

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def finish(self, timeout: float, stdin: str | None = None) -> Result:
        if self.proc.stdin is not None and self.proc.stdin.closed:
            stdin = None
        try:
            out, err = self.proc.communicate(
                input=stdin.encode() if stdin is not None else None, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            tb.stop_process(self.proc)
            pytest.fail(f"port_helper did not finish in {timeout} s")
        self.err = err.decode(errors="replace")
        text = (self._buf + out).decode()
        self._buf = b""
        return parse(self.proc.returncode, self.lines + text.splitlines(), self.err)

    err = ""


@dataclass
class PortLink:
    ns: str
    app_if: str  # in ns, carries the XSK
    peer_if: str  # in the root namespace, where the test sends and listens
    app_mac: bytes
    peer_mac: bytes
    helpers: list[Helper] = field(default_factory=list)

    def hdr_to_app(self) -> bytes:
        return self.app_mac + self.peer_mac + struct.pack("!H", ETH_P_TEST)

    def hdr_to_peer(self) -> bytes:
        return self.peer_mac + self.app_mac + struct.pack("!H", ETH_P_TEST)

    def start(self, args: Sequence[str], variant: str = "normal") -> Helper:
        argv = ["ip", "netns", "exec", self.ns, str(helper_path(variant)), "--ifname"]
        argv += [self.app_if, *args]
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        h = Helper(argv, env)
        self.helpers.append(h)
        return h


@pytest.fixture
def port_link() -> Iterator[PortLink]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, XDP)")
    ns = tb.unique_name()
    peer_if, app_if = tb.unique_name("h"), tb.unique_name("p")
    link = None
    try:
        tb.add_netns(ns)  # IPv6 off for every link in it
        tb.add_veth(peer_if, app_if, ns)
        tb.disable_ipv6_root(peer_if)
        tb.ethtool_off(peer_if, ["tx"])
        tb.ethtool_off(app_if, ["tx"], netns=ns)
        tb.sh(["ip", "link", "set", peer_if, "up"])
        tb.sh(["ip", "-n", ns, "link", "set", app_if, "up"])
        link = PortLink(
            ns,
            app_if,
            peer_if,
            mac_bytes(tb.link_info(app_if, netns=ns)["address"]),
            mac_bytes(tb.link_info(peer_if)["address"]),
        )
        yield link
    finally:
        if link is not None:
            for h in link.helpers:
                tb.stop_process(h.proc)
        tb.del_link(peer_if)
        tb.del_netns(ns)


# -- the helper's output -----------------------------------------------------------------------


@dataclass
class Result:
    rc: int
    ready: str
    frames: list[bytes]
    stats: dict[str, int]
    stderr: str
    lines: list[str]


def parse(rc: int, lines: list[str], err: str) -> Result:
    ready, frames, stats = "", [], {}
    for line in lines:
        if line.startswith("READY"):
            ready = line
        elif line.startswith("F "):
            frames.append(bytes.fromhex(line[2:]))
        elif line.startswith("STATS "):
            stats = json.loads(line[6:])
    return Result(rc, ready, frames, stats, err, lines)


def assert_unprivileged(ready: str) -> None:
    """The process that mapped the port is nobody, holds no capability, and could not have
    created an AF_XDP socket itself."""
    fields = dict(kv.split("=") for kv in ready.split()[1:])
    assert fields == {"uid": str(NOBODY), "caps": "0", "xsk_denied": "1"}, ready


def assert_at_rest(stats: dict[str, int]) -> None:
    """Every frame is back where it started: no buffer leaked on either side."""
    assert stats["stats_err"] == 0
    assert stats["rx_held"] == 0 and stats["tx_held"] == 0 and stats["tx_inflight"] == 0
    assert stats["tx_free"] == stats["tx_quota"], stats
    assert stats["rx_quota"] + stats["tx_quota"] == stats["frames"]
    assert stats["bad_descs"] == 0 and stats["kick_errors"] == 0
    assert stats["k_rx_invalid_descs"] == 0 and stats["k_tx_invalid_descs"] == 0


@contextlib.contextmanager
def sniffer(ifname: str) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_TEST))
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        s.bind((ifname, ETH_P_TEST))
        yield s
    finally:
        s.close()


def receive(s: socket.socket, n: int, timeout: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, addr = s.recvfrom(4096)
        except TimeoutError:
            break
        if addr[2] != socket.PACKET_OUTGOING:
            got.append(data)
    # Anything more would be a duplicate or a stray frame.
    s.settimeout(0.2)
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(s.recv(4096))
    return got


def packet_drops(s: socket.socket) -> int:
    _, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return int(drops)


def sender(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    return s


# -- scenarios ---------------------------------------------------------------------------------


def rx_scenario(link: PortLink, n: int, args: Sequence[str] = (), **kw: str) -> Result:
    """Frames 0..n-1 sent from the peer end; what the app received through the library.  The
    sender follows the app's progress lines, so no more frames are in flight than its receive
    side holds: a loss is the library's fault, never a race with the scheduler."""
    progress = 32
    h = link.start(
        [*args, "--wait-stdin", "1", "--timeout", "60", "--progress", str(progress), "rx", str(n)],
        **kw,
    )
    assert_unprivileged(h.wait_for("READY", 20))
    if "--daemon-exit" in args:
        assert h.wait_for("DAEMON gone", 20) == "DAEMON gone sig=9"
    h.send("go\n")
    hdr = link.hdr_to_app()
    window = 128  # below the smallest receive side used here (256 frames)
    got = 0
    with contextlib.closing(sender(link.peer_if)) as s:
        for seq in range(n):
            while seq - got >= window:
                got = int(h.wait_for("GOT ", 30).split()[1])
            s.send(gen_frame(hdr, seq))
    res = h.finish(60)
    assert res.rc == 0, res.stderr
    assert res.stats["received"] == n and res.stats["extra"] == 0, res.stats
    assert len(res.frames) == n
    for seq, frame in enumerate(res.frames):
        assert frame == gen_frame(hdr, seq), f"frame {seq}: {len(frame)} bytes"
    assert_at_rest(res.stats)
    assert res.stats["rx_frames"] == n
    assert res.stats["k_rx_dropped"] == 0 and res.stats["k_rx_ring_full"] == 0
    assert res.stats["k_rx_fill_ring_empty_descs"] == 0
    return res


def tx_burst_scenario(link: PortLink, n: int, args: Sequence[str] = ()) -> Result:
    """The app sends generated frames 0..n-1; the peer end must see each once, in order."""
    hdr = link.hdr_to_peer()
    with sniffer(link.peer_if) as sniff:
        opts = ["--wait-stdin", "1", "--hdr", hdr.hex(), "--timeout", "60"]
        h = link.start([*args, *opts, "tx-burst", str(n)])
        assert_unprivileged(h.wait_for("READY", 20))
        if "--daemon-exit" in args:
            assert h.wait_for("DAEMON gone", 20) == "DAEMON gone sig=9"
        h.send("go\n")
        res = h.finish(90)
        assert res.rc == 0, res.stderr
        got = receive(sniff, n, 30)
        assert packet_drops(sniff) == 0
    assert len(got) == n
    for seq, frame in enumerate(got):
        assert frame == gen_frame(hdr, seq), f"frame {seq}"
    st = res.stats
    assert st["tx_frames"] == n and st["completions"] == n and st["sent"] == n
    assert_at_rest(st)
    return res


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.system
@pytest.mark.parametrize("variant", ["normal", "asan"])
def test_rx_frames_arrive_byte_exact_in_order(port_link: PortLink, variant: str) -> None:
    rx_scenario(port_link, 300, variant=variant)


@pytest.mark.system
@pytest.mark.parametrize("variant", ["normal", "asan"])
def test_tx_frames_arrive_byte_exact_in_order(port_link: PortLink, variant: str) -> None:
    rng = random.Random(20261126)
    hdr = port_link.hdr_to_peer()
    lengths = [60, 61, 1514, 1513, 64, 128, 1000] + [rng.randint(60, 1514) for _ in range(193)]
    frames = [hdr + rng.randbytes(n - 14) for n in lengths]
    with sniffer(port_link.peer_if) as sniff:
        h = port_link.start(["--timeout", "20", "tx"], variant)
        res = h.finish(40, stdin="".join(f"F {f.hex()}\n" for f in frames))
        assert res.rc == 0, res.stderr
        got = receive(sniff, len(frames), 10)
        assert packet_drops(sniff) == 0
    assert_unprivileged(res.ready)
    assert len(got) == len(frames)
    for i, (want, have) in enumerate(zip(frames, got, strict=True)):
        assert have == want, f"frame {i}: {len(have)} bytes, expected {len(want)}"
    assert res.stats["sent"] == len(frames) and res.stats["tx_frames"] == len(frames)
    assert res.stats["completions"] == len(frames)
    assert_at_rest(res.stats)


# A port much smaller than the bursts: 1024 frames, 256-entry rings, so 10,000 frames wrap every
# ring dozens of times; the fill ring must be restocked and the completion ring reaped.
SMALL = ["--frames", "1024", "--ring", "256", "--fill", "512"]
BURST = 10_000


@pytest.mark.system
def test_rx_burst_larger_than_rings_restocks_fill_ring(port_link: PortLink) -> None:
    res = rx_scenario(port_link, BURST, SMALL)
    assert res.stats["rx_quota"] == 256  # min(frames / 2, fill / 2): every frame reused ~39x


@pytest.mark.system
def test_tx_burst_larger_than_rings_reaps_completions(port_link: PortLink) -> None:
    st = tx_burst_scenario(port_link, BURST, SMALL).stats
    assert st["tx_quota"] == 768 and 10 * st["tx_quota"] < BURST  # every frame reused ~13x
    # One sendto per batch of 64: the library raises the copy-mode budget (32 frames per call
    # by default) to the ring size where the kernel allows it (Linux >= 6.17); before that a
    # kick needs two calls per 64 frames.
    batches = -(-BURST // 64)
    per_batch = 1 if kernel_at_least(6, 17) else 2
    assert batches <= st["kicks"] <= per_batch * batches + 16, st["kicks"]


@pytest.mark.system
def test_port_outlives_its_daemon(port_link: PortLink) -> None:
    """design.md section 3 says, untried: the XSK and the UMEM live on in the application's
    copies of the fds, and an XDP program attached by netlink keeps its XSKMAP.  Here the
    daemon process is SIGKILLed right after the handover, before any frame moves."""
    rx_scenario(port_link, 2000, ["--daemon-exit", "1"])
    tx_burst_scenario(port_link, 2000, ["--daemon-exit", "1"])


@pytest.mark.system
def test_daemon_made_with_plain_syscalls_keeping_no_mapping(port_link: PortLink) -> None:
    """The XSK made the way mstackd (Python, no libxdp) will make it: socket, XDP_UMEM_REG on
    a mapping of the memfd that is unmapped right after, the four ring sizes, bind.  The daemon
    never maps a ring, and it is SIGKILLed after the handover; the app's port works."""
    args = ["--raw-daemon", "1", "--daemon-exit", "1"]
    rx_scenario(port_link, 1000, args)
    tx_burst_scenario(port_link, 1000, args)


@pytest.mark.system
def test_forked_child_cannot_touch_the_port(port_link: PortLink) -> None:
    """design.md 4a: the UMEM and ring mappings are MADV_DONTFORK, so a child of the process
    that holds the port faults on them (it must get a port of its own); the parent's port
    keeps working.  Opening the same fds a second time is refused (the fill ring is in use)."""
    h = port_link.start(
        ["--fork-check", "1", "--reopen-check", "1", "--timeout", "20", "tx-burst", "100"]
    )
    res = h.finish(40)
    assert res.rc == 0, res.stderr
    fork = next(line for line in res.lines if line.startswith("FORK "))
    assert fork == f"FORK umem={signal.SIGSEGV} rings={signal.SIGSEGV}", fork
    assert f"REOPEN err={-errno.EBUSY}" in res.lines
    assert res.stats["completions"] == 100
    assert_at_rest(res.stats)


@pytest.mark.system
def test_bad_geometry_is_refused_and_nothing_left(port_link: PortLink) -> None:
    """More receive frames than the UMEM holds: the library refuses the port with -EINVAL, the
    helper fails cleanly, and the daemon half takes its XDP program off the link."""
    res = port_link.start(["--rx-frames", "5000", "--timeout", "5", "rx", "1"]).finish(30)
    assert res.rc == 2
    assert "mstack_port_open: Invalid argument" in res.stderr
    info = tb.link_info(port_link.app_if, netns=port_link.ns)
    assert "xdp" not in info, info


# -- the C unit tests (no privileges), one pytest case per C case -------------------------------


def _c_cases() -> list[object]:
    params: list[object] = []
    for variant, tdir in VARIANTS.items():
        for name in ("test_ring", "test_frames"):
            path = tdir / name
            if not path.exists():
                params.append(pytest.param(path, None, id=f"{variant}-{name}-missing"))
                continue
            out = subprocess.run(
                [str(path), "--list"], capture_output=True, text=True, timeout=60, check=False
            ).stdout
            for case in out.split():
                params.append(pytest.param(path, case, id=f"{variant}-{name}-{case}"))
    return params


@pytest.mark.unit
@pytest.mark.parametrize(("binary", "case"), _c_cases())
def test_c_unit(binary: Path, case: str | None) -> None:
    if case is None:
        pytest.fail(f"{binary} is missing: run `make build` first")
    proc = subprocess.run(
        [str(binary), case], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
