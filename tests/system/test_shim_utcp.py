"""The shim carries listed sockets on UTCP (issue 6): small Python programs under libmstack.so on
this host, peers in the remote namespace, the normal and the ASan/UBSan build of the shim.

Each test checks the bytes (sha256) and the proof that UTCP carried them: while a connection is
open, the kernel's table (`ss`) holds no connection with the peer, and `mstackctl conns` (the
shim's statistics region, read through mstackd) shows it. The bigger acceptance suites —
compat_tests/ (socket semantics, differential) and tests/system/test_apps_*.py (nginx, curl,
http.server, locust) — build on the same shim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mstack.policy import compact, loads
from mstack_testkit import Mstackd
from testbed.netns import RemoteHost, stop_process, wait_line

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
VARIANTS = {"normal": BUILD, "asan": BUILD / "asan"}
PORT = 8471
REMOTE_PORT = 8472
MB = 1 << 20


def libasan() -> str:
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    return out.stdout.strip()


def shim_env(
    variant: str, daemon: Mstackd, policy_toml: str, *, unbuffered: bool = True, **extra: str
) -> dict[str, str]:
    """The shim's environment as mstack-run makes it, with the build's own library (the ASan
    one needs libasan first in LD_PRELOAD); `unbuffered`: PYTHONUNBUFFERED=1 too (the
    Python snippets' lines arrive as they print)."""
    build = VARIANTS[variant]
    lib = build / "lib" / "libmstack.so"
    assert lib.exists(), f"{lib} is missing: run make build"
    env = dict(os.environ)
    env.update(
        {
            "LD_PRELOAD": str(lib),
            "MSTACK_POLICY": compact(loads(policy_toml)["t"]),
            "MSTACK_RUN_DIR": str(daemon.run_dir),
            "MSTACK_VERBOSE": "1",
            **({"PYTHONUNBUFFERED": "1"} if unbuffered else {}),
            **extra,
        }
    )
    if variant == "asan":
        env["LD_PRELOAD"] = f"{libasan()} {lib}"
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    return env


def py_under_shim(script: str, *args: object, env: dict[str, str]) -> subprocess.Popen[str]:
    """A Python snippet on this host with the shim's environment; stdin, stdout and stderr
    are text pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kernel_conns(peer_ip: str) -> list[str]:
    cp = subprocess.run(
        ["ss", "-tnH", "state", "established", "dst", peer_ip],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return [line for line in cp.stdout.splitlines() if line.strip()]


def utcp_conns(daemon: Mstackd) -> list[dict[str, Any]]:
    cp = daemon.ctl("conns", "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    return list(doc if isinstance(doc, list) else doc.get("conns", []))


def wait_for(pred: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def utcp_holds_it_then_go(
    daemon: Mstackd, rh: RemoteHost, cli: subprocess.Popen[str], timeout: float
) -> str:
    """A client holding an established, idle connection: UTCP holds it (mstackctl conns), the
    kernel does not; then the client is told to go and runs to a clean end: its stdout."""
    conns = wait_for(lambda: [c for c in utcp_conns(daemon) if "remote" in c])
    assert conns, f"mstackctl conns shows no UTCP connection: {utcp_conns(daemon)}"
    assert kernel_conns(rh.remote_ip) == []
    assert cli.stdin is not None
    cli.stdin.write("go\n")
    cli.stdin.flush()
    out, err = cli.communicate(timeout=timeout)
    assert cli.returncode == 0, out + err
    return out


def finished(p: subprocess.Popen[str], timeout: float = 20) -> tuple[str, str]:
    """A program under the shim ran to its end, cleanly (exit 0, no sanitizer report): its
    stdout and stderr."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(p)
        out, err = p.communicate()
        pytest.fail(f"timed out\nstdout:\n{out}\nstderr:\n{err}")
    for mark in ("ERROR: AddressSanitizer", "runtime error:"):
        assert mark not in err, err
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out, err


def finish(p: subprocess.Popen[str], timeout: float = 20) -> str:
    out, err = finished(p, timeout)
    return out + err


# A server under the shim: MODE blocking (accept, then recv all / send back) or selectors
# (non-blocking sockets, epoll via selectors, N clients at once). Each client sends N bytes,
# then shuts down its side; the server answers with sha256 + the bytes echoed back.
SERVER = r"""
import hashlib, select, selectors, socket, sys
ip, port, mode, nclients = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((ip, port))
ls.listen(64)
# Waiting on the listener (here: a select that returns at once) puts this process's stack in
# its listen group; until a process waits, new flows go to the kernel's shadow listener.
select.select([ls], [], [], 0)
print("ready", flush=True)
if mode == "blocking":
    for _ in range(nclients):
        c, _ = ls.accept()
        h = hashlib.sha256()
        data = bytearray()
        while True:
            d = c.recv(65536)
            if not d:
                break
            h.update(d)
            data += d
        c.sendall(h.hexdigest().encode() + b"\n" + bytes(data))
        c.close()
else:
    sel = selectors.DefaultSelector()
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    state = {}
    done = 0
    while done < nclients:
        for key, ev in sel.select(timeout=30):
            if key.data is None:
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    state[c] = [hashlib.sha256(), bytearray(), b""]
                    sel.register(c, selectors.EVENT_READ, "conn")
                continue
            c = key.fileobj
            st = state[c]
            if ev & selectors.EVENT_READ:
                try:
                    d = c.recv(65536)
                except BlockingIOError:
                    continue
                if d:
                    st[0].update(d)
                    st[1] += d
                    continue
                st[2] = st[0].hexdigest().encode() + b"\n" + bytes(st[1])
                sel.modify(c, selectors.EVENT_WRITE, "conn")
            if ev & selectors.EVENT_WRITE:
                try:
                    n = c.send(st[2])
                except BlockingIOError:
                    continue
                st[2] = st[2][n:]
                if not st[2]:
                    sel.unregister(c)
                    c.close()
                    done += 1
print("served", nclients, flush=True)
"""

# A client in the remote namespace: K connections at once, each sends N random bytes, checks
# the answer. Holds the first connection open (after sending) until told, so the test can look
# at the kernel's table while it is established.
CLIENT = r"""
import hashlib, os, socket, sys, threading
ip, port, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
errors = []
go = threading.Event()
def one(i):
    try:
        payload = os.urandom(n)
        s = socket.create_connection((ip, port), timeout=30)
        if i == 0:
            s.sendall(payload[:1000])
            print("holding", flush=True)
            sys.stdin.readline()
            go.set()
            s.sendall(payload[1000:])
        else:
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        buf = bytearray()
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
        head, _, body = bytes(buf).partition(b"\n")
        want = hashlib.sha256(payload).hexdigest().encode()
        if head != want or body != payload:
            errors.append(f"conn {i}: sha {head!r} len {len(body)}")
    except Exception as e:
        errors.append(f"conn {i}: {e!r}")
ts = [threading.Thread(target=one, args=(i,)) for i in range(k)]
ts[0].start()
go.wait(60)
[t.start() for t in ts[1:]]
[t.join(60) for t in ts]
print("errors", errors, flush=True)
sys.exit(1 if errors else 0)
"""


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("mode,clients,size", [("blocking", 3, MB), ("selectors", 8, 256 << 10)])
def test_a_listed_listener_serves_remote_clients_on_utcp(
    remote_host: RemoteHost, mstackd: Mstackd, variant: str, mode: str, clients: int, size: int
) -> None:
    rh = remote_host
    policy = f'[apps.t]\nlisten = ["{rh.host_ip}:{PORT}"]\n'
    srv = py_under_shim(
        SERVER, rh.host_ip, str(PORT), mode, str(clients), env=shim_env(variant, mstackd, policy)
    )
    try:
        wait_line(srv, "ready", 30)
        cli = rh.python_popen(
            CLIENT,
            rh.host_ip,
            str(PORT),
            str(clients),
            str(size),
            ready="holding",
            ready_timeout=30,
            stdin=subprocess.PIPE,
        )
        # One connection is established and idle now: UTCP holds it, the kernel does not.
        out = utcp_holds_it_then_go(mstackd, rh, cli, timeout=90)
        assert "errors []" in out
        log = finish(srv)
        assert f"served {clients}" in log
        assert "UTCP" in log and "stays on the kernel" not in log, log
    except BaseException:
        srv.kill()
        out, err = srv.communicate(timeout=10)
        print(f"server stdout:\n{out}\nserver stderr:\n{err}")
        raise
    finally:
        stop_process(srv)


# A client under the shim: connects to a server in the remote namespace (a listed connect
# entry), sends N bytes, reads the echo back.
LOCAL_CLIENT = r"""
import hashlib, os, socket, sys, threading
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = os.urandom(n)
s = socket.create_connection((ip, port), timeout=30)
print("connected", s.getsockname()[1], flush=True)
def send():
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
buf = bytearray()
while True:
    d = s.recv(65536)
    if not d:
        break
    buf += d
t.join(30)
s.close()
assert bytes(buf) == payload, (len(buf), n)
print("ok", hashlib.sha256(payload).hexdigest(), flush=True)
"""

ECHO = r"""
import socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(8)
print("ready", flush=True)
c, peer = ls.accept()
print("peer", peer[0], peer[1], flush=True)
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
c.close()
"""


def test_a_listed_destination_is_reached_over_utcp(
    remote_host: RemoteHost, mstackd: Mstackd, variant: str
) -> None:
    rh = remote_host
    srv = rh.python_popen(ECHO, rh.remote_ip, str(REMOTE_PORT), ready="ready")
    policy = f'[apps.t]\nconnect = ["{rh.remote_ip}/32:{REMOTE_PORT}"]\n'
    cli = py_under_shim(
        LOCAL_CLIENT,
        rh.remote_ip,
        str(REMOTE_PORT),
        str(2 * MB),
        env=shim_env(variant, mstackd, policy),
    )
    log = finish(cli, timeout=60)
    assert "ok " in log, log
    assert "connection to" in log and "UTCP" in log, log
    out, _ = srv.communicate(timeout=20)
    # The server saw a peer port from the block mstackd leased to the client's stack.
    peer_port = int(out.split("peer", 1)[1].split()[1])
    assert peer_port == int(log.split("connected", 1)[1].split()[0])
    lo, hi = map(int, log.split("leased ports ", 1)[1].split()[0].split("-"))
    assert lo <= peer_port <= hi, (peer_port, lo, hi)


def test_without_mstackd_a_listed_listener_says_why_and_serves_on_the_kernel(
    remote_host: RemoteHost, tmp_path: Path
) -> None:
    rh = remote_host
    policy = f'[apps.t]\nlisten = ["{rh.host_ip}:{PORT}"]\n'

    class NoDaemon:
        run_dir = tmp_path

    env = shim_env("normal", NoDaemon, policy)  # type: ignore[arg-type]
    srv = py_under_shim(SERVER, rh.host_ip, str(PORT), "blocking", "1", env=env)
    try:
        wait_line(srv, "ready", 30)
        out = rh.python(CLIENT, rh.host_ip, str(PORT), "1", "1000", input="go\n", timeout=60)
        assert "errors []" in out.stdout
        log = finish(srv)
        assert "stays on the kernel: mstackd is not reachable" in log, log
    finally:
        stop_process(srv)


DUAL = r"""
import select, socket, sys
port = int(sys.argv[1])
ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("::", port))
ls.listen(8)
select.select([ls], [], [], 0)
print("ready", flush=True)
c, peer = ls.accept()
print("peer", peer[0], "local", c.getsockname()[0], flush=True)
d = c.recv(100)
sys.stdin.readline()
c.sendall(d[::-1])
c.close()
"""


def test_a_dual_stack_listener_carries_its_ipv4_clients_on_utcp(
    remote_host: RemoteHost, mstackd: Mstackd
) -> None:
    """An IPv6 [::] listener (IPV6_V6ONLY off) whose port is listed: IPv4 clients arrive on UTCP
    and are reported as ::ffff:a.b.c.d, as the kernel reports them."""
    rh = remote_host
    policy = f'[apps.t]\nlisten = ["*:{PORT}"]\n'
    srv = py_under_shim(DUAL, str(PORT), env=shim_env("normal", mstackd, policy))
    try:
        wait_line(srv, "ready", 30)
        cli = rh.python_popen(
            "import socket,sys\n"
            "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)\n"
            "s.sendall(b'hello'); print(s.recv(100).decode(), flush=True)\n",
            rh.host_ip,
            str(PORT),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert wait_for(lambda: [c for c in utcp_conns(mstackd) if "remote" in c], 10)
        assert kernel_conns(rh.remote_ip) == []
        assert srv.stdin is not None
        srv.stdin.write("go\n")
        srv.stdin.flush()
        out, err = cli.communicate(timeout=30)
        assert out.strip() == "olleh", out + err
        log = finish(srv)
        assert f"peer ::ffff:{rh.remote_ip} local ::ffff:{rh.host_ip}" in log, log
        assert "listener 0.0.0.0:" in log and "UTCP" in log, log
    finally:
        stop_process(srv)


RESTART_SERVER = r"""
import select, socket, sys
ip, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def listener(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(8)
    select.select([ls], [], [], 0)
    return ls
def serve(ls):
    c, _ = ls.accept()
    d = c.recv(100)
    c.sendall(d.upper())
    c.close()
la = listener(a)
print("ready", flush=True)
serve(la)
print("served 1", flush=True)
sys.stdin.readline()          # mstackd was killed: the data plane goes on
serve(la)
print("served 2", flush=True)
sys.stdin.readline()          # mstackd is back: a new listener needs it
lb = listener(b)
print("ready b", flush=True)
serve(lb)
print("served 3", flush=True)
"""

ASK = (
    "import socket,sys\n"
    "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)\n"
    "s.sendall(b'ping'); print(s.recv(100).decode())\n"
)


def test_the_shim_goes_on_through_a_restart_of_mstackd(
    remote_host: RemoteHost, mstackd: Mstackd
) -> None:
    """SIGKILL of mstackd: established UTCP service goes on (the daemon is not on the data path);
    after its restart the shim's next request reconnects, and a new listener is registered."""
    rh = remote_host
    b = PORT + 10
    policy = f'[apps.t]\nlisten = ["{rh.host_ip}:{PORT}", "{rh.host_ip}:{b}"]\n'
    srv = py_under_shim(
        RESTART_SERVER, rh.host_ip, str(PORT), str(b), env=shim_env("normal", mstackd, policy)
    )
    assert srv.stdin is not None
    try:
        wait_line(srv, "ready", 30)
        assert rh.python(ASK, rh.host_ip, str(PORT)).stdout.strip() == "PING"
        wait_line(srv, "served 1", 10)
        mstackd.kill()
        srv.stdin.write("next\n")
        srv.stdin.flush()
        assert rh.python(ASK, rh.host_ip, str(PORT)).stdout.strip() == "PING"
        wait_line(srv, "served 2", 10)
        assert kernel_conns(rh.remote_ip) == []
        mstackd.restart()
        srv.stdin.write("next\n")
        srv.stdin.flush()
        wait_line(srv, "ready b", 30)
        binds = json.loads(mstackd.ctl("bindings", "--json").stdout)
        assert rh.python(ASK, rh.host_ip, str(b)).stdout.strip() == "PING"
        wait_line(srv, "served 3", 10)
        log = finish(srv)
        assert any(x.get("port") == b and x.get("members") for x in binds), (binds, log)
        assert f"listener {rh.host_ip}:{b}: UTCP" in log, log
        assert "mstackd connection re-established" in log, log
    finally:
        stop_process(srv)


BUSY_SERVER = r"""
import select, socket, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((ip, port))
ls.listen(8)
select.select([ls], [], [], 0)
print("ready", flush=True)
c, _ = ls.accept()
print("accepted", flush=True)
sys.stdin.readline()           # busy elsewhere: no socket call until told
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
print("read", n, flush=True)
"""

ACKED = r"""
import socket, struct, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((ip, port), timeout=20)
s.sendall(b"x" * n)
# struct tcp_info: tcpi_bytes_acked is the u64 at offset 120 (Linux 4.1+)
deadline = time.monotonic() + 10
acked = 0
while time.monotonic() < deadline:
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    acked = struct.unpack_from("=Q", info, 120)[0]
    if acked >= n:
        break
    time.sleep(0.05)
print("acked", acked, flush=True)
s.close()
"""


def test_connections_progress_while_the_application_is_busy(
    remote_host: RemoteHost, mstackd: Mstackd
) -> None:
    """The application accepts and then makes no socket call for a while: its process's stack
    still acknowledges what the peer sends (the helper thread), so the peer's data is all
    acknowledged before the application reads any of it."""
    rh = remote_host
    n = 200 * 1024  # less than the receive buffer: no window needs to open
    policy = f'[apps.t]\nlisten = ["{rh.host_ip}:{PORT}"]\n'
    srv = py_under_shim(BUSY_SERVER, rh.host_ip, str(PORT), env=shim_env("normal", mstackd, policy))
    assert srv.stdin is not None
    try:
        wait_line(srv, "ready", 30)
        out = rh.python(ACKED, rh.host_ip, str(PORT), str(n), timeout=60).stdout
        assert f"acked {n + 1}" in out or f"acked {n}" in out, out
        srv.stdin.write("go\n")
        srv.stdin.flush()
        log = finish(srv)
        assert f"read {n}" in log, log
    finally:
        stop_process(srv)
