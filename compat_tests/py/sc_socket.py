"""Python scenarios on the plain `socket` module: what CPython's socket object makes of the calls
the shim interposes (create_connection, timeouts, makefile, sendfile, create_server, ...)."""

from __future__ import annotations

import errno
import select
import socket
import struct
import tempfile

from common import (
    Env,
    Peer,
    expect,
    hold,
    ob,
    pattern,
    psum,
    rec,
    recv_all,
    recv_exact,
    scenario,
)


@scenario("client", "socket.create_connection, sendall, recv")
def py_create_connection(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} e")
    s = rec("create_connection", socket.create_connection, (env.remote, env.port), 10)
    assert isinstance(s, socket.socket)
    ob("getpeername", same=s.getpeername() == (env.remote, env.port))
    ob("getsockname", host=s.getsockname()[0] == env.host)
    rec("sendall", s.sendall, pattern(0, 1000))
    got = recv_exact(s, 1000)
    rec("recv echo", lambda: got)
    expect(got == pattern(0, 1000), "the echo came back intact")
    hold(s)
    s.close()
    r = peer.result()
    expect(r[0]["read"] == 1000 and r[0]["end"] == "eof", "the peer read 1000 bytes, then EOF")


@scenario("client", "connect_ex to a closed port: ECONNREFUSED; create_connection raises")
def py_connect_refused(env: Env, peer: Peer) -> None:
    s = socket.socket()
    r = rec("connect_ex", s.connect_ex, (env.remote, env.port))
    expect(r == errno.ECONNREFUSED, "connect_ex returns ECONNREFUSED")
    hold(s, conn=False)
    s.close()
    e = rec("create_connection", socket.create_connection, (env.remote, env.port), 10)
    expect(isinstance(e, ConnectionRefusedError), "create_connection raises ConnectionRefused")


@scenario("client", "settimeout: recv raises TimeoutError, then data")
def py_settimeout(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} g,w10,ra")
    s = socket.create_connection((env.remote, env.port), 10)
    s.settimeout(0.2)
    ob("gettimeout", ret=s.gettimeout())
    e = rec("recv (nothing comes)", s.recv, 10)
    expect(isinstance(e, TimeoutError), "recv times out")
    hold(s)
    peer.go()
    s.settimeout(10)
    d = rec("recv", recv_exact, s, 10)
    expect(d == pattern(0, 10), "then the data")
    s.close()
    peer.result()


@scenario("client", "setblocking(False), connect_ex EINPROGRESS, select, SO_ERROR")
def py_nonblocking_connect(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} e")
    s = socket.socket()
    s.setblocking(False)
    r = rec("connect_ex", s.connect_ex, (env.remote, env.port))
    expect(r == errno.EINPROGRESS, "EINPROGRESS")
    _, w, _ = select.select([], [s], [], 10)
    ob("select writable", ret=len(w))
    expect(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0, "SO_ERROR 0")
    e = rec("recv (empty)", s.recv, 10)
    expect(isinstance(e, BlockingIOError), "BlockingIOError while nothing is there")
    rec("send", s.send, pattern(0, 10))
    select.select([s], [], [], 10)
    d = rec("recv", s.recv, 10)
    expect(d == pattern(0, 10), "echo")
    hold(s)
    s.close()
    peer.result()


@scenario("client", "socket.makefile: write lines, readline")
def py_makefile_lines(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} e")
    s = socket.create_connection((env.remote, env.port), 10)
    f = s.makefile("rwb")
    f.write(b"first line\nsecond line\n")
    f.flush()
    a = rec("readline", f.readline)
    b = rec("readline", f.readline)
    expect(a == b"first line\n" and b == b"second line\n", "both lines echoed")
    hold(s)
    f.close()
    s.close()
    r = peer.result()
    expect(r[0]["read"] == 23, "the peer read both lines")


@scenario("client", "socket.sendfile (os.sendfile underneath)")
def py_sendfile(env: Env, peer: Peer) -> None:
    data = pattern(0, 300000)
    peer.cmd(f"listen {env.port} ra")
    s = socket.create_connection((env.remote, env.port), 10)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        n = rec("sendfile", s.sendfile, f)
        ob("file position", ret=f.tell())
    expect(n == len(data), "sendfile sent the whole file")
    hold(s)
    s.shutdown(socket.SHUT_WR)
    r = peer.result()
    expect(r[0]["read"] == len(data) and r[0]["sum"] == psum(0, len(data)), "byte-exact")
    s.close()


@scenario("server", "socket.create_server, accept, recv, send")
def py_server_accept(env: Env, peer: Peer) -> None:
    ls = rec("create_server", socket.create_server, (env.host, env.port), backlog=8)
    assert isinstance(ls, socket.socket)
    peer.cmd(f"connect {env.port} w10,r10,ra")
    c, addr = ls.accept()
    ob("accept", peer_is_remote=addr[0] == env.remote)
    d = rec("recv", recv_exact, c, 10)
    expect(d == pattern(0, 10), "10 bytes from the peer")
    rec("sendall", c.sendall, pattern(0, 10))
    hold(c)
    c.close()
    ls.close()
    r = peer.result()
    expect(r[0]["read"] == 10 and r[0]["end"] == "eof", "the peer got 10 bytes and EOF")


@scenario("client", "shutdown(SHUT_WR) then read the answer to EOF")
def py_shutdown_halfclose(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} ra,w20,cl")
    s = socket.create_connection((env.remote, env.port), 10)
    s.sendall(pattern(0, 30))
    hold(s)
    rec("shutdown SHUT_WR", s.shutdown, socket.SHUT_WR)
    e = rec("send after SHUT_WR", s.send, b"x")
    expect(isinstance(e, BrokenPipeError), "BrokenPipeError")
    d = rec("recv to EOF", recv_all, s)
    expect(d == pattern(0, 20), "the answer after our FIN")
    s.close()
    r = peer.result()
    expect(r[0]["read"] == 30, "the peer read our 30 bytes")


@scenario("client", "recv_into, MSG_PEEK, recvmsg, sendmsg")
def py_recv_into_msg(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} r20,w40,fin,ra")
    s = socket.create_connection((env.remote, env.port), 10)
    rec("sendmsg", s.sendmsg, [pattern(0, 8), pattern(8, 12)])
    select.select([s], [], [], 10)
    peek = rec("recv MSG_PEEK|MSG_WAITALL", s.recv, 10, socket.MSG_PEEK | socket.MSG_WAITALL)
    buf = bytearray(10)
    n = rec("recv_into", s.recv_into, buf)
    expect(n == 10 and bytes(buf) == peek == pattern(0, 10), "peeked bytes read again")
    m = rec("recvmsg", lambda: s.recvmsg(30)[0])
    rest = recv_all(s)
    expect(bytes(buf) + m + rest == pattern(0, 40), "all 40 bytes in order")
    hold(s)
    s.close()
    r = peer.result()
    expect(r[0]["read"] == 20 and r[0]["sum"] == psum(0, 20), "sendmsg gathered both pieces")


@scenario("client", "setsockopt/getsockopt through the socket object, TCP_INFO state")
def py_sockopts(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} e")
    s = socket.create_connection((env.remote, env.port), 10)
    for level, opt, name, v in (
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, "TCP_NODELAY", 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, "TCP_KEEPIDLE", 20),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, "TCP_KEEPINTVL", 4),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, "TCP_KEEPCNT", 6),
    ):
        rec(f"setsockopt {name}", s.setsockopt, level, opt, v)
        got = rec(f"getsockopt {name}", s.getsockopt, level, opt)
        expect(got == v, f"{name} reads back {v}")
    rec("setsockopt SO_LINGER", s.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER,
        struct.pack("ii", 1, 3))  # fmt: skip
    lg = s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
    ob("SO_LINGER", value=list(struct.unpack("ii", lg)))
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    ob("TCP_INFO", state=info[0])
    expect(info[0] == 1, "TCP_INFO state ESTABLISHED")
    s.sendall(b"abc")
    expect(recv_exact(s, 3) == b"abc", "echo")
    hold(s)
    s.close()
    peer.result()
