"""Python scenarios on `asyncio`: streams, the low-level sock_* API and protocols, on the default
event loop (epoll underneath)."""

from __future__ import annotations

import asyncio
import socket

from common import Env, Peer, expect, hold, ob, pattern, psum, scenario


@scenario("client", "asyncio.open_connection: write, readexactly, write_eof, read to EOF")
def aio_open_connection(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} r100,w50,fin,ra")

    async def main() -> None:
        r, w = await asyncio.open_connection(env.remote, env.port)
        w.write(pattern(0, 100))
        await w.drain()
        d = await r.readexactly(50)
        ob("readexactly", len=len(d))
        expect(d == pattern(0, 50), "50 bytes")
        rest = await r.read()
        ob("read to EOF", len=len(rest), at_eof=r.at_eof())
        hold(w.get_extra_info("socket"))
        w.write_eof()
        w.close()
        await w.wait_closed()

    asyncio.run(main())
    res = peer.result()
    expect(res[0]["read"] == 100 and res[0]["sum"] == psum(0, 100), "the peer got 100 bytes")


@scenario("server", "asyncio.start_server: handler reads, answers, closes")
def aio_start_server(env: Env, peer: Peer) -> None:
    async def main() -> None:
        done = asyncio.Event()
        seen: list[int] = []

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            d = await r.readexactly(20)
            seen.append(len(d))
            hold(w.get_extra_info("socket"))
            w.write(d[::-1])
            await w.drain()
            w.close()
            await w.wait_closed()
            done.set()

        srv = await asyncio.start_server(handle, env.host, env.port)
        peer.cmd(f"connect {env.port} w20,ra")
        await asyncio.wait_for(done.wait(), 15)
        ob("handled", reads=seen)
        srv.close()
        await srv.wait_closed()

    asyncio.run(main())
    res = peer.result()
    expect(res[0]["read"] == 20 and res[0]["end"] == "eof", "the peer got the answer and EOF")


@scenario("client", "loop.sock_connect, sock_sendall, sock_recv on a non-blocking socket")
def aio_sock_api(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} e")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, (env.remote, env.port))
        ob("sock_connect", peer_ok=s.getpeername() == (env.remote, env.port))
        await loop.sock_sendall(s, pattern(0, 5000))
        got = b""
        for _ in range(1000):
            if len(got) >= 5000:
                break
            d = await loop.sock_recv(s, 65536)
            if not d:
                break
            got += d
        ob("sock_recv", len=len(got))
        expect(got == pattern(0, 5000), "5000 bytes echoed")
        hold(s)
        s.close()

    asyncio.run(main())
    peer.result()


@scenario("client", "a Protocol: connection_made, data_received, eof_received, connection_lost")
def aio_protocol(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} r5,w30,fin,ra")
    calls: list[str] = []

    class P(asyncio.Protocol):
        def __init__(self, lost: asyncio.Future[None]) -> None:
            self.lost = lost
            self.data = b""
            self.t: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            calls.append("connection_made")
            assert isinstance(transport, asyncio.Transport)
            self.t = transport
            transport.write(b"hello")

        def data_received(self, data: bytes) -> None:
            if not calls or calls[-1] != "data_received":
                calls.append("data_received")
            self.data += data

        def eof_received(self) -> bool:
            calls.append("eof_received")
            assert self.t is not None
            hold(self.t.get_extra_info("socket"))
            return False  # the transport closes itself

        def connection_lost(self, exc: Exception | None) -> None:
            calls.append(f"connection_lost({type(exc).__name__ if exc else None})")
            self.lost.set_result(None)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        _, p = await loop.create_connection(lambda: P(lost), env.remote, env.port)
        await asyncio.wait_for(lost, 15)
        return p.data

    data = asyncio.run(main())
    ob("protocol calls", calls=calls, len=len(data))
    expect(calls[:2] == ["connection_made", "data_received"] and "eof_received" in calls,
           "callbacks in order")  # fmt: skip
    expect(data == pattern(0, 30), "30 bytes")
    peer.result()


@scenario("client", "asyncio.wait_for on a read times out; the stream is still usable")
def aio_read_timeout(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} g,w10,ra")

    async def main() -> None:
        r, w = await asyncio.open_connection(env.remote, env.port)
        try:
            await asyncio.wait_for(r.read(10), 0.2)
            ob("read", ret="data")
        except TimeoutError:
            ob("read", exc="TimeoutError")
        hold(w.get_extra_info("socket"))
        peer.go()
        d = await asyncio.wait_for(r.readexactly(10), 10)
        expect(d == pattern(0, 10), "the data after the timeout")
        w.close()
        await w.wait_closed()

    asyncio.run(main())
    peer.result()
