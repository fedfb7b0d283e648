"""Python scenarios on `selectors`: the default (epoll) selector, poll and select, over UTCP
sockets alone and mixed with kernel descriptors."""

from __future__ import annotations

import os
import select
import selectors
import socket

from common import Env, Peer, expect, hold, ob, pattern, rec, scenario


def events(sel: selectors.BaseSelector, timeout: float) -> list[list[object]]:
    """Ready keys as [tag, mask names], sorted by tag (a ready list's order is not defined)."""
    out = []
    for key, mask in sel.select(timeout):
        names = [n for n, b in (("R", selectors.EVENT_READ), ("W", selectors.EVENT_WRITE))
                 if mask & b]  # fmt: skip
        out.append([key.data, "".join(names)])
    return sorted(out)


@scenario("client", "DefaultSelector (epoll): write-ready, read-ready, modify, EOF")
def sel_default_client(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} g,w10,g,fin,ra")
    s = socket.create_connection((env.remote, env.port), 10)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    ob("selector", kind=type(sel).__name__)
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, "sock")
    ev = events(sel, 0)
    ob("select", ret=ev)
    expect(ev == [["sock", "W"]], "writable only")
    sel.modify(s, selectors.EVENT_READ, "sock")
    expect(events(sel, 0) == [], "nothing to read yet")
    hold(s)
    peer.go()
    ev = events(sel, 10)
    ob("select", ret=ev)
    expect(ev == [["sock", "R"]], "readable once data came")
    rec("recv", s.recv, 100)
    expect(events(sel, 0) == [], "nothing after reading")
    peer.go()
    ev = events(sel, 10)
    ob("select", ret=ev)
    rec("recv at EOF", s.recv, 100)
    sel.unregister(s)
    sel.close()
    s.close()
    peer.result()


@scenario("server", "PollSelector: listener, accepted connections, EOF")
def sel_poll_server(env: Env, peer: Peer) -> None:
    ls = socket.create_server((env.host, env.port))
    ls.setblocking(False)
    sel = selectors.PollSelector()
    sel.register(ls, selectors.EVENT_READ, "listener")
    peer.cmd(f"connect {env.port} w10,fin,ra 2")
    conns: list[socket.socket] = []
    got = b""
    eofs = 0
    held = False
    for _ in range(100):
        if eofs == 2:
            break
        for key, _ in sel.select(10):
            if key.data == "listener":
                for _ in range(2):
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns.append(c)
                    sel.register(c, selectors.EVENT_READ, "conn")
            else:
                c = key.fileobj
                assert isinstance(c, socket.socket)
                d = c.recv(100)
                if d:
                    got += d
                    if not held:
                        hold(c)
                        held = True
                else:
                    eofs += 1
                    sel.unregister(c)
                    c.sendall(b"bye")
                    c.close()
    ob("served", conns=len(conns), bytes=len(got), eofs=eofs)
    expect(len(conns) == 2 and got == pattern(0, 10) * 2 and eofs == 2, "both served")
    sel.close()
    ls.close()
    r = peer.result()
    expect(all(x["read"] == 3 for x in r), "each peer got bye")


@scenario("client", "SelectSelector over a UTCP socket and a pipe")
def sel_select_mixed(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} g,w10,ra")
    s = socket.create_connection((env.remote, env.port), 10)
    rp, wp = os.pipe()
    sel = selectors.SelectSelector()
    sel.register(s, selectors.EVENT_READ, "sock")
    sel.register(rp, selectors.EVENT_READ, "pipe")
    expect(events(sel, 0) == [], "nothing")
    os.write(wp, b"x")
    ev = events(sel, 0)
    ob("select", ret=ev)
    expect(ev == [["pipe", "R"]], "only the pipe")
    hold(s)
    peer.go()
    select.select([s], [], [], 10)  # the socket's data is there
    ev = events(sel, 0)
    ob("select", ret=ev)
    expect(ev == [["pipe", "R"], ["sock", "R"]], "both")
    rec("recv", s.recv, 10)
    os.read(rp, 1)
    expect(events(sel, 0) == [], "nothing left")
    sel.close()
    os.close(rp)
    os.close(wp)
    s.close()
    peer.result()


@scenario("client", "EpollSelector over a UTCP socket and a socketpair; unregister on close")
def sel_epoll_socketpair(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} e")
    s = socket.create_connection((env.remote, env.port), 10)
    a, b = socket.socketpair()
    sel = selectors.EpollSelector()
    sel.register(s, selectors.EVENT_READ, "sock")
    sel.register(a, selectors.EVENT_READ, "unix")
    b.sendall(b"u")
    s.sendall(b"tcp")
    select.select([s], [], [], 10)  # the echo is back
    ev = events(sel, 0)
    ob("select", ret=ev)
    expect(ev == [["sock", "R"], ["unix", "R"]], "both ready")
    rec("recv", s.recv, 10)
    rec("recv unix", a.recv, 10)
    hold(s)
    sel.unregister(s)
    s.close()
    ob("select after close", ret=events(sel, 0))
    sel.close()
    a.close()
    b.close()
    r = peer.result()
    expect(r[0]["read"] == 3, "echoed")
