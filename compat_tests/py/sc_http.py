"""Python scenarios on `http.server`, `urllib` and `http.client`: a real server and real clients
from the standard library over UTCP."""

from __future__ import annotations

import http.client
import http.server
import socket
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

from common import Env, Peer, expect, fnv, hold, ob, pattern, scenario


@scenario("server", "http.server.ThreadingHTTPServer serves a file to the remote host")
def http_server_get(env: Env, peer: Peer) -> None:
    body = pattern(0, 20000)
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "f.bin").write_bytes(body)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=root, **kw)

            def do_GET(self) -> None:
                ob("request", path=self.path, client_is_remote=self.client_address[0] == env.remote)
                hold(self.connection)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        srv = http.server.ThreadingHTTPServer((env.host, env.port), Handler)
        srv.daemon_threads = False  # server_close() then waits for the handler thread
        t = threading.Thread(target=srv.handle_request)
        t.start()
        peer.cmd(f"connect {env.port} hget:/f.bin,ra")
        t.join(20)
        srv.server_close()
    r = peer.result(record=False)
    # Dates differ from run to run: the status line and the size are compared.
    ob("peer", status=r[0]["head"].split("\r\n")[0], end=r[0]["end"],
       over_body=r[0]["read"] > len(body))  # fmt: skip
    expect(r[0]["head"].startswith("HTTP/1.0 200"), "200 OK")
    expect(r[0]["read"] > len(body) and r[0]["end"] == "eof", "the whole file, then EOF")


@scenario("client", "urllib.request.urlopen against a server on the remote host")
def http_client_urllib(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} hresp:5000,cl")
    resp = urllib.request.urlopen(f"http://{env.remote}:{env.port}/x", timeout=10)
    ob("urlopen", status=resp.status, length=resp.headers["Content-Length"])
    sock = resp.fp.raw._sock  # type: ignore[union-attr]
    hold(sock)
    body = resp.read()
    ob("read", len=len(body), sum=f"{fnv(body):016x}")
    expect(body == pattern(0, 5000), "the body byte-exact")
    resp.close()
    r = peer.result(record=False)
    # The request names the port (Host:): its digest differs from run to run.
    ob("peer", head=r[0]["head"][:16], end=r[0]["end"])
    expect(r[0]["head"].startswith("GET /x HTTP/1.1"), "the peer got our request")


@scenario("client", "http.client keep-alive: two requests on one connection")
def http_client_keepalive(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} hresp11:100,hresp11:3000,ra")
    c = http.client.HTTPConnection(env.remote, env.port, timeout=10)
    bodies = []
    for path in ("/a", "/b"):
        c.request("GET", path)
        resp = c.getresponse()
        b = resp.read()
        bodies.append(b)
        ob("response", path=path, status=resp.status, len=len(b))
        if path == "/a":
            assert c.sock is not None
            hold(c.sock)
    expect(bodies == [pattern(0, 100), pattern(0, 3000)], "both bodies")
    c.close()
    r = peer.result(record=False)
    ob("peer", conns=len(r), end=r[0]["end"])
    expect(len(r) == 1, "one connection for both requests")


@scenario("client", "socket.create_connection + raw HTTP/1.0, the server closes")
def http_raw_get(env: Env, peer: Peer) -> None:
    peer.cmd(f"listen {env.port} hresp:700,cl")
    s = socket.create_connection((env.remote, env.port), 10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    hold(s)
    data = b""
    for _ in range(1000):
        d = s.recv(65536)
        if not d:
            break
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    ob("response", status=head.split(b"\r\n")[0].decode(), len=len(body))
    expect(body == pattern(0, 700), "the body, then EOF")
    s.close()
    peer.result()
