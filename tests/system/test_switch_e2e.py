"""The switch end to end with a real peer: a frame-level responder (utcp_c/tools, on a port
from mstackd through libmsctl and libmsport) answers the remote host's kernel TCP — its SYN-ACKs
and echoes cross the egress check to the remote host — while the kernel keeps serving its own
ports and ICMP; the responder works as `nobody`; a listen group shares new flows, and when a
member leaves, the flows the others answered stay with them."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mstack_testkit import Mstackd

pytestmark = pytest.mark.system

BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))


@contextmanager
def responder(
    d: Mstackd, listen: str, *extra: str, user: str | None = None
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Start mstack-responder; yields (process, count file); stops it by pid (SIGTERM)."""
    tmp = Path(tempfile.mkdtemp(prefix="mst-resp-"))
    tmp.chmod(0o777)
    exe = BUILD / "bin" / "mstack-responder"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run make build")
    if user is not None:  # the build tree may not be readable by that user: a copy of its own
        shutil.copy(exe, tmp / exe.name)
        exe = tmp / exe.name
        os.chmod(exe, 0o755)
    counts = tmp / "counts.json"
    argv = [str(exe), "--run-dir", str(d.run_dir), "--listen", listen,
            "--count-file", str(counts), "--max-seconds", "300", *extra]  # fmt: skip
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_line_prefix(p, "ready", 20)
        yield p, counts
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
        shutil.rmtree(tmp, ignore_errors=True)


def wait_line_prefix(p: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line
    err = p.stderr.read() if p.stderr and p.poll() is not None else ""
    raise AssertionError(f"responder not ready: {err}")


def stop_and_count(p: subprocess.Popen[str], counts: Path) -> dict[str, int]:
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=15)
    assert p.returncode == 0, p.stderr.read() if p.stderr else ""
    return dict(json.loads(counts.read_text()))


ECHO_CLIENT = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(n):
    with socket.create_connection((host, port), timeout=5) as s:
        msg = f"hello {i}".encode()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        ok += got == msg
print(ok)
"""


def test_port_answers_the_remote_host_and_the_kernel_keeps_the_rest(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    kernel_http = subprocess.Popen(
        [os.environ.get("PYTHON", "python3"), "-m", "http.server", "8081", "--bind", h.host_ip],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    try:
        with responder(mstackd, "0.0.0.0:8080") as (p, counts):
            out = h.python(ECHO_CLIENT, h.host_ip, "8080", "5", timeout=60)
            assert out.stdout.strip() == "5"  # handshakes and echoes through the port
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                curl = h.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://{h.host_ip}:8081/"], check=False, timeout=30)  # fmt: skip
                if curl.stdout == "200":
                    break
                time.sleep(0.2)
            assert curl.stdout == "200"  # the kernel's own server, untouched
            assert h.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", h.host_ip]).returncode == 0
            st = mstackd.admin("stats")
            # Frames to 8080 that are not this host's are not captured.
            h.python(NOT_OURS, h.remote_if, h.host_mac, h.remote_ip, h.host_ip, timeout=60)
            st2 = mstackd.admin("stats")
            assert st2["ingress"]["other_mac"] - st["ingress"]["other_mac"] >= 1
            assert st2["ingress"]["other_ip"] - st["ingress"]["other_ip"] >= 1
            c = stop_and_count(p, counts)
        assert c["syn"] == 5 and c["data"] >= 5
        assert st2["ingress"]["to_port_new"] >= 5 and st2["egress"]["sent"] >= 10
        assert st2["egress"]["not_bound"] == 0
    finally:
        kernel_http.terminate()
        kernel_http.wait(10)


NOT_OURS = r"""
import sys
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp
iface, mac, src, dst = sys.argv[1:5]
other_ip = dst.rsplit(".", 1)[0] + ".77"
sendp([Ether(dst="02:00:00:00:00:77") / IP(src=src, dst=dst) / TCP(dport=8080, flags="S"),
       Ether(dst=mac) / IP(src=src, dst=other_ip) / TCP(dport=8080, flags="S")],
      iface=iface, verbose=False)
"""


def test_a_port_works_for_nobody(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with responder(mstackd, f"{h.host_ip}:8085", user="nobody") as (p, counts):
        ps = subprocess.run(["ps", "-o", "user=", "-p", str(p.pid)], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
        assert ps == "nobody"
        out = h.python(ECHO_CLIENT, h.host_ip, "8085", "3", timeout=60)
        assert out.stdout.strip() == "3"
        c = stop_and_count(p, counts)
    assert c["syn"] == 3


HOLD_CLIENT = r"""
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = [socket.create_connection((host, port), timeout=5) for _ in range(n)]
print("open", flush=True)
sys.stdin.readline()  # the test lets a member leave meanwhile
ok = 0
for i, s in enumerate(conns):
    try:
        msg = f"after {i}".encode()
        s.sendall(msg)
        s.settimeout(2)
        ok += s.recv(100) == msg
    except OSError:
        pass
print(ok, flush=True)
"""


def test_listen_group_shares_flows_and_a_leaving_member_keeps_the_others_flows(
    mstackd: Mstackd,
) -> None:
    h = mstackd.host
    assert h is not None
    with (
        responder(mstackd, f"{h.host_ip}:8090", "--reuseport") as (a, ca),
        responder(mstackd, f"{h.host_ip}:8090", "--reuseport") as (b, cb),
    ):
        (bd,) = [x for x in mstackd.admin("bindings") if x["port"] == 8090]
        assert len(bd["members"]) == 2 and bd["sockets"] == 2
        client = h.python_popen(HOLD_CLIENT, h.host_ip, "8090", "24", ready="open",
                                stdin=subprocess.PIPE)  # fmt: skip
        counts_a = stop_and_count(a, ca)  # member A leaves (its port goes with it)
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        still = int(client.stdout.readline())
        client.wait(30)
        counts_b = stop_and_count(b, cb)
    # Both members got new flows; B's flows all kept working after A left, A's did not.
    assert counts_a["syn"] > 0 and counts_b["syn"] > 0
    assert counts_a["syn"] + counts_b["syn"] == 24
    assert still == counts_b["syn"]


def test_a_port_keeps_serving_both_ways_after_the_daemon_is_killed(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with responder(mstackd, f"{h.host_ip}:8095") as (p, counts):
        assert h.python(ECHO_CLIENT, h.host_ip, "8095", "2", timeout=60).stdout.strip() == "2"
        mstackd.kill()
        # SYNs still reach the port, its SYN-ACKs and echoes still reach the remote host.
        assert h.python(ECHO_CLIENT, h.host_ip, "8095", "3", timeout=60).stdout.strip() == "3"
        c = stop_and_count(p, counts)  # it notices the daemon is gone and exits cleanly
    assert c["syn"] == 5
