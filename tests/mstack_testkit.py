"""Test kit for mstackd: a running daemon on the test bed (the `mstackd` fixture) and a small
Python client of the control protocol, so tests can play an application — including a rude one
— without the C library. Everything started here is stopped by pid and reaped; the daemon's
own teardown is checked by the leak check like everything else."""

from __future__ import annotations

import array
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mstackd import proto
from mstackd.abi import consts, ffi
from testbed.netns import RemoteHost, stop_process, unique_name, wait_line

__all__ = ["AppClient", "Mstackd", "mstackd", "mstackd_factory"]

BIN = Path(sys.executable).parent


@dataclass
class Mstackd:
    """A daemon started for a test: its process, names and the test bed host it serves."""

    proc: subprocess.Popen[str]
    argv: list[str]
    run_dir: Path
    bpf_dir: Path
    ports_netns: str
    port_prefix: str
    host: RemoteHost | None

    def admin(self, cmd: str, **args: Any) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(10)
            s.connect(str(self.run_dir / "admin.sock"))
            s.send(json.dumps({"cmd": cmd, **args}).encode())
            out = json.loads(s.recv(1 << 20))
        if not out["ok"]:
            raise RuntimeError(out["error"])
        return out["result"]

    def client(self) -> AppClient:
        return AppClient(self.run_dir / "app.sock")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run mstackctl against this daemon."""
        env = {**os.environ, "MSTACK_RUN_DIR": str(self.run_dir)}
        return subprocess.run(
            [str(BIN / "mstackctl"), *args], env=env, capture_output=True, text=True, timeout=60
        )

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the orderly teardown; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL: the daemon dies without any teardown, as in a crash."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        stop_process(self.proc)

    def restart(self) -> None:
        """Start a new daemon with the same names (after kill() or stop())."""
        self.proc = self.spawn()
        wait_line(self.proc, "mstackd: ready", timeout=90)

    def spawn(self) -> subprocess.Popen[str]:
        """The daemon's log goes to a file (a pipe nobody reads would block it)."""
        with open(self.run_dir / "mstackd.log", "a") as log:
            return subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=log, text=True)

    def log(self) -> str:
        try:
            return (self.run_dir / "mstackd.log").read_text()
        except OSError:
            return ""

    def wait_until(self, pred: Callable[[], bool], timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.1)
        return pred()


def _force_cleanup(d: Mstackd) -> None:
    """After a daemon that was killed: what its orderly shutdown would have removed."""
    if Path("/run/netns", d.ports_netns).exists():
        subprocess.run(["ip", "netns", "del", d.ports_netns], capture_output=True)
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True)
    for link in json.loads(out.stdout or "[]"):
        if link["ifname"].startswith(d.port_prefix):
            subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True)


@contextlib.contextmanager
def start_mstackd(
    host: RemoteHost | None, pin_root: Path, run_dir: Path, *extra: str
) -> Iterator[Mstackd]:
    name = unique_name()
    d = Mstackd(
        proc=None,  # type: ignore[arg-type]
        argv=[],
        run_dir=run_dir,
        bpf_dir=pin_root / "sw",
        ports_netns=f"{name}p",
        # Port veths are <prefix><id>h: the prefix must leave room for 4 digits in IFNAMSIZ.
        port_prefix=name.replace("-", "")[:10],
        host=host,
    )
    argv = [
        str(BIN / "mstackd"),
        "--run-dir", str(d.run_dir),
        "--bpf-dir", str(d.bpf_dir),
        "--ports-netns", d.ports_netns,
        "--port-prefix", d.port_prefix,
        "--config", "/nonexistent",
        "-v",
    ]  # fmt: skip
    if host is not None:
        argv += ["--attach", host.host_if]
    argv += list(extra)
    d.argv = argv
    d.proc = d.spawn()
    try:
        wait_line(d.proc, "mstackd: ready", timeout=90)
        yield d
    finally:
        d.stop()
        _force_cleanup(d)
        stop_process(d.proc)


@pytest.fixture
def mstackd_factory(bpf_pin_dir: Path) -> Iterator[Callable[..., Mstackd]]:
    """make(host, *extra_args) -> a running mstackd attached to host.host_if (or to nothing).
    Its run directory is reachable by any user (pytest's tmp_path is not), like /run/mstack."""
    with contextlib.ExitStack() as stack:
        n = iter(range(1000))

        def make(host: RemoteHost | None, *extra: str) -> Mstackd:
            i = next(n)
            run_dir = Path(tempfile.mkdtemp(prefix="mst-run-"))
            run_dir.chmod(0o755)
            stack.callback(shutil.rmtree, run_dir, True)
            return stack.enter_context(start_mstackd(host, bpf_pin_dir / f"d{i}", run_dir, *extra))

        yield make


@pytest.fixture
def mstackd(remote_host: RemoteHost, mstackd_factory: Callable[..., Mstackd]) -> Mstackd:
    """A running mstackd attached (native XDP) to the remote host's root-side link."""
    return mstackd_factory(remote_host)


class ReplyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{os.strerror(-status)}: {detail}")
        self.errno = -status
        self.detail = detail


class AppClient:
    """One process's control connection, speaking the protocol from Python."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes, fds: list[int] | None = None) -> None:
        anc = []
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        self.sock.sendmsg([data], anc)

    def recv_raw(self) -> tuple[bytes, list[int]]:
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
        fds: list[int] = []
        for level, ctype, cdata in anc:
            if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata)
                fds.extend(a)
        return data, fds

    def request(
        self, mtype: int, fields: dict[str, Any] | None = None, fds: list[int] | None = None
    ) -> tuple[Any, list[int]]:
        self.seq += 1
        self.send_raw(proto.encode_request(mtype, self.seq, fields), fds)
        data, rfds = self.recv_raw()
        rtype, status, msg = proto.decode_reply(data)
        assert rtype == mtype
        if status:
            for fd in rfds:
                os.close(fd)
            raise ReplyError(status, ffi.string(msg.detail).decode())
        return msg, rfds

    def hello(self, pid: int | None = None) -> Any:
        return self.request(consts.MSTACK_MSG_HELLO, {"pid": pid or os.getpid()})[0]

    def port_open(self, frames: int = 256, ring: int = 128) -> tuple[int, list[int], Any]:
        msg, fds = self.request(consts.MSTACK_MSG_PORT_OPEN, {"frames": frames, "ring_size": ring})
        return int(msg.port_id), fds, msg

    def register(self, sock: socket.socket | int, kind: int, port_id: int = 0) -> int:
        fd = sock if isinstance(sock, int) else sock.fileno()
        msg, _ = self.request(consts.MSTACK_MSG_REGISTER, {"kind": kind, "port_id": port_id}, [fd])
        return int(msg.binding_id)

    def claim(self, binding_id: int, sock: socket.socket) -> None:
        self.request(consts.MSTACK_MSG_CLAIM, {"binding_id": binding_id}, [sock.fileno()])

    def release(self, binding_id: int) -> None:
        self.request(consts.MSTACK_MSG_RELEASE, {"binding_id": binding_id})

    def join(self, binding_id: int, port_id: int) -> None:
        self.request(consts.MSTACK_MSG_GROUP_JOIN, {"binding_id": binding_id, "port_id": port_id})

    def leave(self, binding_id: int, port_id: int) -> None:
        self.request(consts.MSTACK_MSG_GROUP_LEAVE, {"binding_id": binding_id, "port_id": port_id})
