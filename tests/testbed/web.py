"""What the application tests (tests/appkit.py) and `make demo` (scripts/demo_kit.py) share to
serve and fetch files: the programs, a docroot of pseudo-random files with their digests, the
remote script that holds one keep-alive connection open. No pytest here: the demo imports it."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's entry points: mstackd, mstackctl, mstack-run
NGINX = Path("/usr/sbin/nginx")
CURL = Path("/usr/bin/curl")
# nginx's temporary directories, each given a path under the test's prefix
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def make_docroot(root: Path, sizes: dict[str, int], seed: int = 6) -> dict[str, str]:
    """Files of pseudo-random bytes, readable by nginx's workers; returns {"/name": sha256}."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    out = {}
    for name, size in sizes.items():
        data = rng.randbytes(size)
        p = root / name
        p.write_bytes(data)
        p.chmod(0o644)
        out[f"/{name}"] = hashlib.sha256(data).hexdigest()
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Remote side: connect, one keep-alive GET, read the whole response, say "open" and then
# "port N" (its local port), hold the connection until stdin says so, then one more GET on it
# (the connection still works) and "done".
HOLD = r"""
import socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=20)

def get():
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise SystemExit("end of stream in the headers")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        d = s.recv(65536)
        if not d:
            raise SystemExit("end of stream in the body")
        body += d
    assert head.split()[1] == b"200", head

get()
print("open", flush=True)
print("port", s.getsockname()[1], flush=True)
sys.stdin.readline()
get()
print("done", flush=True)
"""
