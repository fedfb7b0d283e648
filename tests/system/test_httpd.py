"""mstack-httpd --kernel on the test bed (issue 5's server acceptance): the server runs on this
host bound to the remote host's peer address, clients run in the remote namespace (curl and
Python sockets).  Every test runs against the normal and the ASan/UBSan build; the fixture
stops the server with SIGTERM and requires exit 0 and no sanitizer report.

"Closed cleanly" means: the client reads the whole response, then end of stream — never
ECONNRESET, never bytes after the response."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.netns import RemoteHost, wait_line

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
VARIANTS = {"normal": BUILD, "asan": BUILD / "asan"}
PORT = 8080
SIZES = {"0": 0, "1k": 1024, "2k": 2048, "4k": 4096, "8k": 8192, "16k": 16384, "32k": 32768}
SIZES["1m"] = 1 << 20
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# The client side, run in the remote namespace: python -c CLIENT HOST PORT MODE ARGS...
# It prints one JSON document; the test asserts on it.
CLIENT = r"""
import hashlib, json, socket, sys, time

HOST, PORT, MODE, ARGS = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]


class Conn:
    def __init__(self):
        self.s = socket.create_connection((HOST, PORT), timeout=10)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("end of stream inside a response")
        self.buf += d

    def response(self, head_only=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ")[:2]
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = 0 if head_only else int(headers["content-length"])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return {"status": int(status), "version": version, "headers": headers,
                "len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                "text": body[:64].decode("latin-1")}

    def ending(self):
        # "eof": clean end right after the response; "extra": bytes after it; "reset": RST
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return "extra" if self.buf else "eof"
                self.buf += d
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "timeout"

    def close(self):
        self.s.close()


def req(path, method="GET", extra=""):
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


out = None
if MODE == "get_close":  # one connection per path, Connection: close
    out = []
    for path in ARGS:
        c = Conn()
        c.send(req(path, extra="Connection: close\r\n"))
        r = c.response()
        r["ending"] = c.ending()
        c.close()
        out.append(r)
elif MODE == "raw":  # hex-encoded request bytes; one response, then how the stream ends
    c = Conn()
    c.send(bytes.fromhex(ARGS[0]))
    r = c.response(head_only=ARGS[1] == "head")
    r["ending"] = c.ending()
    c.close()
    out = r
elif MODE == "keepalive":  # N requests one after the other on one connection
    path, n = ARGS[0], int(ARGS[1])
    c = Conn()
    out = {"responses": []}
    for i in range(n):
        c.send(req(path))
        out["responses"].append(c.response())
    c.s.shutdown(socket.SHUT_WR)  # the server sees end of stream and closes too
    out["ending"] = c.ending()
    c.close()
elif MODE == "pipeline":  # all requests in one send, responses read afterwards
    c = Conn()
    c.send(b"".join(req(p, "HEAD" if p.startswith("HEAD:") else "GET")
                    .replace(b" HEAD:", b" ") for p in ARGS))
    out = {"responses": [c.response(head_only=p.startswith("HEAD:")) for p in ARGS]}
    c.s.shutdown(socket.SHUT_WR)
    out["ending"] = c.ending()
    c.close()
elif MODE == "trickle":  # one request, one byte at a time
    c = Conn()
    for b in req(ARGS[0]):
        c.send(bytes([b]))
        time.sleep(0.002)
    out = c.response()
    c.close()
elif MODE == "http10":  # HTTP/1.0: closes unless keep-alive is asked for
    c = Conn()
    c.send(f"GET {ARGS[0]} HTTP/1.0\r\n\r\n".encode())
    first = c.response()
    first["ending"] = c.ending()
    c.close()
    c = Conn()
    c.send(f"GET {ARGS[0]} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
    ka = [c.response()]
    c.send(f"GET {ARGS[0]} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
    ka.append(c.response())
    c.close()
    out = {"plain": first, "keep_alive": ka}
elif MODE == "abandon":  # ask for a big file, read a little, go away (close or RST)
    path, how, rounds = ARGS[0], ARGS[1], int(ARGS[2])
    got = []
    for i in range(rounds):
        c = Conn()
        c.send(req(path))
        got.append(len(c.s.recv(1000)))
        if how == "rst":
            c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    out = {"read": got}
elif MODE == "slow":  # a small receive buffer read slowly: the server waits for space
    c = Conn.__new__(Conn)
    c.s = socket.socket()
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.s.settimeout(10)
    c.s.connect((HOST, PORT))
    c.buf = b""
    c.send(req(ARGS[0], extra="Connection: close\r\n"))
    ending = "eof"
    for i in range(100000):  # bounded; 1 MB in 2 KB reads is about 500
        try:
            d = c.s.recv(2048)
        except ConnectionResetError:
            ending = "reset"
            break
        if not d:
            break
        c.buf += d
        time.sleep(0.0005)
    out = c.response()
    out["ending"] = ending if not c.buf else "extra"
    c.close()
elif MODE == "halfclose":  # requests, then FIN at once (nc -N style); answers still come
    c = Conn()
    c.send(b"".join(req(p) for p in ARGS))
    c.s.shutdown(socket.SHUT_WR)
    out = {"responses": [c.response() for p in ARGS]}
    out["ending"] = c.ending()
    c.close()
elif MODE == "limit":  # two connections held open; a third is refused; then served
    held = []
    for i in range(2):
        c = Conn()
        c.send(req(ARGS[0]))
        held.append(c.response()["status"])
        held.append(c)
    third = Conn()
    third.send(req(ARGS[0]))
    refused = third.ending()
    third.close()
    held[1].close()
    served = None
    for attempt in range(50):  # bounded: the server notices the close within a pass
        time.sleep(0.1)
        c = Conn()
        c.send(req(ARGS[0], extra="Connection: close\r\n"))
        try:
            served = c.response()["status"]
            break
        except (EOFError, ConnectionResetError):
            pass
        finally:
            c.close()
    held[3].close()
    out = {"held": [held[0], held[2]], "refused": refused, "served": served}
elif MODE == "hold":  # start a big response, stall, print, wait for stdin, then vanish
    c = Conn()
    c.send(req(ARGS[0]))
    c.s.recv(1000)
    print("stalled", flush=True)
    sys.stdin.readline()
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    out = {"ok": True}
print(json.dumps(out))
"""


@dataclass
class Server:
    proc: subprocess.Popen[str]
    host: str
    port: int
    files: dict[str, bytes]
    rh: RemoteHost

    def client(self, mode: str, *args: str, timeout: float = 60.0) -> Any:
        cp = self.rh.python(CLIENT, self.host, str(self.port), mode, *args, timeout=timeout)
        return json.loads(cp.stdout)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and stderr.  Bounded: SIGKILL after 10 s (a failure)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            return -9, err
        return self.proc.returncode, err


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_root(root: Path) -> dict[str, bytes]:
    rng = random.Random(5)
    files: dict[str, bytes] = {}
    for name, size in SIZES.items():
        files[f"/{name}.bin"] = rng.randbytes(size)
    files["/index.html"] = b"<!doctype html><title>mstack-httpd</title>\n"
    files["/sub/index.html"] = b"<p>sub</p>\n"
    files["/sub/page.html"] = b"<p>page</p>\n"
    for path, data in files.items():
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


@contextlib.contextmanager
def serving(
    variant: str, rh: RemoteHost, tmp_path: Path, *extra: str, run_dir: Path | None = None
) -> Iterator[Server]:
    """mstack-httpd on rh.host_ip:PORT over a fresh root — on kernel sockets (--kernel), or on
    UTCP with a port from the mstackd whose run directory is `run_dir`; on exit SIGTERM, and
    the server must exit 0 without a sanitizer report."""
    exe = VARIANTS[variant] / "bin" / "mstack-httpd"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: build httpd (make build, or make -C httpd) first")
    root = tmp_path / "root"
    files = make_root(root)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    argv = [str(exe), "--listen", f"{rh.host_ip}:{PORT}", "--root", str(root)]
    argv += ["--run-dir", str(run_dir)] if run_dir is not None else ["--kernel"]
    proc = subprocess.Popen(
        [*argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    server = Server(proc, rh.host_ip, PORT, files, rh)
    try:
        wait_line(proc, "ready", 10)
        yield server
    finally:
        rc, err = server.stop()
    assert rc == 0, f"mstack-httpd exited {rc} on SIGTERM\n{err}"
    for mark in SANITIZER_MARKS:
        assert mark not in err, err
    if run_dir is not None:
        # UTCP sends file bodies by reference (utcp_send_ref): every one came back, once
        refs = re.search(r"bodies by reference: (\d+) queued, (\d+) released", err)
        assert refs is not None, err
        assert refs.group(1) == refs.group(2), err


@pytest.fixture(params=[(v, m) for m in ("kernel", "utcp") for v in VARIANTS],
                ids=lambda p: f"{p[1]}-{p[0]}")  # fmt: skip
def httpd(
    request: pytest.FixtureRequest, remote_host: RemoteHost, tmp_path: Path
) -> Iterator[Server]:
    variant, mode = request.param
    run_dir = None
    if mode == "utcp":  # the paper's configuration: UTCP on a port behind the switch
        run_dir = request.getfixturevalue("mstackd_factory")(remote_host).run_dir
    with serving(variant, remote_host, tmp_path, run_dir=run_dir) as server:
        yield server
    if mode == "utcp":
        # Proof UTCP carried it: the kernel holds no connection of port PORT with this test's
        # remote host (other things on the machine may serve their own port PORT).
        ss = subprocess.run(["ss", "-tnH", "state", "established", f"sport = :{PORT}",
                             "dst", remote_host.remote_ip],
                            capture_output=True, text=True).stdout  # fmt: skip
        assert ss.strip() == "", ss


def test_get_every_size_byte_exact(httpd: Server) -> None:
    paths = [f"/{name}.bin" for name in SIZES]
    for r, path in zip(httpd.client("get_close", *paths), paths, strict=True):
        assert r["status"] == 200, r
        assert r["len"] == len(httpd.files[path]) and r["sha256"] == sha(httpd.files[path]), path
        assert r["headers"]["content-type"] == "application/octet-stream"
        assert r["headers"]["connection"] == "close"
        assert r["ending"] == "eof", (path, r["ending"])
    # and with a real client, keep-alive
    for path in paths:
        cp = httpd.rh.run(
            ["curl", "-sS", "--fail", "--max-time", "20", httpd.url(path)], text=False
        )
        assert sha(cp.stdout) == sha(httpd.files[path]), path


def test_index_and_directories(httpd: Server) -> None:
    got = httpd.client("get_close", "/", "/index.html", "/sub", "/sub/", "/sub/page.html")
    want = ["/index.html", "/index.html", "/sub/index.html", "/sub/index.html", "/sub/page.html"]
    for r, path in zip(got, want, strict=True):
        assert r["status"] == 200 and r["sha256"] == sha(httpd.files[path]), (path, r)
        assert r["headers"]["content-type"].startswith("text/html")
    # absolute-form targets (RFC 9112 3.2.2): the authority is ignored, the path served
    raw = b"GET http://elsewhere.example/sub/page.html?x=1 HTTP/1.1\r\nHost: t\r\n"
    r = httpd.client("raw", (raw + b"Connection: close\r\n\r\n").hex(), "get")
    assert r["status"] == 200 and r["sha256"] == sha(httpd.files["/sub/page.html"])
    assert r["ending"] == "eof"


def test_head(httpd: Server) -> None:
    # HEAD then GET pipelined on one connection: the HEAD response must carry no body, or
    # the GET's response would not parse where it should.
    out = httpd.client("pipeline", "HEAD:/32k.bin", "/1k.bin", "HEAD:/0.bin", "HEAD:/")
    head, get, empty, index = out["responses"]
    assert head["status"] == 200 and head["headers"]["content-length"] == str(32768)
    assert get["sha256"] == sha(httpd.files["/1k.bin"])
    assert empty["headers"]["content-length"] == "0"
    assert index["headers"]["content-length"] == str(len(httpd.files["/index.html"]))
    assert out["ending"] == "eof"


def test_keep_alive_100_requests(httpd: Server) -> None:
    out = httpd.client("keepalive", "/4k.bin", "100")
    assert len(out["responses"]) == 100
    for r in out["responses"]:
        assert r["status"] == 200 and r["sha256"] == sha(httpd.files["/4k.bin"])
        assert "connection" not in r["headers"]
    assert out["ending"] == "eof"


def test_pipelined_requests_in_order(httpd: Server) -> None:
    paths = ["/1k.bin", "/2k.bin", "/", "/16k.bin", "/0.bin", "/sub/page.html"] * 8
    out = httpd.client("pipeline", *paths)
    for r, path in zip(out["responses"], paths, strict=True):
        want = "/index.html" if path == "/" else path
        assert r["status"] == 200 and r["sha256"] == sha(httpd.files[want]), path
    assert out["ending"] == "eof"


def test_slow_reader(httpd: Server) -> None:
    """The server has to wait for send space again and again (EPOLLOUT) and still sends
    every byte, then closes cleanly."""
    r = httpd.client("slow", "/1m.bin")
    assert r["status"] == 200 and r["sha256"] == sha(httpd.files["/1m.bin"])
    assert r["ending"] == "eof"


def test_requests_then_half_close(httpd: Server) -> None:
    """The client's FIN right behind its requests: every request is still answered, then
    the server closes too."""
    paths = ["/2k.bin", "/32k.bin", "/1m.bin", "/"]
    out = httpd.client("halfclose", *paths)
    for r, path in zip(out["responses"], paths, strict=True):
        want = "/index.html" if path == "/" else path
        assert r["status"] == 200 and r["sha256"] == sha(httpd.files[want]), path
    assert out["ending"] == "eof"


def test_request_trickling_in(httpd: Server) -> None:
    r = httpd.client("trickle", "/8k.bin")
    assert r["status"] == 200 and r["sha256"] == sha(httpd.files["/8k.bin"])


def test_connection_close_honoured(httpd: Server) -> None:
    (r,) = httpd.client("get_close", "/2k.bin")
    assert r["headers"]["connection"] == "close" and r["ending"] == "eof"
    out = httpd.client("http10", "/1k.bin")
    assert out["plain"]["status"] == 200 and out["plain"]["headers"]["connection"] == "close"
    assert out["plain"]["ending"] == "eof"
    for r in out["keep_alive"]:
        assert r["status"] == 200 and r["headers"]["connection"] == "keep-alive"
    # a request pipelined after "Connection: close" is not answered
    raw = b"GET /1k.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    raw += b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    r = httpd.client("raw", raw.hex(), "get")
    assert r["status"] == 200 and r["ending"] == "eof"


BAD_REQUESTS = {
    "garbage": b"GARBAGE\r\n\r\n",
    "http09": b"GET /\r\n\r\n",
    "bad_version": b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
    "lowercase_proto": b"GET / http/1.1\r\nHost: t\r\n\r\n",
    "no_host": b"GET / HTTP/1.1\r\n\r\n",
    "non_token_method": b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "nul_byte": b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
    "nul_in_header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: t\n\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    "header_too_large": b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"x" * 9000 + b"\r\n\r\n",
    "body_on_get": b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd",
    "not_origin_form": b"GET index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    "traversal": b"GET /../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
    "traversal_end": b"GET /sub/.. HTTP/1.1\r\nHost: t\r\n\r\n",
    "traversal_inner": b"GET /sub/../index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    "traversal_encoded": b"GET /%2e%2e/%2E%2e/etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
    "traversal_slash": b"GET /sub/..%2f..%2fetc HTTP/1.1\r\nHost: t\r\n\r\n",
    "backslash": b"GET /sub\\..\\index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    "bad_escape": b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n",
}
METHODS = ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "PROPFIND"]


def test_malformed_requests_get_400_and_a_clean_close(httpd: Server) -> None:
    for name, raw in BAD_REQUESTS.items():
        # a valid request pipelined behind the bad one must not be answered
        r = httpd.client("raw", (raw + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").hex(), "get")
        assert r["status"] == 400, (name, r)
        assert r["headers"]["connection"] == "close", name
        assert r["ending"] == "eof", (name, r["ending"])
    assert httpd.alive()


def test_other_methods_get_405_and_a_clean_close(httpd: Server) -> None:
    for method in METHODS:
        body = b"x=1" if method in ("POST", "PUT", "PATCH") else b""
        head = f"{method} /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
        raw = head.encode() + body
        r = httpd.client("raw", raw.hex(), "get")
        assert r["status"] == 405, (method, r)
        assert r["headers"]["allow"] == "GET, HEAD", method
        assert r["headers"]["connection"] == "close", method
        assert r["ending"] == "eof", (method, r["ending"])


def test_missing_files_get_404_and_a_clean_close(httpd: Server) -> None:
    for path in ("/nope.html", "/sub/nope", "/1k.bin/", "/SUB/", "/index.htm"):
        r = httpd.client("raw", f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode().hex(), "get")
        assert r["status"] == 404, (path, r)
        assert r["headers"]["connection"] == "close" and r["ending"] == "eof", path
    r = httpd.client("raw", b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n".hex(), "head")
    assert r["status"] == 404 and r["ending"] == "eof"


def test_client_leaving_mid_response(httpd: Server) -> None:
    for how in ("close", "rst"):
        out = httpd.client("abandon", "/1m.bin", how, "20")
        assert all(n > 0 for n in out["read"])
        assert httpd.alive()
        (r,) = httpd.client("get_close", "/1m.bin")
        assert r["sha256"] == sha(httpd.files["/1m.bin"]) and r["ending"] == "eof"
    # one client stalls mid-response while others are served, then vanishes
    holder = httpd.rh.python_popen(
        CLIENT,
        httpd.host,
        str(httpd.port),
        "hold",
        "/1m.bin",
        ready="stalled",
        stdin=subprocess.PIPE,
    )
    try:
        for r in httpd.client("get_close", "/32k.bin", "/1m.bin"):
            assert r["status"] == 200 and r["ending"] == "eof"
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        holder.wait(timeout=20)
        assert holder.returncode == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    (r,) = httpd.client("get_close", "/1m.bin")
    assert r["sha256"] == sha(httpd.files["/1m.bin"])
    assert httpd.alive()


def test_sigterm_with_open_connections_exits_0(httpd: Server) -> None:
    holder = httpd.rh.python_popen(
        CLIENT,
        httpd.host,
        str(httpd.port),
        "hold",
        "/1m.bin",
        ready="stalled",
        stdin=subprocess.PIPE,
    )
    try:
        rc, err = httpd.stop()
        assert rc == 0, err
        assert "stopped:" in err
        for mark in SANITIZER_MARKS:
            assert mark not in err, err
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_max_conns(variant: str, remote_host: RemoteHost, tmp_path: Path) -> None:
    """--max-conns 2: a third connection is accepted and closed at once, with no response;
    once one of the two goes, new connections are served again."""
    with serving(variant, remote_host, tmp_path, "--max-conns", "2") as server:
        out = server.client("limit", "/1k.bin")
        assert out["held"] == [200, 200]
        assert out["refused"] in ("eof", "reset")
        assert out["served"] == 200
