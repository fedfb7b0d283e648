"""UTCP against the Linux kernel over a TAP device (issue 4's tap interop), both roles,
sha256-checked.

Directly: utcp_c/tools/tap_interop.sh in a private namespace it makes and removes (8 MB each way
in `make test`; MSTACK_FULL=1 moves 100 MB each way).

Through the test bed's impairing relay (3% loss, 25% reordering, 1% duplication, 5 ms each
way; outside the system under test): utcp-tapcat on a TAP device in a middle namespace, the
relay bridging that TAP device and a veth to the kernel's namespace. 8 MB each way in
`make test`, 100 MB with MSTACK_FULL=1 (MSTACK_RELAY_MB overrides, for measurements). The
kernel's own figures through the same relay are in test_utcp_xdp.py."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.netns import (
    ImpairedRemoteHost,
    _set_permanent_neigh,
    ethtool_off,
    link_info,
    relay_bed,
    sh,
    stop_process,
)

pytestmark = [pytest.mark.system, pytest.mark.long]

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
FULL = os.environ.get("MSTACK_FULL") == "1"
SIZE_MB = 100 if FULL else 8
RELAY_SIZE = int(os.environ.get("MSTACK_RELAY_MB", "100" if FULL else "8")) * 1_000_000
# Bound on one transfer: a loss-based sender moves ~2.5 Mbit/s through the relay (3 s per MB).
LIMIT_S = 120 + 6 * RELAY_SIZE // 1_000_000
IMPAIRMENT = {"loss": 0.03, "reorder": 0.25, "dup": 0.01, "delay_ms": 5, "seed": 7}
UTCP_MAC = "02:00:00:77:00:02"


def test_utcp_and_the_kernel_over_tap_both_ways() -> None:
    tapcat()
    out = subprocess.run(
        ["bash", str(REPO / "utcp_c/tools/tap_interop.sh"), str(BUILD), str(SIZE_MB)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("sha256 OK") == 2, out.stdout
    # The kernel's view of the connection UTCP accepted: the options were negotiated.
    view = out.stdout.split("kernel's view:", 1)[1].split("sha256", 1)[0]
    assert "ts" in view.split() and "sack" in view.split() and "wscale:" in view, view


def tapcat() -> Path:
    exe = BUILD / "bin" / "utcp-tapcat"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run make build")
    return exe


@dataclass
class TapBehindRelay:
    """utcp-tapcat's TAP device `tap` in `h.mid_ns`, bridged by the relay to the kernel in
    `h.ns` (address `h.remote_ip`, MAC `h.remote_mac`); UTCP uses `h.host_ip`."""

    h: ImpairedRemoteHost
    tap: str

    def tapcat(self, *args: str, **kw) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
        argv = [str(tapcat()), "--dev", self.tap, "--ip", self.h.host_ip, "--mac", UTCP_MAC,
                "--gw-mac", self.h.remote_mac, *args]  # fmt: skip
        env = dict(os.environ, TAPCAT_PROGRESS="1")
        return subprocess.Popen(["ip", "netns", "exec", self.h.mid_ns, *argv], env=env, **kw)


@contextlib.contextmanager
def tap_behind_relay(**impairment: object) -> Iterator[TapBehindRelay]:
    """[mid_ns: TAP <- relay -> veth] <-> veth in ns (the kernel); torn down pass or fail."""
    if os.geteuid() != 0:
        pytest.skip("the network test bed needs root")
    with contextlib.ExitStack() as stack:
        with relay_bed(stack, impairment, "t", host_if=False) as h:
            sh(["ip", "-n", h.mid_ns, "tuntap", "add", "dev", h.mid_host_if, "mode", "tap"])
            for dev in (h.mid_host_if, h.mid_remote_if):
                sh(["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], netns=h.mid_ns)
                sh(["ip", "-n", h.mid_ns, "link", "set", dev, "promisc", "on", "up"])
            # Real frames through the relay and full checksums from the kernel.
            ethtool_off(h.mid_remote_if, ("tso", "gso", "gro", "tx"), h.mid_ns)
            ethtool_off(h.remote_if, ("tso", "gso", "gro", "tx"), h.ns)
            sh(["ip", "-n", h.ns, "addr", "add", f"{h.remote_ip}/24", "dev", h.remote_if])
            sh(["ip", "-n", h.ns, "link", "set", h.remote_if, "up"])
            h.remote_mac = link_info(h.remote_if, h.ns)["address"]
            _set_permanent_neigh(h.host_ip, UTCP_MAC, h.remote_if, h.ns)  # UTCP does no ARP
        yield TapBehindRelay(h, h.mid_host_if)


# The kernel sends a file to UTCP and waits for UTCP's FIN; prints seconds, connect to EOF.
KSEND = r"""
import socket, sys, time
data = open(sys.argv[3], "rb").read()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
t = time.monotonic()
s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.settimeout(120)
while s.recv(65536):
    pass
print(f"{time.monotonic() - t:.3f}")
"""

# The kernel receives to EOF and writes what it got; prints bytes and seconds, accept to EOF.
KRECV = r"""
import socket, sys, time
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(1)
print("ready", flush=True)
ls.settimeout(60)
c, _ = ls.accept()
t = time.monotonic()
c.settimeout(120)
n = 0
with open(sys.argv[3], "wb") as f:
    while chunk := c.recv(1 << 16):
        f.write(chunk)
        n += len(chunk)
t = time.monotonic() - t
c.close()
print(n, f"{t:.3f}", flush=True)
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_progress(err: str) -> str:
    """utcp-tapcat's last per-second report (its counters) and its summary line."""
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    summary = [ln for ln in err.splitlines() if ln.startswith("utcp-tapcat:")]
    return " | ".join(lines[-1:] + summary)


def test_utcp_and_the_kernel_over_tap_through_the_impairing_relay() -> None:
    n = RELAY_SIZE
    with tap_behind_relay(**IMPAIRMENT) as tb:
        h = tb.h
        work = Path(tempfile.mkdtemp(prefix="mst-tap-"))
        try:
            work.chmod(0o755)
            data = work / "in"
            data.write_bytes(os.urandom(n))
            data.chmod(0o644)

            # kernel -> UTCP (UTCP listens)
            received = work / "received"
            with open(received, "wb") as out:
                p = tb.tapcat("listen", "5001", stdout=out, stderr=subprocess.PIPE)
                try:
                    time.sleep(0.3)  # the TAP device is attached (no readiness line)
                    r = h.python(KSEND, h.host_ip, "5001", str(data), timeout=LIMIT_S, check=False)
                    _, err = p.communicate(timeout=60)
                finally:
                    stop_process(p)
            assert r.returncode == 0, f"kernel sender: {r.stdout}{r.stderr}\n{err.decode()}"
            assert p.returncode == 0, err.decode()
            assert sha(received) == sha(data), err.decode()
            secs = float(r.stdout.split()[-1])
            print(f"tap relay, kernel -> UTCP: {n} bytes in {secs:.2f} s, "
                  f"{n * 8 / secs / 1e6:.1f} Mbit/s; {last_progress(err.decode())}")  # fmt: skip
            received.unlink()

            # UTCP -> kernel (UTCP connects)
            got = work / "got"
            sink = h.python_popen(KRECV, h.remote_ip, "5002", str(got), ready="ready")
            with open(data, "rb") as fin:
                p = tb.tapcat("connect", h.remote_ip, "5002", stdin=fin,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
                try:
                    _, err = p.communicate(timeout=LIMIT_S)
                finally:
                    stop_process(p)
            out_s, _ = sink.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
            nbytes, secs_s = out_s.split()[-2:]
            assert int(nbytes) == n and sha(got) == sha(data), out_s
            secs = float(secs_s)
            print(f"tap relay, UTCP -> kernel: {n} bytes in {secs:.2f} s, "
                  f"{n * 8 / secs / 1e6:.1f} Mbit/s; {last_progress(err.decode())}")  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)
        st = h.relay_stats()
        assert st.to_remote.dropped > 0 and st.to_host.dropped > 0  # the impairment was real
        assert st.to_remote.oversize == 0 and st.to_host.oversize == 0
