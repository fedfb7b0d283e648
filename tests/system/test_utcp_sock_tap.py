"""UTCP sockets (utcp_c/include/utcp_sock.h) against Linux's, side by side: the same client
actions (kernel sockets) against a kernel server socket and a UTCP server socket
(utcp-sockprobe on a TAP device), and the same poll masks, errors and return values on both
servers at every step.

Runs in a private network namespace it makes and removes; needs root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system]

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
KIP, UIP, UMAC, DEV = "198.18.253.1", "198.18.253.2", "02:00:00:77:00:03", "usock0"

# Runs inside the namespace: drives both servers, prints one line per step.
DRIVER = r"""
import select, socket, struct, subprocess, sys, time
probe, kip, uip = sys.argv[1].split(), sys.argv[2], sys.argv[3]
P = subprocess.Popen(probe, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
def u(cmd):
    P.stdin.write(cmd + "\n"); P.stdin.flush()
    line = P.stdout.readline()
    if not line:
        sys.exit("utcp-sockprobe died at " + cmd)
    return int(line)
EV = select.POLLIN | select.POLLOUT | select.POLLRDHUP
def kmask(s):
    p = select.poll(); p.register(s, EV); r = p.poll(0)
    return r[0][1] if r else 0
def kcall(f):
    try:
        r = f()
        return len(r) if isinstance(r, bytes) else (0 if r is None else r)
    except OSError as e:
        return -e.errno
def step(name, k, uval):
    print(f"{name}|{k}|{uval}", flush=True)
def settle():
    time.sleep(0.15)
KP, UP = 6001, 6002
assert u(f"listen {UP} 4") == 0
kl = socket.socket(); kl.bind((kip, KP)); kl.listen(4); kl.setblocking(False)
def pair():
    ck = socket.create_connection((kip, KP)); cu = socket.create_connection((uip, UP))
    settle()
    ks, _ = kl.accept(); ks.setblocking(False)
    assert u("accept") == 0
    return ck, cu, ks
def both(f):
    f(ck); f(cu)
def mask(name):
    settle(); step(name, kmask(ks), u("mask c"))

step("listener idle", kmask(kl), u("mask l"))
ck = socket.create_connection((kip, KP)); cu = socket.create_connection((uip, UP))
settle(); step("listener with a connection", kmask(kl), u("mask l"))
ks, _ = kl.accept(); ks.setblocking(False); assert u("accept") == 0
step("listener after accept", kmask(kl), u("mask l"))
mask("established")
both(lambda c: c.send(b"hello"))
mask("data queued")
step("recv data", kcall(lambda: ks.recv(4096)), u("recv"))
step("recv nothing", kcall(lambda: ks.recv(4096)), u("recv"))
mask("data read")
both(lambda c: c.shutdown(socket.SHUT_WR))
mask("peer FIN")
step("recv at FIN", kcall(lambda: ks.recv(4096)), u("recv"))
step("send after peer FIN", kcall(lambda: ks.send(b"x")), u("send x"))
step("shutdown wr", kcall(lambda: ks.shutdown(socket.SHUT_WR)), u("shutdown wr"))
mask("both shut")
step("send after shutdown", kcall(lambda: ks.send(b"x", socket.MSG_NOSIGNAL)), u("send x"))
ks.close(); u("close")

ck, cu, ks = pair()
step("shutdown rd", kcall(lambda: ks.shutdown(socket.SHUT_RD)), u("shutdown rd"))
mask("after SHUT_RD")
step("recv after SHUT_RD", kcall(lambda: ks.recv(4096)), u("recv"))
ks.close(); u("close")

ck, cu, ks = pair()
both(lambda c: c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)))
both(lambda c: c.close())
mask("reset by peer")
step("recv after reset", kcall(lambda: ks.recv(4096)), u("recv"))
step("recv again", kcall(lambda: ks.recv(4096)), u("recv"))
mask("reset, error collected")
step("send after reset", kcall(lambda: ks.send(b"x", socket.MSG_NOSIGNAL)), u("send x"))
ks.close(); u("close")

ck, cu, ks = pair()
both(lambda c: c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)))
both(lambda c: c.close())
settle()
step("SO_ERROR after reset", -ks.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), u("error"))
step("send after SO_ERROR", kcall(lambda: ks.send(b"x", socket.MSG_NOSIGNAL)), u("send x"))
ks.close(); u("close")

# UTCP connecting: refused, then accepted by the kernel
kc = socket.socket(); kc.setblocking(False)
step("connect to a closed port", -kc.connect_ex((kip, 6003)), u(f"connect {kip} 6003"))
ks = kc
mask("refused")
step("SO_ERROR after refused", -kc.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), u("error"))
mask("refused, error collected")
u("close")
kc = socket.socket(); kc.setblocking(False)
step("connect", -kc.connect_ex((kip, KP)), u(f"connect {kip} {KP}"))
ks = kc
mask("connected")
P.stdin.write("quit\n"); P.stdin.flush(); P.wait(10)
"""


def test_utcp_sockets_match_linux_over_tap() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (a network namespace and a TAP device)")
    probe = BUILD / "bin" / "utcp-sockprobe"
    if not probe.exists():
        pytest.fail(f"{probe} is missing: run make build")
    ns = f"utcp-sock-{os.getpid()}"

    def in_ns(
        *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            check=check,
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        in_ns("ip", "link", "set", "lo", "up")
        in_ns("ip", "tuntap", "add", "dev", DEV, "mode", "tap")
        in_ns("sysctl", "-qw", f"net.ipv6.conf.{DEV}.disable_ipv6=1")
        in_ns("ip", "link", "set", DEV, "up")
        in_ns("ip", "addr", "add", f"{KIP}/24", "dev", DEV)
        in_ns("ip", "neigh", "replace", UIP, "lladdr", UMAC, "dev", DEV, "nud", "permanent")
        kmac = in_ns("cat", f"/sys/class/net/{DEV}/address").stdout.strip()
        cmd = f"{probe} --dev {DEV} --ip {UIP} --mac {UMAC} --gw-mac {kmac}"
        out = in_ns(sys.executable, "-c", DRIVER, cmd, KIP, UIP, check=False, timeout=120)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    steps = [line.split("|") for line in out.stdout.splitlines() if "|" in line]
    assert len(steps) >= 20, out.stdout + out.stderr
    differ = [f"{name}: linux {k} utcp {u}" for name, k, u in steps if k != u]
    assert not differ, "\n".join(differ) + "\n--- all steps ---\n" + out.stdout
