"""`make demo`'s scenario against an *installed* MultiStack (the .deb), never the source tree.

Every MultiStack program run here comes from ROOT (a chroot where the package is installed, or
/ for a host install): mstackd is started from the ExecStart line of ROOT's mstackd.service
(plus test-bed names, so it cannot clash with a real daemon), mstack-responder serves a TCP
port on its own AF_XDP port, a remote host (a network namespace of the test bed) opens
connections to it, mstack-run runs a program with the packaged shim, and mstackctl shows what
the switch did and what `doctor` finds. Only the test bed itself (namespace, veth pair, the
remote client) comes from the source tree's tests/. Everything it creates is removed, pass or
fail; it exits 0 when every step passed.

  python3 packaging/installed_demo.py --root /path/to/chroot [--caps CAP,CAP,...]

--caps runs the daemon with its capability bounding set reduced to those (how the unit's
CapabilityBoundingSet= was checked); mstack-responder runs as `nobody`, an unprivileged
application of another user, as nginx's workers would be (--responder-user)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "tests"))

from testbed.netns import RemoteHost, remote_host_cm, unique_name, wait_line  # noqa: E402

USER_PORT = 7000
SWEEP_WAIT = 3.0  # > mstackd's default sweep_interval (2 s)
ECHO = r"""
import socket, sys
ok = 0
for i in range(int(sys.argv[3])):
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        msg = f"hello from the installed package #{i}".encode()
        s.sendall(msg)
        ok += s.recv(200) == msg
print(ok)
"""
# Only installed locations: nothing of the source tree or of a venv is on these paths.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Installed:
    """Runs installed programs: `chroot ROOT CMD` (or CMD itself when ROOT is /), with a clean
    environment that points only at installed locations."""

    def __init__(self, root: Path, caps: str | None, user: str | None = None) -> None:
        self.root = root
        self.caps = caps
        self.user = user

    def argv(self, cmd: list[str], caps: bool = False) -> list[str]:
        out = cmd
        if caps and self.caps is not None:
            bset = "-all" + "".join(f",+{c.strip().lower().removeprefix('cap_')}"
                                    for c in self.caps.split(",") if c.strip())  # fmt: skip
            out = ["setpriv", f"--bounding-set={bset}", "--", *out]
        if self.root != Path("/"):
            out = ["chroot", str(self.root), *out]
        return out

    def as_user(self) -> list[str]:
        """setpriv to self.user (uid and primary gid from ROOT's /etc/passwd), or nothing."""
        if not self.user:
            return []
        for line in (self.root / "etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == self.user:
                return ["setpriv", f"--reuid={f[2]}", f"--regid={f[3]}", "--clear-groups"]
        raise RuntimeError(f"no user {self.user} in {self.root}/etc/passwd")

    def run(
        self, cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(cmd), env={**CLEAN_ENV, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def exec_start(self) -> list[str]:
        unit = self.root / "lib/systemd/system/mstackd.service"
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                return shlex.split(line.removeprefix("ExecStart="))
        raise RuntimeError(f"{unit}: no ExecStart line")


def stop(p: subprocess.Popen[str], timeout: float = 20) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@contextlib.contextmanager
def daemon(
    inst: Installed, host: RemoteHost, run_dir: Path, log: Path
) -> Iterator[subprocess.Popen[str]]:
    """mstackd from the unit's ExecStart line, attached to the test bed's link, with test-bed
    names for its pins, ports namespace and port veths (the leak check knows them)."""
    name = unique_name()
    argv = [
        *inst.exec_start(),
        "--attach", host.host_if,
        "--run-dir", str(run_dir),
        "--bpf-dir", f"/sys/fs/bpf/{name}-pkg",
        "--ports-netns", f"{name}p",
        "--port-prefix", name.replace("-", "")[:10],
        "-v",
    ]  # fmt: skip
    say("$ " + " ".join(argv))
    with open(log, "w") as f:
        p = subprocess.Popen(inst.argv(argv, caps=True), env=CLEAN_ENV, stdout=subprocess.PIPE,
                             stderr=f, text=True)  # fmt: skip
    try:
        wait_line(p, "mstackd: ready", timeout=30)
        yield p
    finally:
        stop(p)
        with contextlib.suppress(OSError):
            os.rmdir(f"/sys/fs/bpf/{name}-pkg")


NGINX_PORT = 8080
FETCH = r"""
import sys, urllib.request
ok = 0
for i in range(int(sys.argv[2])):
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        ok += r.status == 200 and len(r.read()) == int(sys.argv[3])
print(ok)
"""


def nginx_step(inst: Installed, host: RemoteHost, env: dict[str, str]) -> list[str]:
    """nginx (Debian's, in ROOT) through the installed mstack-run, with the packaged shim in
    it (MSTACK_DEBUG=1: master and workers announce it); the remote host fetches a page. It
    stays on the kernel stack: the shim carries no UTCP yet."""
    work = Path("/tmp/mstack-nginx-demo")  # inside ROOT
    real = inst.root / work.relative_to("/")
    (real / "www").mkdir(parents=True, exist_ok=True)
    (real / "www/index.html").write_bytes(b"x" * 1024)
    (real / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
        f"events {{ worker_connections 64; }}\nhttp {{ access_log off; "
        f"client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; "
        f"fastcgi_temp_path {work}/tmp; uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp; "
        f"server {{ listen {host.host_ip}:{NGINX_PORT}; root {work}/www; }} }}\n"
    )
    failures: list[str] = []
    p = subprocess.Popen(
        inst.argv(["mstack-run", "--", "nginx", "-c", f"{work}/nginx.conf", "-p", str(work)]),
        env={**CLEAN_ENV, **env, "MSTACK_DEBUG": "1"}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://{host.host_ip}:{NGINX_PORT}/index.html"
        got = 0
        for _ in range(50):
            r = host.python(FETCH, url, "5", "1024", check=False)
            if r.returncode == 0:
                got = int(r.stdout)
                break
            time.sleep(0.2)
        say(f"nginx through the installed mstack-run: the remote host fetched {got}/5 pages "
            "(kernel stack)")  # fmt: skip
        if got != 5:
            failures.append(f"nginx: {got}/5 pages")
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGQUIT)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate(timeout=10)
        shutil.rmtree(real, ignore_errors=True)
    shims = [line for line in err.splitlines() if line.startswith("libmstack: loaded")]
    say(f"  the packaged shim announced itself in {len(shims)} nginx process(es); mstack-run "
        "said:")  # fmt: skip
    for line in err.splitlines():
        if line.startswith("mstack-run:"):
            say(f"  {line}")
    if not shims:
        failures.append(f"nginx: no shim announcement: {err[-2000:]}")
    return failures


def scenario(inst: Installed, host: RemoteHost) -> list[str]:
    """The demo's steps; returns the failures (empty: all good)."""
    failures: list[str] = []
    # The run directory the unit's RuntimeDirectory= would make, inside ROOT.
    run_dir = Path("/run/mstack-pkgtest")
    real_run_dir = inst.root / run_dir.relative_to("/")
    real_run_dir.mkdir(mode=0o755, exist_ok=True)
    log = Path(f"/tmp/mstackd-pkgtest-{os.getpid()}.log")
    env = {"MSTACK_RUN_DIR": str(run_dir)}
    try:
        with daemon(inst, host, run_dir, log) as d:
            say(f"mstackd (pid {d.pid}, installed) attached the switch to {host.host_if}")
            r = inst.run(["mstackctl", "status", "--json"], env)
            st = json.loads(r.stdout) if r.returncode == 0 else {}
            if [n["iface"] for n in st.get("nics", [])] != [host.host_if]:
                failures.append(f"mstackctl status: {r.stdout} {r.stderr}")
            as_user = inst.as_user()
            resp = subprocess.Popen(
                inst.argv([*as_user, "mstack-responder", "--run-dir", str(run_dir),
                           "--listen", f"{host.host_ip}:{USER_PORT}", "--max-seconds", "60"]),
                env=CLEAN_ENV, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert resp.stdout is not None
                ready = resp.stdout.readline().split()
                if not ready or ready[0] != "ready":
                    stop(resp)
                    failures.append(f"mstack-responder did not start (status {resp.returncode})")
                else:
                    say(f"mstack-responder (pid {resp.pid}, installed, user "
                        f"{inst.user or 'root'}) on AF_XDP port {ready[1]}")  # fmt: skip
                    # Past a claim sweep: the daemon must still see the responder hold its
                    # socket (/proc/PID/fd of another user's process).
                    time.sleep(SWEEP_WAIT)
                    echoed = int(host.python(ECHO, host.host_ip, str(USER_PORT), "5").stdout)
                    say(f"  from the remote host: the user-level port echoed {echoed}/5")
                    if echoed != 5:
                        failures.append(f"echo: {echoed}/5")
                    r = inst.run(["mstackctl", "stats", "--json"], env)
                    stats = json.loads(r.stdout)
                    if stats["ingress"]["to_port_new"] < 5:
                        failures.append(f"switch counters: {stats['ingress']}")
                    say("$ mstackctl bindings")
                    say(inst.run(["mstackctl", "bindings"], env).stdout.rstrip())
            finally:
                stop(resp)
                if resp.stdout is not None:
                    resp.stdout.close()
            # mstack-run with the packaged shim, the daemon reachable.
            r = inst.run(["mstack-run", "--", "/bin/true"], {**env, "MSTACK_DEBUG": "1"})
            say("$ MSTACK_DEBUG=1 mstack-run -- /bin/true")
            say((r.stdout + r.stderr).rstrip())
            if r.returncode != 0 or "libmstack: loaded" not in r.stderr:
                failures.append("mstack-run did not preload the packaged shim")
            if (inst.root / "usr/sbin/nginx").exists():
                failures += nginx_step(inst, host, env)
            r = inst.run(["mstackctl", "doctor", "--iface", host.host_if], env, timeout=120)
            say(f"$ mstackctl doctor --iface {host.host_if}   (exit {r.returncode})")
            say(r.stdout.rstrip())
            if r.returncode != 0 or "mstackd reachable" not in r.stdout:
                failures.append(f"mstackctl doctor: {r.stdout} {r.stderr}")
        if d.returncode != 0:
            failures.append(f"mstackd exited with status {d.returncode} on SIGTERM")
    finally:
        with contextlib.suppress(OSError):
            real_run_dir.rmdir()
        if failures:
            with contextlib.suppress(OSError):
                say("--- mstackd log ---\n" + log.read_text())
        log.unlink(missing_ok=True)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/"), help="where the package is installed")
    ap.add_argument("--caps", help="bounding set for mstackd, e.g. CAP_NET_ADMIN,CAP_BPF")
    ap.add_argument(
        "--responder-user",
        default="nobody",
        help="user mstack-responder runs as (default nobody; '' for root)",
    )
    a = ap.parse_args()
    if os.geteuid() != 0:
        say("needs root (network namespaces, XDP, AF_XDP)")
        return 1
    inst = Installed(a.root.resolve(), a.caps, a.responder_user or None)
    t0 = time.monotonic()
    with remote_host_cm() as host:
        say(f"test bed: remote host {host.remote_ip} (namespace {host.ns}); this host "
            f"{host.host_ip} on {host.host_if}")  # fmt: skip
        failures = scenario(inst, host)
    for f in failures:
        say(f"FAILED: {f}")
    say(f"installed demo: {'OK' if not failures else 'FAILED'} ({time.monotonic() - t0:.1f} s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
