"""The scripted peer of the compat scenarios: it runs in the remote host's namespace and plays
the other side of each connection. A scenario drives it over a path-based unix socket (reachable
from any network namespace), one line per request:

    listen PORT SCRIPT [N]    listen on the remote address, play SCRIPT on N accepted connections
    connect PORT SCRIPT [N]   connect N times to this host's address (retrying while refused)
    go                        release one `g` step of a script
    result                    wait for every connection to finish; one JSON list of reports

A SCRIPT is steps separated by commas: wN (send N pattern bytes), rN (read N bytes), ra (read
to the end), e (echo to the end), dMS (sleep), fin (shutdown SHUT_WR), rst (SO_LINGER 0 and
close: the other side sees a reset), cl (close), g (wait for `go`), hget:PATH (send an HTTP/1.0
GET), hresp:N and hresp11:N (read a request, answer N pattern bytes with HTTP/1.0 or 1.1).
Each connection reports what it read (count, FNV-1a digest, first bytes) and how it ended."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
import struct
import threading
import time
from typing import Any

IO_TIMEOUT = 10.0
CONNECT_RETRY_S = 5.0
RESULT_WAIT_S = 20.0


def pattern(offset: int, n: int) -> bytes:
    """The bytes every side of the suite sends: byte i of a stream is (i * 31 + 7) % 251."""
    return bytes((i * 31 + 7) % 251 for i in range(offset, offset + n))


def fnv(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Conn:
    """One connection and what the peer saw on it."""

    def __init__(self, sock: socket.socket, session: Session) -> None:
        self.sock = sock
        self.session = session
        self.sent = 0
        self.read = 0
        self.digest = 0xCBF29CE484222325
        self.head = b""
        self.end = "open"
        self.error: str | None = None

    def got(self, data: bytes) -> None:
        self.read += len(data)
        self.digest = fnv(data, self.digest)
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]

    def recv(self, n: int) -> bytes:
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.end = "reset"
            return b""
        except TimeoutError:
            self.end = "timeout"
            return b""
        if not data:
            self.end = "eof"
        return data

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.error = errno.errorcode.get(e.errno or 0, str(e))

    def request_head(self) -> bytes:
        buf = b""
        for _ in range(1000):
            if b"\r\n\r\n" in buf:
                break
            d = self.recv(4096)
            if not d:
                break
            buf += d
        self.got(buf)
        return buf

    def step(self, st: str) -> bool:
        """Play one step; False ends the script (the connection is gone). Whole-word steps
        are matched before prefixed ones ("rst" is not "r" + a count)."""
        if st == "rst":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
            self.end = "rst-sent"
            return False
        if st.startswith("w"):
            n = int(st[1:])
            self.send(pattern(self.sent, n))
            self.sent += n
        elif st == "ra" or st == "e":
            for _ in range(1 << 20):
                d = self.recv(65536)
                if not d:
                    break
                self.got(d)
                if st == "e":
                    self.send(d)
        elif st.startswith("r"):
            want = int(st[1:])
            for _ in range(1 << 20):
                if want <= 0:
                    break
                d = self.recv(min(want, 65536))
                if not d:
                    break
                self.got(d)
                want -= len(d)
        elif st.startswith("d"):
            time.sleep(int(st[1:]) / 1000)
        elif st == "fin":
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        elif st == "cl":
            self.sock.close()
            if self.end == "open":
                self.end = "closed"
            return False
        elif st == "g":
            if not self.session.go.acquire(timeout=IO_TIMEOUT):
                self.error = "no go"
        elif st.startswith("hget:"):
            self.send(f"GET {st[5:]} HTTP/1.0\r\nHost: compat\r\n\r\n".encode())
        elif st.startswith("hresp"):
            version, n = st[5:].split(":")
            self.request_head()
            proto = "HTTP/1.1" if version == "11" else "HTTP/1.0"
            head = f"{proto} 200 OK\r\nContent-Length: {n}\r\nContent-Type: x/y\r\n\r\n"
            self.send(head.encode() + pattern(0, int(n)))
        else:
            raise ValueError(f"unknown step {st!r}")
        return True

    def play(self, script: str) -> None:
        self.sock.settimeout(IO_TIMEOUT)
        try:
            for st in script.split(","):
                if st and not self.step(st):
                    break
        except OSError as e:
            self.error = errno.errorcode.get(e.errno or 0, str(e))
        except ValueError as e:
            self.error = f"bad script: {e}"
        finally:
            if self.sock.fileno() >= 0:
                self.sock.close()

    def report(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "sum": f"{self.digest:016x}",
            "head": self.head[:24].decode("latin-1"),
            "end": self.end,
            "error": self.error,
        }


class Session:
    """One control connection: the connections it asked for and their reports."""

    def __init__(self, ctl: socket.socket, remote_ip: str, host_ip: str) -> None:
        self.ctl = ctl
        self.remote_ip = remote_ip
        self.host_ip = host_ip
        self.go = threading.Semaphore(0)
        self.threads: list[threading.Thread] = []
        self.conns: list[Conn] = []
        self.failures: list[str] = []
        self.listeners: list[socket.socket] = []
        self.lock = threading.Lock()

    def _run_conn(self, sock: socket.socket, script: str) -> None:
        c = Conn(sock, self)
        with self.lock:
            self.conns.append(c)
        c.play(script)

    def listen(self, port: int, script: str, n: int) -> str:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.remote_ip, port))
        ls.listen(16)
        ls.settimeout(IO_TIMEOUT)
        self.listeners.append(ls)

        def acceptor() -> None:
            for _ in range(n):
                try:
                    s, _ = ls.accept()
                except OSError as e:
                    self.failures.append(f"accept: {e}")
                    break
                t = threading.Thread(target=self._run_conn, args=(s, script), daemon=True)
                t.start()
                with self.lock:
                    self.threads.append(t)
            ls.close()

        t = threading.Thread(target=acceptor, daemon=True)
        t.start()
        self.threads.append(t)
        return "ok"

    def connect(self, port: int, script: str, n: int) -> str:
        def connector() -> None:
            deadline = time.monotonic() + CONNECT_RETRY_S
            for _ in range(n):
                for _attempt in range(1000):
                    s = socket.socket()
                    s.settimeout(IO_TIMEOUT)
                    try:
                        s.connect((self.host_ip, port))
                        break
                    except ConnectionRefusedError:
                        s.close()
                        if time.monotonic() > deadline:
                            self.failures.append(f"connect {port}: refused until deadline")
                            return
                        time.sleep(0.02)
                    except OSError as e:
                        s.close()
                        self.failures.append(f"connect {port}: {e}")
                        return
                else:
                    return
                t = threading.Thread(target=self._run_conn, args=(s, script), daemon=True)
                t.start()
                with self.lock:
                    self.threads.append(t)

        t = threading.Thread(target=connector, daemon=True)
        t.start()
        self.threads.append(t)
        return "ok"

    def result(self) -> str:
        deadline = time.monotonic() + RESULT_WAIT_S
        for _ in range(100):  # threads add threads: join until none is left running
            with self.lock:
                pending = [t for t in self.threads if t.is_alive()]
            if not pending:
                break
            for t in pending:
                t.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                self.failures.append("result: connections still running")
                break
        with self.lock:
            reports = [c.report() for c in self.conns]
        if self.failures:
            reports.append({"failures": self.failures})
        return "result " + json.dumps(reports)

    def serve(self) -> None:
        f = self.ctl.makefile("r", encoding="utf-8", newline="\n")
        try:
            for line in f:
                words = line.split()
                if not words:
                    continue
                try:
                    if words[0] in ("listen", "connect"):
                        n = int(words[3]) if len(words) > 3 else 1
                        fn = self.listen if words[0] == "listen" else self.connect
                        reply = fn(int(words[1]), words[2], n)
                    elif words[0] == "go":
                        self.go.release()
                        reply = "ok"
                    elif words[0] == "result":
                        reply = self.result()
                    else:
                        reply = f"err unknown request {words[0]}"
                except (OSError, ValueError, IndexError) as e:
                    reply = f"err {e}"
                self.ctl.sendall(reply.encode() + b"\n")
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        for ls in self.listeners:
            with contextlib.suppress(OSError):
                ls.close()
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.sock.close()
        for _ in range(8):  # wake `g` steps that wait for a go nobody will send
            self.go.release()
        self.ctl.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ctl", required=True, help="path of the control unix socket")
    ap.add_argument("--remote-ip", required=True, help="this namespace's address")
    ap.add_argument("--host-ip", required=True, help="the address of the host under test")
    a = ap.parse_args()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(a.ctl)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.ctl)
    os.chmod(a.ctl, 0o666)
    srv.listen(64)
    print("peer ready", flush=True)
    while True:
        ctl, _ = srv.accept()
        s = Session(ctl, a.remote_ip, a.host_ip)
        threading.Thread(target=s.serve, daemon=True).start()


if __name__ == "__main__":
    main()
