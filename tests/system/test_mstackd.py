"""mstackd on the test bed, through its control protocol: the namespace it shares with the
host stack, listen groups, lifetimes of ports and bindings, the admin views, and bad input —
each answered without disturbing anyone else. Frame-level steering is tested in
test_dataplane.py; here the daemon's decisions are."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mstack_testkit import AppClient, Mstackd, ReplyError
from mstackd import libbpf, proto
from mstackd.abi import consts

pytestmark = pytest.mark.system

LISTEN, CONNECT, UDP = consts.MSTACK_REG_LISTEN, consts.MSTACK_REG_CONNECT, consts.MSTACK_REG_UDP


def listener(ip: str, port: int, reuseport: bool = False, reuseaddr: bool = True) -> socket.socket:
    s = socket.socket()
    if reuseaddr:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((ip, port))
    s.listen(16)
    return s


def bindings(d: Mstackd) -> dict[int, dict]:  # type: ignore[type-arg]
    return {b["port"]: b for b in d.admin("bindings")}


def test_register_listen_and_join(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with mstackd.client() as c, listener(h.host_ip, 8080) as ls:
        c.hello()
        port_id, fds, info = c.port_open()
        try:
            assert len(fds) == 2  # the UMEM memfd, then the XSK
            assert os.readlink(f"/proc/self/fd/{fds[0]}").startswith("/memfd:")
            assert info.umem_size == 256 * 2048 and info.mtu == 1500
            assert socket.inet_ntoa(info.addrs[0].to_bytes(4, "little")) == h.host_ip
            bid = c.register(ls, LISTEN)
            c.join(bid, port_id)
            b = bindings(mstackd)[8080]
            assert (b["addr"], b["kind"], b["members"], b["claimants"]) == (
                h.host_ip, "listen", [port_id], [os.getpid()]
            )  # fmt: skip
            # While the binding lives, the kernel refuses the 3-tuple to everyone else.
            with pytest.raises(OSError) as ei:
                listener(h.host_ip, 8080, reuseaddr=False)
            assert ei.value.errno == errno.EADDRINUSE
        finally:
            for fd in fds:
                os.close(fd)


def test_a_3tuple_the_kernel_holds_cannot_be_registered(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with listener(h.host_ip, 8081, reuseaddr=False), pytest.raises(OSError) as ei:
        listener(h.host_ip, 8081)  # the shadow bind: the kernel decides, EADDRINUSE
    assert ei.value.errno == errno.EADDRINUSE
    # Wildcard against specific follows the kernel's rules too.
    with listener("0.0.0.0", 8082), pytest.raises(OSError) as ei:
        listener(h.host_ip, 8082)
    assert ei.value.errno == errno.EADDRINUSE


def test_reuseport_sockets_of_one_owner_form_one_listen_group(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with (
        mstackd.client() as c,
        listener(h.host_ip, 8090, reuseport=True) as a,
        listener(h.host_ip, 8090, reuseport=True) as b,
    ):
        c.hello()
        p1, f1, _ = c.port_open()
        p2, f2, _ = c.port_open()
        try:
            id_a = c.register(a, LISTEN)
            id_b = c.register(b, LISTEN)
            assert id_a == id_b
            c.join(id_a, p1)
            c.join(id_b, p2)
            bd = bindings(mstackd)[8090]
            assert bd["sockets"] == 2 and bd["members"] == [p1, p2]
        finally:
            for fd in f1 + f2:
                os.close(fd)


def test_wrong_sockets_are_refused(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with mstackd.client() as c:
        c.hello()
        port_id, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((h.host_ip, 8100))
        with pytest.raises(ReplyError) as ei:
            c.register(u, LISTEN)
        assert ei.value.errno == errno.EPROTOTYPE
        u.close()
        s = socket.socket()
        s.bind((h.host_ip, 8101))  # bound, not listening: reserves nothing against listeners
        with pytest.raises(ReplyError) as ei:
            c.register(s, LISTEN)
        assert ei.value.errno == errno.EINVAL and "listening" in ei.value.detail
        s.close()
        with listener("127.0.0.1", 8102) as lo, pytest.raises(ReplyError) as ei:
            c.register(lo, LISTEN)  # not an address of an attached NIC
        assert ei.value.errno == errno.EADDRNOTAVAIL
        r, w = os.pipe()
        with pytest.raises(ReplyError) as ei:
            c.register(r, LISTEN)
        assert ei.value.errno == errno.ENOTSOCK
        os.close(r)
        os.close(w)
        with listener(h.host_ip, 8103) as ls, pytest.raises(ReplyError) as ei:
            c.register(ls, CONNECT, port_id)  # a listening shadow for a connect binding
        assert ei.value.errno == errno.EINVAL
        other = socket.socket()
        other.bind((h.host_ip, 0))
        with pytest.raises(ReplyError) as ei:
            c.register(other, CONNECT, port_id + 100)  # somebody else's port
        assert ei.value.errno == errno.EPERM
        other.close()
    assert bindings(mstackd) == {}


# Run by an unprivileged user's interpreter (the venv's lives under /root), stdlib only: it
# builds HELLO and REGISTER by hand from the constants the test passes in.
FOREIGN_NETNS = r"""
import os, socket, struct, sys, array
path, magic, version, t_hello, t_register = sys.argv[1], *map(int, sys.argv[2:6])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))  # allowed: root of its own user namespace, in its own netns
s.listen()
c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
c.settimeout(10)
c.connect(path)
def req(mtype, seq, body, fds=()):
    hdr = struct.pack("=IHHII", magic, version, mtype, 16 + len(body), seq)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    c.sendmsg([hdr + body], anc)
    return struct.unpack_from("=i", c.recv(512), 16)[0]
assert req(t_hello, 1, struct.pack("=II", os.getpid(), 0)) == 0
status = req(t_register, 2, struct.pack("=II", 1, 0), [s.fileno()])
print("registered" if status == 0 else f"refused {-status}")
"""


def test_socket_from_another_network_namespace_is_refused(mstackd: Mstackd) -> None:
    out = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "unshare", "-rn", "/usr/bin/python3", "-c", FOREIGN_NETNS,
         str(mstackd.run_dir / "app.sock"), str(consts.MSTACK_PROTO_MAGIC),
         str(consts.MSTACK_PROTO_VERSION), str(consts.MSTACK_MSG_HELLO),
         str(consts.MSTACK_MSG_REGISTER)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == f"refused {errno.EPERM}", out.stderr
    assert bindings(mstackd) == {}


def test_bad_messages_get_errors_and_the_daemon_keeps_serving(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    good = proto.encode_request(consts.MSTACK_MSG_HELLO, 1, {"pid": os.getpid()})
    with mstackd.client() as c:
        c.hello()
        cases = [
            (good[:-2], errno.EBADMSG),  # truncated body (header intact)
            (good + b"\0" * 600, errno.EMSGSIZE),  # oversized
            (good[:4] + b"\x09\x00" + good[6:], errno.EPROTONOSUPPORT),  # wrong version
            (good[:6] + b"\x63\x00" + good[8:], errno.EOPNOTSUPP),  # unknown type
        ]
        for data, err in cases:
            c.send_raw(data)
            _, status, msg = proto.decode_reply(c.recv_raw()[0])
            assert status == -err, (data, proto.ffi.string(msg.detail))
        # REGISTER without its fd, CLAIM with a pipe, HELLO with an fd it must not carry.
        reg = proto.encode_request(consts.MSTACK_MSG_REGISTER, 9, {"kind": 1})
        c.send_raw(reg)
        assert proto.decode_reply(c.recv_raw()[0])[1] == -errno.EBADF
        r, w = os.pipe()
        c.send_raw(proto.encode_request(consts.MSTACK_MSG_CLAIM, 10, {"binding_id": 1}), [r])
        assert proto.decode_reply(c.recv_raw()[0])[1] == -errno.ENOENT
        c.send_raw(good, [w])
        assert proto.decode_reply(c.recv_raw()[0])[1] == -errno.EBADF
        os.close(r)
        os.close(w)
        # Garbage: the connection is closed (the header cannot be trusted to answer).
        c.send_raw(b"\xde\xad\xbe\xef" * 8)
        assert c.recv_raw()[0] == b""
    # A request before HELLO, and a HELLO that lies about its pid.
    with mstackd.client() as c:
        with pytest.raises(ReplyError) as ei:
            c.port_open()
        assert ei.value.errno == errno.EPROTO
        with pytest.raises(ReplyError) as ei:
            c.hello(pid=1)
        assert ei.value.errno == errno.EPERM
    # Everyone else is still served.
    with mstackd.client() as c, listener(h.host_ip, 8110) as ls:
        c.hello()
        assert c.register(ls, LISTEN) > 0
    assert mstackd.proc.poll() is None


DAEMONIZE = r"""
import os, socket, sys, time
sys.path.insert(0, sys.argv[3])
from mstack_testkit import AppClient
ip, path = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, 8120))
s.listen()
with AppClient(path) as c:
    c.hello()
    bid = c.register(s, 1)
r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    null = os.open(os.devnull, os.O_RDWR)  # let go of the test's pipes, as a daemon does
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    with AppClient(path) as c:  # a forked child connects anew and claims what it holds
        c.hello()
        c.claim(bid, s)
    os.write(w, b"k")
    os.close(w)
    time.sleep(120)  # the "daemon" (nginx's master after `daemon on`) lives on
    os._exit(0)
os.close(w)
os.read(r, 1)
print(bid, flush=True)
os._exit(0)  # the parent exits, as a daemonizing server's does
"""


def test_daemonize_pattern_keeps_the_binding_and_sigkill_cleans_up(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    tests_dir = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", DAEMONIZE, h.host_ip, str(mstackd.run_dir / "app.sock"),
         str(tests_dir)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    b = bindings(mstackd)[8120]
    # The parent is gone; the child still holds the socket and its claim keeps the binding.
    (child,) = b["claimants"]
    try:
        time.sleep(3 * 2.0)  # a few sweeps: the binding must survive them
        assert 8120 in bindings(mstackd)
        with pytest.raises(OSError):
            listener(h.host_ip, 8120, reuseaddr=False)
    finally:
        os.kill(child, signal.SIGKILL)
    assert mstackd.wait_until(lambda: 8120 not in bindings(mstackd), timeout=15)
    # The daemon's copy of the shadow socket is closed: the kernel gives the port out again.
    listener(h.host_ip, 8120, reuseaddr=False).close()


def test_ports_go_with_their_process(mstackd: Mstackd) -> None:
    code = (
        "import os, sys, time; sys.path.insert(0, sys.argv[2]);"
        "from mstack_testkit import AppClient;"
        "c = AppClient(sys.argv[1]); c.hello(); p = c.port_open(); print(p[0], flush=True);"
        "time.sleep(120)"
    )
    tests_dir = Path(__file__).resolve().parents[1]
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(mstackd.run_dir / "app.sock"), str(tests_dir)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert p.stdout is not None
        port_id = int(p.stdout.readline())
        (port,) = [x for x in mstackd.admin("ports") if x["port_id"] == port_id]
        assert port["pid"] == p.pid
        assert subprocess.run(["ip", "link", "show", port["host_if"]]).returncode == 0
    finally:
        p.kill()
        p.wait(10)
    assert mstackd.wait_until(lambda: mstackd.admin("ports") == [])
    assert subprocess.run(["ip", "link", "show", port["host_if"]], capture_output=True).returncode
    p.stdout.close()


def test_detach_and_shutdown_leave_nothing(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with mstackd.client() as c:
        c.hello()
        _, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        assert libbpf.xdp_query_id(h.host_ifindex) != 0
        mstackd.admin("detach", iface=h.host_if)
        assert libbpf.xdp_query_id(h.host_ifindex) == 0
        assert mstackd.admin("status")["nics"] == []
        mstackd.admin("attach", iface=h.host_if, mode="native")
        assert libbpf.xdp_query_id(h.host_ifindex) != 0
    assert mstackd.stop() == 0
    assert libbpf.xdp_query_id(h.host_ifindex) == 0
    assert not mstackd.bpf_dir.exists()
    assert not Path("/run/netns", mstackd.ports_netns).exists()
    assert not (mstackd.run_dir / "app.sock").exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert mstackd.port_prefix not in links


def test_a_second_daemon_on_the_same_run_dir_refuses(mstackd: Mstackd, mstackd_factory) -> None:  # type: ignore[no-untyped-def]
    argv = [str(Path(sys.executable).parent / "mstackd"), "--run-dir", str(mstackd.run_dir),
            "--bpf-dir", str(mstackd.bpf_dir) + "x", "--ports-netns", mstackd.ports_netns + "x",
            "--port-prefix", "mstdup", "--config", "/nonexistent"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "another mstackd" in out.stderr
    assert mstackd.proc.poll() is None
    assert not Path("/run/netns", mstackd.ports_netns + "x").exists()


def test_app_client_helper_is_usable(mstackd: Mstackd) -> None:
    with AppClient(mstackd.run_dir / "app.sock") as c:
        assert c.hello().max_ports > 0


def test_mstackctl_shows_the_daemon(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with mstackd.client() as c, listener(h.host_ip, 8130) as ls:
        c.hello()
        port_id, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        bid = c.register(ls, LISTEN)
        c.join(bid, port_id)
        st = json.loads(mstackd.ctl("status", "--json").stdout)
        assert [n["iface"] for n in st["nics"]] == [h.host_if] and st["ports"] == 1
        (p,) = json.loads(mstackd.ctl("ports", "--json").stdout)
        assert (p["port_id"], p["pid"]) == (port_id, os.getpid())
        (b,) = json.loads(mstackd.ctl("bindings", "--json").stdout)
        assert (b["port"], b["members"], b["kind"]) == (8130, [port_id], "listen")
        s = json.loads(mstackd.ctl("stats", "--json").stdout)
        assert set(s) == {"ingress", "egress", "fast_path", "flows", "ports", "handoff"}
        assert s["handoff"]["handoffs"] == 0 and s["handoff"]["inboxes"] == 0
        text = mstackd.ctl("bindings").stdout
        assert f"{h.host_ip}:8130" in text and "listen" in text
        assert h.host_if in mstackd.ctl("status").stdout
        watch = mstackd.ctl("stats", "--watch", "--count", "2")
        assert watch.returncode == 0 and watch.stdout.count("ingress (NIC)") == 2
        bad = mstackd.ctl("detach", "mstnosuch0")
        assert bad.returncode == 1 and "not attached" in bad.stderr
        assert mstackd.ctl("detach", h.host_if).returncode == 0
        assert mstackd.ctl("attach", h.host_if, "--mode", "native").returncode == 0


def test_port_limits_per_process_and_per_user(remote_host, mstackd_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "m.toml"
    cfg.write_text("[daemon]\nmax_ports_per_process = 2\nmax_ports_per_user = 3\n")
    d = mstackd_factory(remote_host, "--config", str(cfg))
    fds: list[int] = []
    with d.client() as a, d.client() as b:
        a.hello()
        b.hello()
        try:
            for _ in range(2):
                fds += a.port_open()[1]
            with pytest.raises(ReplyError) as ei:
                a.port_open()
            assert ei.value.errno == errno.EMFILE
            fds += b.port_open()[1]
            with pytest.raises(ReplyError) as ei:
                b.port_open()  # the same uid already holds 3
            assert ei.value.errno == errno.EDQUOT
        finally:
            for fd in fds:
                os.close(fd)
