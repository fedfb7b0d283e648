"""`make demo`: what MultiStack can show today, end to end, on a small test bed of its own.

A "remote host" in a network namespace reaches this host over a veth pair. nginx serves on this
host through mstack-run (on the kernel stack for now: the shim does not carry user-level sockets
yet, and mstack-run says so). mstackd's libbpf binding loads the switch's first BPF program on
the link; the remote host fetches pages and pings; the program counted the watched port's
frames while the kernel still served everything. Everything created is removed, pass or fail."""

from __future__ import annotations

import contextlib
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

from mstackd.probe import PortCounter  # noqa: E402
from testbed.netns import remote_host_cm  # noqa: E402

PORT = 8080
REQUESTS = 20
SIZES = {"index.html": 1024, "16k.bin": 16384}


def say(msg: str = "") -> None:
    print(msg, flush=True)


def nginx_conf(prefix: Path, ip: str) -> Path:
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen {ip}:{PORT};
        root {prefix}/www;
    }}
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


def main() -> int:
    if os.geteuid() != 0:
        say("make demo needs root (network namespaces, XDP)")
        return 1
    say("== MultiStack demo ==")
    prefix = Path(tempfile.mkdtemp(prefix="mstack-demo-"))
    nginx: subprocess.Popen[bytes] | None = None
    try:
        prefix.chmod(0o755)
        (prefix / "www").mkdir()
        (prefix / "tmp").mkdir()
        for name, size in SIZES.items():
            (prefix / "www" / name).write_bytes(os.urandom(size // 2).hex().encode()[:size])
        with remote_host_cm() as host:
            say(
                f"test bed: remote host in namespace {host.ns} at {host.remote_ip}, "
                f"this host at {host.host_ip} on {host.host_if}"
            )
            bindir = Path(sys.executable).parent
            nginx = subprocess.Popen(
                [
                    str(bindir / "mstack-run"),
                    "--",
                    "nginx",
                    "-c",
                    str(nginx_conf(prefix, host.host_ip)),
                    "-p",
                    str(prefix),
                ],
                env={**os.environ, "MSTACK_RUN_DIR": str(prefix / "run")},
            )
            wait_listening(host.host_ip, PORT, nginx, 15)
            say(f"nginx (pid {nginx.pid}) listening on {host.host_ip}:{PORT}")
            with PortCounter(host.host_if, mode="native") as counter:
                counter.watch(PORT)
                say(
                    f"switch program xdp_count attached to {host.host_if} (native XDP, "
                    f"prog id {counter.prog_id}), watching TCP port {PORT}"
                )
                ok = 0
                for i in range(REQUESTS):
                    name = list(SIZES)[i % len(SIZES)]
                    r = host.run(
                        [
                            "curl",
                            "-s",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code} %{size_download}",
                            f"http://{host.host_ip}:{PORT}/{name}",
                        ],
                        check=False,
                        timeout=30,
                    )
                    code, size = [*r.stdout.split(), "", ""][:2]
                    if code == "200" and int(size or 0) == SIZES[name]:
                        ok += 1
                ping = host.run(
                    ["ping", "-c", "3", "-i", "0.2", "-W", "2", host.host_ip],
                    check=False,
                    timeout=30,
                )
                count = counter.count(PORT)
                totals = counter.totals()
            say()
            say(f"  HTTP requests from the remote host answered in full: {ok}/{REQUESTS}")
            say(
                f"  frames to TCP port {PORT} counted by the switch program: {count.packets} "
                f"({count.bytes} bytes)"
            )
            say(
                f"  all frames seen on the link: {totals['frames']} "
                f"(TCP {totals['tcp']}, bad IPv4 {totals['bad_ip']})"
            )
            say(
                f"  ping from the remote host (ICMP, left to the kernel): "
                f"{'answered' if ping.returncode == 0 else 'FAILED'}"
            )
            say()
            good = ok == REQUESTS and count.packets >= REQUESTS * 3 and ping.returncode == 0
            say(
                "result: "
                + (
                    "OK — the BPF pipeline is real and the kernel still serves "
                    "everything it was not asked to give away"
                    if good
                    else "FAILED"
                )
            )
            say()
            say(
                "what comes next: the switch proper (demux into per-application AF_XDP ports, "
                "egress validation, mstackd's namespace registry), UTCP on those ports, "
                "mstack-httpd, and `mstack-run nginx` with its listed sockets on UTCP."
            )
            return 0 if good else 1
    finally:
        if nginx is not None and nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
