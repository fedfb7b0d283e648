"""Building blocks of `make demo` (scripts/demo.py) that need no pytest.

tests/appkit.py and tests/mstack_testkit.py do the same for the acceptance tests, but import
pytest (fixtures, skips); the demo runs on a machine that only has the product's runtime
dependencies, so what it needs from them is here, in the smallest form that serves the demo.
The test bed itself (namespaces, veth, run-unique names, stopping processes by pid) comes from
tests/testbed/netns.py, which is plain Python and imported as it is."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from testbed.netns import (  # noqa: E402
    RemoteHost,
    del_link,
    del_netns,
    ip_json,
    stop_process,
    unique_name,
    unpin_tree,
    wait_line,
)
from testbed.web import (  # noqa: E402  (re-exported for scripts/demo.py)
    BIN,
    CURL,
    HOLD,
    NGINX,
    TEMP_KINDS,
    sha256_file,
)

WRK = Path("/usr/bin/wrk")
BPFFS = Path("/sys/fs/bpf")


class DemoError(RuntimeError):
    """A step that cannot go on; its message says what failed."""


# -- bpffs and mstackd -----------------------------------------------------------------------


def bpffs_mounted() -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1:3] == [str(BPFFS), "bpf"] for line in f)


@contextlib.contextmanager
def bpffs() -> Iterator[None]:
    """/sys/fs/bpf as a bpffs (mstackd pins its maps there); unmounted again if mounted here."""
    if bpffs_mounted():
        yield
        return
    subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(BPFFS)], capture_output=True)


@dataclass
class Daemon:
    """An mstackd of the demo's: its own run directory, BPF pins, ports namespace and port
    names (every name the test bed's, so nothing clashes with a real daemon or a test run)."""

    proc: subprocess.Popen[str]
    run_dir: Path
    bpf_dir: Path
    ports_netns: str
    port_prefix: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "MSTACK_RUN_DIR": str(self.run_dir)}

    def ctl(self, *args: str, check: bool = True) -> str:
        cp = subprocess.run([str(BIN / "mstackctl"), *args], env=self.env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
        if check and cp.returncode != 0:
            raise DemoError(f"mstackctl {' '.join(args)} exited {cp.returncode}: {cp.stderr}")
        return cp.stdout

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "--json"))

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.run_dir / "mstackd.log").read_text(errors="replace")
        return ""


@contextlib.contextmanager
def mstackd(attach: str, run_dir: Path) -> Iterator[Daemon]:
    """mstackd attached to `attach`; stopped with SIGTERM (its orderly teardown) on exit, and
    whatever a daemon that had to be killed would leave (ports namespace, port links, pins)
    removed."""
    name = unique_name()
    pin_root = BPFFS / unique_name("b")
    d = Daemon(
        proc=None,  # type: ignore[arg-type]
        run_dir=run_dir,
        bpf_dir=pin_root / "sw",
        ports_netns=f"{name}p",
        port_prefix=name.replace("-", "")[:10],  # ports are <prefix><id>h: room for 4 digits
    )
    argv = [str(BIN / "mstackd"), "--run-dir", str(run_dir), "--bpf-dir", str(d.bpf_dir),
            "--ports-netns", d.ports_netns, "--port-prefix", d.port_prefix,
            "--config", "/nonexistent", "--attach", attach, "-v"]  # fmt: skip
    try:
        with open(run_dir / "mstackd.log", "a") as log:
            d.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            wait_line(d.proc, "mstackd: ready", timeout=90)
        except Exception as e:
            raise DemoError(f"mstackd did not start: {e}\n{d.log()[-2000:]}") from e
        yield d
    finally:
        if d.proc is not None:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                try:
                    d.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
            stop_process(d.proc)
        del_netns(d.ports_netns)
        for link in ip_json("link", "show"):
            if link["ifname"].startswith(d.port_prefix):
                del_link(link["ifname"])
        unpin_tree(pin_root)


# -- files -----------------------------------------------------------------------------------


# -- nginx -----------------------------------------------------------------------------------


@dataclass
class Nginx:
    """Debian's nginx with a configuration as close to its stock /etc/nginx/nginx.conf as a
    demo allows: a master process, `daemon on`, `user www-data`, `worker_processes 2`,
    sendfile and tcp_nopush on, mime types, gzip; pid, logs and temp paths under `prefix`; one
    server on `ip:port`. `wrap` is put in front of the command (mstack-run and its options)."""

    prefix: Path
    ip: str
    port: int
    workers: int = 2
    wrap: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    master: psutil.Process | None = None
    known: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def stderr_log(self) -> Path:
        return self.prefix / "stderr.log"

    def conf_text(self) -> str:
        p = self.prefix
        temps = "\n".join(f"    {k}_temp_path {p}/tmp/{k};" for k in TEMP_KINDS)
        return f"""user www-data;
worker_processes {self.workers};
daemon on;
pid {p}/nginx.pid;
error_log {p}/error.log;
include /etc/nginx/modules-enabled/*.conf;

events {{
    worker_connections 768;
}}

http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {p}/access.log;
    gzip on;
    keepalive_requests 1000000;
{temps}

    server {{
        listen {self.ip}:{self.port};
        root {p}/www;
    }}
}}
"""

    def argv(self, *extra: str) -> list[str]:
        return [*self.wrap, str(NGINX), "-p", str(self.prefix), "-c", str(self.conf),
                "-e", str(self.error_log), *extra]  # fmt: skip

    def start(self) -> None:
        """nginx daemonizes: the command returns once the master runs; then wait for its pid
        file and its workers."""
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        os.chown(self.prefix / "tmp", 33, 33)  # www-data
        self.conf.write_text(self.conf_text())
        with open(self.stderr_log, "ab") as err:
            cp = subprocess.run(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=self.env, timeout=60)  # fmt: skip
        if cp.returncode != 0:
            raise DemoError(f"nginx exited {cp.returncode}\n{self.diagnostics()}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.master is None:
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                proc = psutil.Process(int((self.prefix / "nginx.pid").read_text()))
                if "master process" in " ".join(proc.cmdline()):
                    self.master = proc
                    self.known[proc.pid] = proc
            time.sleep(0.05)
        if self.master is None:
            raise DemoError(f"no nginx master process after 20 s\n{self.diagnostics()}")
        while time.monotonic() < deadline and len(self.worker_procs()) < self.workers:
            time.sleep(0.05)
        if len(self.worker_procs()) < self.workers:
            raise DemoError(f"nginx's {self.workers} workers not up\n{self.diagnostics()}")

    def worker_procs(self) -> list[psutil.Process]:
        out = []
        if self.master is None:
            return out
        with contextlib.suppress(psutil.Error):
            for c in self.master.children():
                with contextlib.suppress(psutil.Error):
                    if "worker process" in " ".join(c.cmdline()):
                        self.known[c.pid] = c
                        out.append(c)
        return out

    def diagnostics(self) -> str:
        out = []
        for p in (self.stderr_log, self.error_log):
            with contextlib.suppress(OSError):
                text = p.read_text(errors="replace").strip()
                if text:
                    out.append(f"--- {p}\n{text[-3000:]}")
        return "\n".join(out)

    def shim_messages(self) -> list[str]:
        """What the shim and mstack-run said on nginx's stderr (nothing when all is well)."""
        with contextlib.suppress(OSError):
            text = self.stderr_log.read_text(errors="replace")
            return [ln for ln in text.splitlines() if "libmstack" in ln or "mstack-run" in ln]
        return []

    def stop(self) -> list[int]:
        """QUIT (graceful) to the master by pid, then wait for the master and every worker
        seen; SIGKILL what is left after 15 s. Returns the pids that needed SIGKILL."""
        self.worker_procs()
        procs = [p for p in self.known.values() if alive(p)]
        if self.master is not None and alive(self.master):
            with contextlib.suppress(psutil.Error):
                self.master.send_signal(signal.SIGQUIT)
        _, rest = psutil.wait_procs(procs, timeout=15)
        rest = [p for p in rest if alive(p)]
        for p in rest:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(rest, timeout=10)
        return [p.pid for p in rest]


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextlib.contextmanager
def running_nginx(ng: Nginx) -> Iterator[Nginx]:
    try:
        ng.start()
        yield ng
    finally:
        left = ng.stop()
        if left:
            print(f"  nginx processes {left} did not stop on QUIT: killed", flush=True)


def listen_group(d: Daemon, port: int) -> list[int]:
    """The ports (port ids) in the listen group of the listener bound to `port`."""
    for b in d.ctl_json("bindings"):
        if b.get("kind") == "listen" and b.get("port") == port:
            return list(b.get("members", []))
    return []


def wait_group(d: Daemon, port: int, n: int, timeout: float = 20) -> list[int]:
    """Until `n` processes wait in the listen group of `port` (before that, new flows go to the
    kernel's shadow listener by design: design.md section 4a)."""
    deadline = time.monotonic() + timeout
    members: list[int] = []
    while time.monotonic() < deadline:
        members = listen_group(d, port)
        if len(members) >= n:
            return members
        time.sleep(0.05)
    raise DemoError(f"{n} processes did not join the listen group of port {port} in "
                    f"{timeout} s (members: {members})")  # fmt: skip


# -- what the kernel holds -------------------------------------------------------------------


class SsWatch:
    """Samples the kernel's table of established TCP connections between the remote host and
    local port `port`, 4 times a second in a thread and on demand; `seen` keeps every connection
    ("remote:port -> local:port")."""

    def __init__(self, remote_ip: str, port: int) -> None:
        self.remote_ip, self.port = remote_ip, port
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ss-watch", daemon=True)

    def sample(self) -> list[str]:
        cp = subprocess.run(["ss", "-tnH", "state", "established", "dst", self.remote_ip,
                             "sport", "=", f":{self.port}"],
                            capture_output=True, text=True, timeout=10)  # fmt: skip
        # Recv-Q Send-Q Local Peer: a connection is its (local, peer) pair
        conns = [" -> ".join(ln.split()[2:4][::-1]) for ln in cp.stdout.splitlines() if ln.strip()]
        self.seen.update(conns)
        self.samples += 1
        return conns

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.sample()

    def __enter__(self) -> SsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


# -- remote clients --------------------------------------------------------------------------


@dataclass
class Fetch:
    name: str
    code: int
    connects: int
    size: int
    sha: str


def remote_curl(
    rh: RemoteHost, base: str, names: Sequence[str], outdir: Path, keepalive: bool
) -> list[Fetch]:
    """One curl in the remote namespace for all `names`: over one connection (keep-alive) or
    one each (Connection: close); each transfer's status, new connections, size and sha256."""
    outdir.mkdir(exist_ok=True)
    argv = [str(CURL), "-sS", "--fail-early", "--max-time", "30",
            "-w", "%{http_code} %{num_connects} %{size_download}\\n"]  # fmt: skip
    if not keepalive:
        argv += ["-H", "Connection: close"]
    for i, n in enumerate(names):
        argv += [f"{base}/{n}", "-o", str(outdir / f"{i}.out")]
    cp = rh.run(argv, timeout=30 * len(names) + 30, check=False)
    if cp.returncode != 0:
        raise DemoError(f"curl exited {cp.returncode}: {cp.stderr.strip()}")
    words = cp.stdout.split()
    if len(words) != 3 * len(names):
        raise DemoError(f"curl reported {cp.stdout!r} for {len(names)} transfers")
    out = []
    for i, n in enumerate(names):
        code, conns, size = words[3 * i : 3 * i + 3]
        f = outdir / f"{i}.out"
        out.append(Fetch(n, int(code), int(conns), int(size), sha256_file(f)))
        f.unlink()
    return out


def read_line(p: subprocess.Popen[Any], timeout: float) -> str:
    """The next line of p's stdout, or what came of it in `timeout` seconds (read a byte at a
    time from the pipe's fd, as testbed.netns.wait_line does, so nothing is left buffered)."""
    assert p.stdout is not None
    fd, line = p.stdout.fileno(), bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and sel.select(left):
            b = os.read(fd, 1)
            if not b or b == b"\n":
                break
            line += b
    return line.decode(errors="replace")


@contextlib.contextmanager
def held_connection(rh: RemoteHost, ip: str, port: int, path: str) -> Iterator[int]:
    """A keep-alive connection from the remote host, open for the block; yields its remote
    port. After the block the connection must still serve a request."""
    p = rh.python_popen(HOLD, ip, str(port), path, stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = read_line(p, 30)
        if line == "open":
            line = read_line(p, 30)
        if not line.startswith("port "):
            err = p.stderr.read() if p.stderr and p.poll() is not None else ""
            raise DemoError(f"the held connection did not open: {line!r} {err}")
        yield int(line.split()[1])
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        wait_line(p, "done", 30)
        p.wait(timeout=30)
        if p.returncode != 0:
            raise DemoError(f"the held connection failed its second request (exit {p.returncode})")
    finally:
        stop_process(p)


@dataclass
class WrkResult:
    rps: float
    requests: int
    errors: str  # wrk's words for socket errors and non-2xx/3xx responses ("" if none)


def remote_wrk(rh: RemoteHost, url: str, secs: float, conns: int = 16) -> WrkResult:
    """wrk from the remote namespace, one thread, keep-alive connections."""
    cp = rh.run([str(WRK), "-t1", f"-c{conns}", f"-d{secs}s", url], timeout=secs + 60,
                check=False)  # fmt: skip
    if cp.returncode != 0:
        raise DemoError(f"wrk exited {cp.returncode}: {cp.stderr.strip()}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", cp.stdout)
    total = re.search(r"(\d+) requests in", cp.stdout)
    if not rps or not total:
        raise DemoError(f"no figures in wrk's output:\n{cp.stdout}")
    errors = [ln.strip() for ln in cp.stdout.splitlines()
              if "Socket errors" in ln or "Non-2xx" in ln]  # fmt: skip
    return WrkResult(float(rps.group(1)), int(total.group(1)), "; ".join(errors))
