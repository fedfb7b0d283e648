"""`make demo`: what MultiStack does today, end to end, on a small test bed of its own.

A "remote host" in a network namespace reaches this host over a veth pair. mstackd attaches the
switch to that link. On this host:
  * mstack-httpd, the paper's minimal web server, runs on UTCP — the user-level TCP stack — on
    its own AF_XDP port from mstackd, at TCP port 7000;
  * nginx serves the same files on TCP port 8080 — started through mstack-run, it stays on the
    kernel stack (the shim does not carry UTCP yet, and mstack-run and the shim say so).
The remote host fetches every file from both and checks them byte for byte, and pings; mstackctl
shows what the switch did, and `ss` that the kernel held none of UTCP's connections. Everything
created is removed, pass or fail."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mstack_testkit import start_mstackd  # noqa: E402
from testbed.netns import remote_host_cm  # noqa: E402

BIN = Path(sys.executable).parent
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", ROOT / "build"))
NGINX_PORT, USER_PORT = 8080, 7000
REQUESTS = 10
SIZES = {"index.html": 1024, "16k.bin": 16384}

FETCH = r"""
import hashlib, json, subprocess, sys, time
host, port = sys.argv[1], sys.argv[2]
want = json.loads(sys.argv[3])
ok, t = 0, time.monotonic()
for i in range(int(sys.argv[4])):
    for name, digest in want.items():
        out = subprocess.run(["curl", "-s", "--max-time", "10", f"http://{host}:{port}/{name}"],
                             capture_output=True).stdout
        ok += hashlib.sha256(out).hexdigest() == digest
print(ok, round(time.monotonic() - t, 2))
"""


HOLD = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"GET /index.html HTTP/1.1\r\nHost: demo\r\n\r\n")
s.recv(65536)
print("open", flush=True)
sys.stdin.readline()
"""


def say(msg: str = "") -> None:
    print(msg, flush=True)


def nginx_conf(prefix: Path, ip: str) -> Path:
    conf = prefix / "nginx.conf"
    temp = "\n".join(
        f"    {k}_temp_path {prefix}/tmp;"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
{temp}
    server {{ listen {ip}:{NGINX_PORT}; root {prefix}/www; }}
}}
"""
    )
    return conf


def wait_listening(ip: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((ip, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nginx did not listen on {ip}:{port} within {timeout} s")


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> None:  # type: ignore[type-arg]
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def ctl(run_dir: Path, *args: str) -> str:
    env = {**os.environ, "MSTACK_RUN_DIR": str(run_dir)}
    return subprocess.run(
        [str(BIN / "mstackctl"), *args], env=env, capture_output=True, text=True, timeout=30
    ).stdout


def main() -> int:
    if os.geteuid() != 0:
        say("make demo needs root (network namespaces, XDP, AF_XDP)")
        return 1
    if not (BUILD / "bin" / "mstack-httpd").exists():
        say(f"{BUILD / 'bin' / 'mstack-httpd'} is missing: run make build")
        return 1
    say("== MultiStack demo ==")
    work = Path(tempfile.mkdtemp(prefix="mstack-demo-"))
    work.chmod(0o755)
    procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
    pin_root = Path("/sys/fs/bpf") / f"mstack-demo-{os.getpid()}"
    try:
        (work / "www").mkdir()
        (work / "tmp").mkdir()
        run_dir = work / "run"
        run_dir.mkdir()
        for name, size in SIZES.items():
            (work / "www" / name).write_bytes(os.urandom(size // 2).hex().encode()[:size])
        with (
            remote_host_cm() as host,
            start_mstackd(host, pin_root, run_dir) as daemon,
        ):
            say(f"test bed: remote host {host.remote_ip} (namespace {host.ns}); this host "
                f"{host.host_ip} on {host.host_if}")  # fmt: skip
            say(f"mstackd (pid {daemon.proc.pid}) attached the switch to {host.host_if}")
            nginx = subprocess.Popen(
                [str(BIN / "mstack-run"), "--", "nginx", "-c",
                 str(nginx_conf(work, host.host_ip)), "-p", str(work)],
                env={**os.environ, "MSTACK_RUN_DIR": str(run_dir)},
            )  # fmt: skip
            procs.append(nginx)
            wait_listening(host.host_ip, NGINX_PORT, nginx, 15)
            say(f"nginx (pid {nginx.pid}) on the kernel stack at {host.host_ip}:{NGINX_PORT}")
            httpd = subprocess.Popen(
                [str(BUILD / "bin" / "mstack-httpd"), "--run-dir", str(run_dir),
                 "--listen", f"{host.host_ip}:{USER_PORT}", "--root", str(work / "www")],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            procs.append(httpd)
            assert httpd.stdout is not None
            lines = [httpd.stdout.readline().strip() for _ in range(2)]
            if lines[-1] != "ready":
                raise RuntimeError("mstack-httpd did not start")
            say(f"mstack-httpd (pid {httpd.pid}) on UTCP, on its own AF_XDP port, at "
                f"{host.host_ip}:{USER_PORT}")  # fmt: skip
            digests = {n: hashlib.sha256((work / "www" / n).read_bytes()).hexdigest()
                       for n in SIZES}  # fmt: skip
            results = {}
            for label, port in (
                ("mstack-httpd on UTCP", USER_PORT),
                ("nginx on the kernel", NGINX_PORT),
            ):
                r = host.python(FETCH, host.host_ip, str(port), json.dumps(digests),
                                str(REQUESTS), timeout=120)  # fmt: skip
                got, secs = r.stdout.split()
                results[label] = (int(got), float(secs))
            ping = host.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", host.host_ip],
                            check=False, timeout=30)  # fmt: skip
            kernel_conns = subprocess.run(
                ["ss", "-tnH", "state", "established", f"sport = :{USER_PORT}"],
                capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            stats = json.loads(ctl(run_dir, "stats", "--json"))
            total = REQUESTS * len(SIZES)
            say()
            for label, (got, secs) in results.items():
                say(f"  from the remote host: {label}: {got}/{total} files byte-exact "
                    f"({secs} s, curl one request per connection)")  # fmt: skip
            say(f"  kernel connections on port {USER_PORT}: "
                f"{kernel_conns or 'none — UTCP carried them'}")  # fmt: skip
            say(f"  ping (ICMP, left to the kernel): "
                f"{'answered' if ping.returncode == 0 else 'FAILED'}")  # fmt: skip
            say()
            # One connection held open from the remote host, for `mstackctl conns` to show.
            holder = host.python_popen(HOLD, host.host_ip, str(USER_PORT), ready="open",
                                       stdin=subprocess.PIPE)  # fmt: skip
            procs.append(holder)
            deadline = time.monotonic() + 5  # mstack-httpd publishes them every 250 ms or so
            while time.monotonic() < deadline and "ESTABLISHED" not in ctl(run_dir, "conns"):
                time.sleep(0.2)
            say("$ mstackctl conns")
            say(ctl(run_dir, "conns").rstrip())
            say("$ mstackctl bindings")
            say(ctl(run_dir, "bindings").rstrip())
            say("$ mstackctl stats")
            say(ctl(run_dir, "stats").rstrip())
            good = (
                all(got == total for got, _ in results.values())
                and not kernel_conns
                and ping.returncode == 0
                and stats["ingress"]["to_port_new"] >= total
                and stats["egress"]["not_bound"] == 0
            )
            say()
            say(
                "result: "
                + (
                    "OK — a real web server ran on UTCP behind the switch, while the kernel "
                    "kept everything else"
                    if good
                    else "FAILED"
                )
            )
            say()
            say(
                "what comes next: UTCP inside the shim, so that `mstack-run nginx` puts nginx's "
                "listed sockets on UTCP too; the HTTP benchmark (make bench)."
            )
            for p in procs:
                stop(p, signal.SIGQUIT if p is nginx else signal.SIGTERM)
            return 0 if good else 1
    finally:
        for p in procs:
            stop(p)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            pin_root.rmdir()


if __name__ == "__main__":
    sys.exit(main())
