"""What every Python compat scenario uses, the same protocol as the C ones (c/compat.h):
observations as JSON lines on stdout, expectations, the scripted peer's control channel, and the
hold marker at which the harness checks that UTCP carries the connection."""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Env:
    host: str
    remote: str
    peer_path: str
    port: int
    under_shim: bool


def load_env() -> Env:
    return Env(
        os.environ["COMPAT_HOST"],
        os.environ["COMPAT_REMOTE"],
        os.environ["COMPAT_PEER"],
        int(os.environ["COMPAT_PORT"]),
        os.environ.get("COMPAT_UNDER_SHIM") == "1",
    )


failures = 0
n_expects = 0


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def ob(call: str, **fields: Any) -> None:
    emit({"call": call, **fields})


def exc_fields(e: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"exc": type(e).__name__}
    if isinstance(e, OSError) and e.errno:
        out["errno"] = errno.errorcode.get(e.errno, str(e.errno))
    return out


def rec(call: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Call fn, record its result (or its exception); the exception is returned, not raised."""
    try:
        r = fn(*args, **kw)
    except (OSError, TimeoutError, EOFError, ValueError) as e:
        ob(call, **exc_fields(e))
        return e
    ob(call, ret=describe(r))
    return r


def describe(r: Any) -> Any:
    """A comparable picture of a return value: bytes by length and digest, sockets as such."""
    if isinstance(r, bytes | bytearray):
        return {"len": len(r), "sum": f"{fnv(bytes(r)):016x}"}
    if isinstance(r, socket.socket):
        return "socket"
    if isinstance(r, tuple) and r and isinstance(r[0], socket.socket):
        return "socket+address"
    if isinstance(r, int | str | float | bool) or r is None:
        return r
    return type(r).__name__


def expect(ok: bool, what: str) -> None:
    global failures, n_expects
    n_expects += 1
    if not ok:
        failures += 1
    emit({"expect": what, "ok": bool(ok)})


def pattern(off: int, n: int) -> bytes:
    return bytes((i * 31 + 7) % 251 for i in range(off, off + n))


def fnv(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def psum(off: int, n: int) -> str:
    return f"{fnv(pattern(off, n)):016x}"


class Peer:
    """The control connection to the scripted peer (compat_tests/peer.py)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.f = self.sock.makefile("r", encoding="utf-8", newline="\n")

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        reply = self.f.readline().rstrip("\n")
        if not reply or reply.startswith("err"):
            raise RuntimeError(f"peer: {line!r}: {reply!r}")
        return reply

    def go(self) -> None:
        self.cmd("go")

    def result(self, record: bool = True) -> list[dict[str, Any]]:
        reply = self.cmd("result")
        reports: list[dict[str, Any]] = json.loads(reply[len("result ") :])
        if record:
            ob("peer", reports=reports)
        return reports


def hold(sock: socket.socket, conn: bool = True) -> None:
    """Tell the harness the socket is open, wait until it has looked."""
    try:
        lport = sock.getsockname()[1]
    except OSError:
        lport = 0
    try:
        rport = sock.getpeername()[1]
    except OSError:
        rport = 0
    sys.stdout.write(f"@hold pid={os.getpid()} lport={lport} rport={rport} conn={int(conn)}\n")
    sys.stdout.flush()
    r, _, _ = select.select([sys.stdin], [], [], 30)
    if not r or not sys.stdin.readline():
        raise SystemExit("no go from the harness after a hold")


def recv_all(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    out = b""
    for _ in range(100000):
        if len(out) >= limit:
            break
        d = sock.recv(65536)
        if not d:
            break
        out += d
    return out


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    for _ in range(100000):
        if len(out) >= n:
            break
        d = sock.recv(n - len(out))
        if not d:
            break
        out += d
    return out


Scenario = Callable[[Env, Peer], None]
REGISTRY: dict[str, tuple[Scenario, str, bool, str]] = {}


def scenario(kind: str, about: str, differential: bool = True) -> Callable[[Scenario], Scenario]:
    """Register a scenario: kind is client or server; `about` names the library and calls."""

    def deco(fn: Scenario) -> Scenario:
        REGISTRY[fn.__name__] = (fn, kind, differential, about)
        return fn

    return deco
