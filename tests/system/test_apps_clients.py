"""Issue 6's acceptance with two more of Debian's programs: `python3 -m http.server` as a server
on this host, fetched from the remote host, and curl as a *client* on this host downloading
from servers in the remote namespace (its outgoing connections listed in the policy's connect
entries). Every body sha256-checked; each scenario on the kernel (must pass) and under
mstack-run (UTCP proof, or a skip while the shim has no UTCP): appkit.py says how."""

from __future__ import annotations

import random
import subprocess

import pytest

from appkit import (
    CURL,
    CURL_MAX_S,
    GATE_PORT,
    PY3,
    SIZES,
    UPSTREAM_PORT,
    Launch,
    Proof,
    Watch,
    by_size,
    check_fetches,
    curl_argv,
    held_connection,
    launch,  # noqa: F401
    make_docroot,
    need,
    parse_curl,
    remote_curl,
    remote_http_server,
    sha256,
    sha256_file,
    wait_listening,
)
from testbed.netns import stop_process, wait_line

pytestmark = pytest.mark.system

PY_PORT = 8090


def test_python_http_server(launch: Launch) -> None:  # noqa: F811
    """Debian's http.server (ThreadingHTTPServer) with --protocol HTTP/1.1, so that keep-alive
    is one connection for several files."""
    need(PY3)
    rh = launch.host
    files = make_docroot(launch.dir / "www", SIZES)
    launch.write_policy({"pyhttp": {"exe": ["python3"], "listen": [f"{rh.host_ip}:{PY_PORT}"]}})
    err = launch.dir / "http-server.stderr"
    watches = [Watch("http.server's listener", rh.remote_ip, utcp=launch.shim,
                     local_port=PY_PORT)]  # fmt: skip
    cmd = [PY3, "-m", "http.server", "-b", rh.host_ip, "-d", launch.dir / "www",
           "-p", "HTTP/1.1", str(PY_PORT)]  # fmt: skip
    with open(err, "wb") as errf:
        p = subprocess.Popen(launch.argv("pyhttp", cmd), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=errf, env=launch.env())  # fmt: skip
    try:
        wait_listening(rh.host_ip, PY_PORT, p)
        with Proof(launch, watches, [err]) as proof:
            base = f"http://{rh.host_ip}:{PY_PORT}"
            for keepalive in (True, False):
                got = remote_curl(rh, base, by_size(files), launch.dir / "out", keepalive)
                check_fetches(got, files, keepalive)
            with held_connection(rh, rh.host_ip, PY_PORT, "/64k.bin"):
                proof.sample_held()
        assert p.poll() is None, err.read_text()
    finally:
        stop_process(p)
    proof.verify()


# Remote: a server that sends half of a body, says "stalled", and sends the rest when told — so
# the client's connection is certainly open while ss looks at this host's table.
GATE = r"""
import random, socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = random.Random(9).randbytes(n)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((ip, port))
ls.listen(1)
ls.settimeout(60)
print("listening", flush=True)
c, _ = ls.accept()
c.settimeout(60)
req = b""
while b"\r\n\r\n" not in req:
    d = c.recv(4096)
    if not d:
        raise SystemExit("end of stream in the request")
    req += d
head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n
c.sendall(head + body[: n // 2])
print("stalled", flush=True)
sys.stdin.readline()
c.sendall(body[n // 2 :])
c.close()
print("done", flush=True)
"""
GATE_SIZE = 1 << 20


def test_curl_client(launch: Launch) -> None:  # noqa: F811
    """curl on this host, its connections to the remote host's servers listed for UTCP:
    several files from http.server (keep-alive and one connection each), then one download
    held half-way by a gate server while ss looks."""
    need(CURL)
    rh = launch.host
    root = launch.dir / "remote-www"
    files = make_docroot(root, SIZES, seed=8)
    launch.write_policy({"curl": {"exe": ["curl"], "connect": [
        f"{rh.remote_ip}/32:{UPSTREAM_PORT}", f"{rh.remote_ip}/32:{GATE_PORT}"]}})  # fmt: skip
    watches = [Watch("curl's connections", rh.remote_ip, utcp=launch.shim)]
    err = launch.dir / "curl.stderr"
    out = launch.dir / "out"
    out.mkdir()
    with remote_http_server(rh, root), Proof(launch, watches, [err]) as proof:
        base = f"http://{rh.remote_ip}:{UPSTREAM_PORT}"
        for keepalive in (True, False):
            paths = by_size(files)
            argv = launch.argv("curl", curl_argv(base, paths, out, keepalive))
            with open(err, "ab") as errf:
                limit = CURL_MAX_S * len(paths) + 30
                cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=errf, text=True,
                                    env=launch.env(), timeout=limit)  # fmt: skip
            assert cp.returncode == 0, f"curl exited {cp.returncode}: {err.read_text()}"
            check_fetches(parse_curl(cp.stdout, paths, out), files, keepalive)
        gate = rh.python_popen(GATE, rh.remote_ip, str(GATE_PORT), str(GATE_SIZE),
                               ready="listening", stdin=subprocess.PIPE)  # fmt: skip
        url = f"http://{rh.remote_ip}:{GATE_PORT}/gate"
        with open(err, "ab") as errf:
            curl = subprocess.Popen(
                launch.argv("curl", [CURL, "-sS", "--max-time", "60", url, "-o", out / "gate"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                env=launch.env())  # fmt: skip
        try:
            wait_line(gate, "stalled", 30)
            proof.sample_held()
            assert gate.stdin is not None
            gate.stdin.write("go\n")
            gate.stdin.flush()
            wait_line(gate, "done", 30)
            assert curl.wait(timeout=60) == 0, err.read_text()
        finally:
            stop_process(curl)
            stop_process(gate)
    assert sha256_file(out / "gate") == sha256(random.Random(9).randbytes(GATE_SIZE))
    proof.verify()
