"""The pipeline is real: an object from daemon/bpf/ is loaded by mstackd's Python code through
libbpf onto the test bed's root-side link, its counter for a chosen TCP port rises when the
remote host sends to that port, and ICMP and other ports still reach the kernel."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mstackd import libbpf
from mstackd.probe import PortCounter

pytestmark = pytest.mark.system

WATCHED, OTHER, IDLE = 8080, 8081, 9090

CLIENT = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with socket.create_connection((host, port), timeout=10) as s:
        msg = f"hello {port} #{i}".encode()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        assert got == msg, (got, msg)
print("ok")
"""


@contextmanager
def echo_server(ip: str, port: int) -> Iterator[list[int]]:
    """A kernel TCP echo server; yields a list that counts served connections."""
    served = [0]
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(16)
    ls.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with c:
                c.settimeout(5)
                try:
                    data = c.recv(4096)
                    c.sendall(data)
                    served[0] += 1
                except OSError:
                    pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield served
    finally:
        stop.set()
        t.join(5)
        ls.close()


def run_client(remote, port: int, n: int) -> None:  # type: ignore[no-untyped-def]
    out = remote.run(
        [sys.executable, "-c", CLIENT, remote.host_ip, str(port), str(n)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_counter_rises_for_watched_port_and_kernel_serves_everything(remote_host, mode) -> None:  # type: ignore[no-untyped-def]
    with PortCounter(remote_host.host_if, mode=mode) as pc:
        assert libbpf.xdp_query_id(remote_host.host_ifindex) == pc.prog_id
        for port in (WATCHED, IDLE):
            pc.watch(port)
        with (
            echo_server(remote_host.host_ip, WATCHED) as s1,
            echo_server(remote_host.host_ip, OTHER) as s2,
        ):
            run_client(remote_host, WATCHED, 5)
            run_client(remote_host, OTHER, 5)
            ping = remote_host.run(
                ["ping", "-c", "3", "-i", "0.2", "-W", "2", remote_host.host_ip],
                capture_output=True,
                text=True,
                timeout=30,
            )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # The kernel served every connection on both ports: the program passes everything.
        assert s1[0] == 5 and s2[0] == 5
        watched = pc.count(WATCHED)
        # Each connection: SYN, ACK, data, FIN-ish segments — at least 3 frames each.
        assert watched.packets >= 15
        assert watched.bytes >= watched.packets * 54
        assert pc.count(IDLE).packets == 0
        totals = pc.totals()
        assert totals["watched"] == watched.packets
        # Frames to the other port are TCP but not watched; ICMP is neither.
        assert totals["tcp"] >= watched.packets + 15
        assert totals["frames"] >= totals["tcp"] + 3
        assert totals["bad_ip"] == 0
    # Leaving the context detached the program.
    assert libbpf.xdp_query_id(remote_host.host_ifindex) == 0


def test_refuses_to_replace_a_foreign_program(remote_host) -> None:  # type: ignore[no-untyped-def]
    with PortCounter(remote_host.host_if) as first:
        with pytest.raises(libbpf.BpfError, match="already has an XDP program"):
            PortCounter(remote_host.host_if)
        # The refusal left the first program in place.
        assert libbpf.xdp_query_id(remote_host.host_ifindex) == first.prog_id


def test_watch_rejects_bad_ports(remote_host) -> None:  # type: ignore[no-untyped-def]
    with PortCounter(remote_host.host_if) as pc:
        for bad in (0, 65536, -1):
            with pytest.raises(ValueError):
                pc.watch(bad)
        with pytest.raises(KeyError):
            pc.count(1234)
