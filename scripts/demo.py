"""`make demo`: what MultiStack does today, end to end, on a small test bed of its own.

A "remote host" in a network namespace reaches this host over a veth pair. mstackd attaches the
switch to that link. On this host:
  * nginx serves on TCP port 8080 — started through mstack-run, it stays on the kernel stack
    (the shim does not carry user-level sockets yet, and mstack-run says so);
  * mstack-responder, a frame-level peer with no TCP stack, takes a port from mstackd, registers
    TCP port 7000 and answers handshakes and echoes on its own AF_XDP port.
The remote host fetches pages from nginx, talks to the responder, and pings; mstackctl shows
what the switch did. Everything created is removed, pass or fail."""

from __future__ import annotations

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

ECHO = r"""
import socket, sys
ok = 0
for i in range(int(sys.argv[3])):
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        msg = f"hello over a user-level port #{i}".encode()
        s.sendall(msg)
        ok += s.recv(200) == msg
print(ok)
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
    responder_exe = BUILD / "bin" / "mstack-responder"
    if not responder_exe.exists():
        say(f"{responder_exe} is missing: run make build")
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
            responder = subprocess.Popen(
                [str(responder_exe), "--run-dir", str(run_dir),
                 "--listen", f"{host.host_ip}:{USER_PORT}", "--max-seconds", "120"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(responder)
            assert responder.stdout is not None
            ready = responder.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise RuntimeError("mstack-responder did not start")
            say(f"mstack-responder (pid {responder.pid}) on its own AF_XDP port {ready[1]} "
                f"at {host.host_ip}:{USER_PORT}")  # fmt: skip
            ok = 0
            for i in range(REQUESTS):
                name = list(SIZES)[i % len(SIZES)]
                r = host.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                     f"http://{host.host_ip}:{NGINX_PORT}/{name}"], check=False, timeout=30,
                )  # fmt: skip
                code, size = [*r.stdout.split(), "", ""][:2]
                ok += code == "200" and int(size or 0) == SIZES[name]
            echoed = int(host.python(ECHO, host.host_ip, str(USER_PORT), "5").stdout)
            ping = host.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", host.host_ip],
                            check=False, timeout=30)  # fmt: skip
            stats = json.loads(ctl(run_dir, "stats", "--json"))
            say()
            say(f"  from the remote host: nginx answered {ok}/{REQUESTS} requests in full "
                f"(kernel stack)")  # fmt: skip
            say(f"  from the remote host: the user-level port echoed {echoed}/5 connections")
            say(f"  ping (ICMP, left to the kernel): "
                f"{'answered' if ping.returncode == 0 else 'FAILED'}")  # fmt: skip
            say()
            say("$ mstackctl bindings")
            say(ctl(run_dir, "bindings").rstrip())
            say("$ mstackctl stats")
            say(ctl(run_dir, "stats").rstrip())
            good = (
                ok == REQUESTS
                and echoed == 5
                and ping.returncode == 0
                and stats["ingress"]["to_port_new"] >= 5
                and stats["egress"]["not_bound"] == 0
            )
            say()
            say(
                "result: "
                + (
                    "OK — the switch gave port 7000's traffic to the user-level port "
                    "and everything else to the kernel"
                    if good
                    else "FAILED"
                )
            )
            say()
            say(
                "what comes next: UTCP (the user-level TCP stack, in progress in utcp_c/) on these "
                "ports, mstack-httpd, and `mstack-run nginx` with its listed sockets on UTCP."
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
