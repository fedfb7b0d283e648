"""The HTTP benchmark (the paper's Figure 6, measured the way design.md section 8 says it must be
on this machine): requests/s, CPU per request and latency at a fixed rate, for responses of 1 to
32 KB, one request per connection and keep-alive, on five systems:

  nginx-kernel         Debian's nginx on the kernel, its link without the switch (host B)
  nginx-kernel-switch  the same nginx process, on the link mstackd is attached to (host A)
  httpd-kernel         mstack-httpd --kernel (host B)
  httpd-utcp           mstack-httpd on UTCP, on a port from mstackd (host A)
  nginx-mstack-run     nginx under mstack-run, its port listed in a policy (host A); measured
                       only when UTCP carries its connections, else "skipped" with the reason

Test bed (tests/testbed): two remote hosts (namespace + veth each); mstackd attached to A's root
end in its default mode, nothing on B's. Servers run in the root namespace (pinned to CPU 1),
load generators in the remote host's namespace (pinned to CPU 0). requests/s: wrk (duration-based,
reconnects after `Connection: close`); the runs of all systems are interleaved, rep 1 of each,
then rep 2, ...; medians. CPU per request: all cores' user+nice+system+irq+softirq from
/proc/stat over the run, minus wrk's own CPU time (its rusage), over the requests completed.
Latency: h2load at one offered rate per (size, mode) for every system, a fraction of the slowest
system's median requests/s; percentiles from h2load's per-request log."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import http_schema as schema
from bench.switch import system_info

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from mstack_testkit import Mstackd, start_mstackd  # noqa: E402
from testbed.netns import (  # noqa: E402
    RemoteHost,
    remote_host_cm,
    stop_process,
    unique_name,
    unpin_tree,
    wait_line,
)

BPFFS = Path("/sys/fs/bpf")
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"
FULL_SIZES_KB = (1, 2, 4, 8, 16, 32)
NGINX_PORT, HTTPD_KERNEL_PORT, HTTPD_UTCP_PORT, MSTACK_RUN_PORT = 8080, 8081, 8082, 8083
SERVER_CPU, GEN_CPU = "1", "0"
NO_UTCP_MARK = "no UTCP yet"  # what libmstack.so says while it cannot carry a listed socket
PROBE_REQUESTS = 20


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, a tool is missing)."""


def build_dir() -> Path:
    return Path(os.environ.get("MSTACK_BUILD_DIR", str(REPO / "build")))


def path_of(name: str) -> str:
    found = shutil.which(name) or ""
    if not found and Path("/usr/sbin", name).exists():
        found = str(Path("/usr/sbin", name))
    if not found:
        raise BenchError(f"{name} is not installed (make deps installs it)")
    return found


# -- plan -------------------------------------------------------------------------------------


@dataclass
class Plan:
    sizes: list[int]  # bytes
    systems: list[str]
    modes: list[str]
    reps: int
    seconds: int  # wrk takes whole seconds
    connections: int
    latency_seconds: float
    latency_fraction: float
    latency_clients: int
    pin: bool
    quick: bool


def quick_plan() -> dict[str, Any]:
    return dict(sizes_kb=[1, 4, 32], reps=3, seconds=2, latency_seconds=1.5)


def full_plan() -> dict[str, Any]:
    return dict(sizes_kb=list(FULL_SIZES_KB), reps=5, seconds=3, latency_seconds=4.0)


# -- measuring CPU --------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds all cores have spent in user, nice, system, irq and softirq since boot."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    assert fields[0] == "cpu"
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


PF_KTHREAD = 0x00200000


def kthreads_cpu() -> dict[int, float]:
    """user + system seconds of each kernel thread (ksoftirqd and kworkers may do the
    benchmark's packet work when the machine is loaded)."""
    out: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # from the 3rd field (state) on
        if int(fields[6]) & PF_KTHREAD:
            out[int(d)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def kthreads_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """What kernel threads alive at the end did since `before` (a worker that exited in
    between takes its time along)."""
    return sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in after.items())


class CpuGroup:
    """A cgroup holding the benchmark's servers and mstackd, for their CPU time alone: on a
    machine shared with other people's builds and tests, /proc/stat counts their work too.
    cgroup v2 (cpu.stat usage_usec) or v1 cpuacct (cpuacct.usage); absent: no "own" figure."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpuacct")
        for base in (v2, v1):
            probe = "cgroup.controllers" if base == v2 else "cpuacct.usage"
            if (base / probe).exists():
                with contextlib.suppress(OSError):
                    (base / name).mkdir()
                    self.path = base / name
                    self.v2 = base == v2
                    break

    def add(self, pid: int) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def enter(self) -> None:
        """In a child before exec (Popen's preexec_fn): it and what it forks count here."""
        self.add(os.getpid())

    def usage_s(self) -> float | None:
        if self.path is None:
            return None
        if self.v2:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
            return None
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """After its processes are gone; whatever is still inside goes back to the root."""
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.path.parent / "cgroup.procs").write_text(pid + "\n")
        deadline = time.monotonic() + 5
        while self.path.exists() and time.monotonic() < deadline:
            try:
                self.path.rmdir()
            except OSError:
                time.sleep(0.1)


def tree_cpu_s(pids: Sequence[int]) -> float:
    """user + system seconds of these processes and their live children (nginx's workers)."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                if q.pid in seen:
                    continue
                seen.add(q.pid)
                with contextlib.suppress(psutil.Error):
                    t = q.cpu_times()
                    total += t.user + t.system
    return total


def run_measured(argv: Sequence[str], timeout: float) -> tuple[int, str, float, bool]:
    """Run argv to its end (bounded; stopped by pid past `timeout`): exit status, stdout, its own
    CPU seconds (user + system, all its threads, from wait4's rusage), and whether it timed out."""
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.monotonic() > deadline and not timed_out:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)  # wrk and h2load print what they have
                deadline = time.monotonic() + 5
            elif timed_out and time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return p.returncode, text, ru.ru_utime + ru.ru_stime, timed_out


# -- servers --------------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    host: RemoteHost
    ip: str
    port: int
    description: str
    switch_attached: bool
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    status: str = "ok"
    reason: str | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{self.ip}:{self.port}{path}"

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "description": self.description,
            "url": self.url(),
            "switch_attached": self.switch_attached,
        }


def file_name(size: int) -> str:
    return f"/{size // 1024}k.bin" if size % 1024 == 0 else f"/{size}.bin"


def make_root(www: Path, sizes: Sequence[int]) -> dict[int, str]:
    """One file of random bytes per size; their sha256."""
    www.mkdir(parents=True, exist_ok=True)
    digests = {}
    for size in sizes:
        data = os.urandom(size)
        (www / file_name(size).lstrip("/")).write_bytes(data)
        digests[size] = hashlib.sha256(data).hexdigest()
    (www / "index.html").write_bytes(b"<!doctype html><title>bench</title>\n")
    return digests


def nginx_conf(prefix: Path, listens: Sequence[str], www: Path) -> Path:
    """Debian's nginx as the issue fixes it: one worker, access log off, sendfile on; the rest
    as shipped, except keepalive_requests (no reconnect every 1000 requests in the keep-alive
    runs: mstack-httpd has no such limit) and room for many connections."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    temp = "\n".join(
        f"    {k}_temp_path {prefix}/tmp;"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    servers = "\n".join(f"        listen {x};" for x in listens)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
{temp}
    server {{
{servers}
        root {www};
    }}
}}
"""
    )
    return conf


def wait_listening(ip: str, port: int, procs: Sequence[subprocess.Popen[Any]], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise BenchError(f"{what} exited with status {p.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((ip, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise BenchError(f"{what} did not listen on {ip}:{port} within 15 s")


def pin(plan: Plan, cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if plan.pin else []


@dataclass
class Bed:
    a: RemoteHost  # mstackd attached to its root end
    b: RemoteHost  # no switch
    d: Mstackd
    work: Path
    www: Path
    digests: dict[int, str]
    systems: dict[str, System]
    cg: CpuGroup


def start_nginx(plan: Plan, bed: Bed, prefix: Path, listens: Sequence[str], wrapper: Sequence[str],
                env: dict[str, str] | None = None) -> subprocess.Popen[Any]:  # fmt: skip
    conf = nginx_conf(prefix, listens, bed.www)
    with open(prefix / "stderr", "wb") as err:
        return subprocess.Popen(
            [*pin(plan, SERVER_CPU), *wrapper, path_of("nginx"), "-c", str(conf), "-p",
             str(prefix)],
            stdout=subprocess.DEVNULL, stderr=err, env=env, preexec_fn=bed.cg.enter,
        )  # fmt: skip


def start_httpd(
    plan: Plan, bed: Bed, host: RemoteHost, port: int, utcp: bool
) -> subprocess.Popen[Any]:
    exe = build_dir() / "bin" / "mstack-httpd"
    if not exe.exists():
        raise BenchError(f"{exe} is missing: make build BUILD={build_dir()}")
    mode = ["--run-dir", str(bed.d.run_dir)] if utcp else ["--kernel"]
    log = bed.work / f"httpd-{'utcp' if utcp else 'kernel'}.stderr"
    with open(log, "wb") as err:
        p = subprocess.Popen(
            [*pin(plan, SERVER_CPU), str(exe), "--listen", f"{host.host_ip}:{port}", "--root",
             str(bed.www), *mode],
            stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=bed.cg.enter,
        )  # fmt: skip
    try:
        wait_line(p, "ready", 20)
    except Exception as e:
        raise BenchError(f"mstack-httpd did not start: {e}; {log.read_text()[-1000:]}") from e
    return p


def start_systems(plan: Plan, bed: Bed, stack: contextlib.ExitStack, log: Any) -> None:
    a, b = bed.a, bed.b
    want = set(plan.systems)
    sysd: dict[str, System] = {}
    if want & {"nginx-kernel", "nginx-kernel-switch"}:
        # One nginx process for both: the only difference between the two is the link.
        p = start_nginx(plan, bed, bed.work / "nginx",
                        [f"{a.host_ip}:{NGINX_PORT}", f"{b.host_ip}:{NGINX_PORT}"], [])  # fmt: skip
        stack.callback(stop_process, p, 10.0)
        wait_listening(b.host_ip, NGINX_PORT, [p], "nginx")
        sysd["nginx-kernel"] = System(
            "nginx-kernel",
            b,
            b.host_ip,
            NGINX_PORT,
            "nginx on the kernel, no switch on its link",
            False,
            [p],
        )
        sysd["nginx-kernel-switch"] = System(
            "nginx-kernel-switch", a, a.host_ip, NGINX_PORT,
            "the same nginx on the kernel, mstackd attached to its link (default mode)", True,
            [p],
        )  # fmt: skip
    if "httpd-kernel" in want:
        p = start_httpd(plan, bed, b, HTTPD_KERNEL_PORT, utcp=False)
        stack.callback(stop_process, p, 10.0)
        sysd["httpd-kernel"] = System("httpd-kernel", b, b.host_ip, HTTPD_KERNEL_PORT,
                                      "mstack-httpd --kernel (epoll)", False, [p])  # fmt: skip
    if "httpd-utcp" in want:
        p = start_httpd(plan, bed, a, HTTPD_UTCP_PORT, utcp=True)
        stack.callback(stop_process, p, 10.0)
        sysd["httpd-utcp"] = System(
            "httpd-utcp",
            a,
            a.host_ip,
            HTTPD_UTCP_PORT,
            "mstack-httpd on UTCP, its own port from mstackd",
            True,
            [p],
        )
    if "nginx-mstack-run" in want:
        s = System(
            "nginx-mstack-run",
            a,
            a.host_ip,
            MSTACK_RUN_PORT,
            "nginx under mstack-run, its listener listed for UTCP by the policy",
            True,
        )
        sysd[s.name] = s
        start_mstack_run_nginx(plan, bed, s, stack, log)
    bed.systems = {n: sysd[n] for n in schema.SYSTEMS if n in sysd and n in want}


def start_mstack_run_nginx(plan: Plan, bed: Bed, s: System, stack: contextlib.ExitStack,
                           log: Any) -> None:  # fmt: skip
    """nginx under mstack-run with a policy listing its listener. It is measured only if UTCP
    carries its connections (design.md section 7: the switch steered them to a port, the kernel
    held none); otherwise it is skipped, with the shim's words or what the probe saw."""
    prefix = bed.work / "nginx-mstack-run"
    prefix.mkdir()
    policy = prefix / "policy.toml"
    policy.write_text(f'[apps.bench-nginx]\nexe = ["nginx"]\nlisten = ["{s.ip}:{s.port}"]\n')
    env = {**os.environ, "MSTACK_RUN_DIR": str(bed.d.run_dir)}
    run = [str(BIN / "mstack-run"), "--policy", str(policy), "--app", "bench-nginx", "--"]
    p = start_nginx(plan, bed, prefix, [f"{s.ip}:{s.port}"], run, env)
    stack.callback(stop_process, p, 10.0)
    s.procs = [p]
    try:
        wait_listening(s.ip, s.port, [p], "nginx under mstack-run")
    except BenchError as e:
        s.status, s.reason = "skipped", f"{e}: {_tail(prefix / 'stderr')}"
        return
    said = _tail(prefix / "stderr", 4000) + _tail(prefix / "error.log", 4000)
    carried, why = probe_utcp(bed, s)
    if carried:
        log(f"nginx-mstack-run: UTCP carries its connections ({why}); measured")
        return
    shim = next((ln.strip() for ln in said.splitlines() if NO_UTCP_MARK in ln), "")
    s.status = "skipped"
    s.reason = f"UTCP did not carry its connections ({why})"
    if shim:
        s.reason += f"; the shim said: {shim}"
    log(f"nginx-mstack-run: skipped: {s.reason}")


def _tail(path: Path, n: int = 1000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


def switch_to_port(d: Mstackd) -> int:
    ing = d.admin("stats")["ingress"]
    return int(sum(v for k, v in ing.items() if k.startswith("to_port")))


def kernel_conns(port: int) -> int:
    """Kernel TCP sockets of local port `port` other than listeners (a server that closes first
    leaves TIME_WAIT; a kernel-served connection cannot hide from this)."""
    out = subprocess.run(["ss", "-tanH", "state", "all", f"sport = :{port}"],
                         capture_output=True, text=True, timeout=30).stdout  # fmt: skip
    return sum(1 for ln in out.splitlines() if ln.split() and ln.split()[0] != "LISTEN")


def probe_utcp(bed: Bed, s: System) -> tuple[bool, str]:
    before_sw, before_k = switch_to_port(bed.d), kernel_conns(s.port)
    ok = 0
    for _ in range(PROBE_REQUESTS):
        cp = s.host.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                         "-H", "Connection: close", s.url("/index.html")], check=False)  # fmt: skip
        ok += cp.stdout.strip() == "200"
    steered = switch_to_port(bed.d) - before_sw
    kernel = kernel_conns(s.port) - before_k
    why = (
        f"{ok}/{PROBE_REQUESTS} probe requests answered; the kernel held {max(kernel, 0)} "
        f"connections of port {s.port}; the switch steered {steered} frames to ports"
    )
    return ok == PROBE_REQUESTS and kernel <= 0 and steered >= 3 * PROBE_REQUESTS, why


# -- verification -----------------------------------------------------------------------------


def verify(bed: Bed, s: System, when: str) -> list[dict[str, Any]]:
    """GET every size from the remote host (curl, Connection: close) and compare sha256."""
    out = []
    for size, want in bed.digests.items():
        cp = s.host.run(["curl", "-sS", "--fail", "--max-time", "10", "-H", "Connection: close",
                         s.url(file_name(size))], check=False, text=False)  # fmt: skip
        got = hashlib.sha256(cp.stdout).hexdigest()
        if cp.returncode != 0:
            detail = f"curl exit {cp.returncode}: {cp.stderr.decode(errors='replace').strip()}"
        elif got != want:
            detail = f"{len(cp.stdout)} bytes, sha256 {got[:16]}..., expected {want[:16]}..."
        else:
            detail = f"{size} bytes, sha256 ok"
        out.append({"system": s.name, "size": size, "when": when,
                    "ok": cp.returncode == 0 and got == want, "detail": detail})  # fmt: skip
    return out


# -- load generators ----------------------------------------------------------------------------


def ns(host: RemoteHost) -> list[str]:
    return ["ip", "netns", "exec", host.ns]


def _int(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


def rps_run(plan: Plan, cg: CpuGroup, s: System, mode: str, size: int, rep: int) -> dict[str, Any]:
    """One wrk run against s: requests/s, errors, and CPU per request (design.md section 8)."""
    close = ["-H", "Connection: close"] if mode == "close" else []
    argv = [*ns(s.host), *pin(plan, GEN_CPU), path_of("wrk"), "-t1", f"-c{plan.connections}",
            f"-d{plan.seconds}s", "--timeout", "2s", *close, s.url(file_name(size))]  # fmt: skip
    srv0, own0, k0 = tree_cpu_s(s.pids()), cg.usage_s(), kthreads_cpu()
    b0 = busy_cpu_s()
    rc, out, gen_cpu, timed_out = run_measured(argv, plan.seconds + 10)
    cpu = busy_cpu_s() - b0
    own1, k1 = cg.usage_s(), kthreads_cpu()
    srv = tree_cpu_s(s.pids()) - srv0
    own = own1 - own0 + kthreads_delta(k0, k1) if own0 is not None and own1 is not None else None
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    requests = int(m.group(1)) if m else 0
    seconds = 0.0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    non2xx = _int(r"Non-2xx or 3xx responses: (\d+)", out)
    error = None
    if m:
        seconds = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    if timed_out or rc != 0 or not m:
        error = f"wrk exit {rc}{' (timed out)' if timed_out else ''}: {_words(out)}"
    elif errors or non2xx or not requests:
        error = (f"{requests} requests, socket errors {sock.groups() if sock else ()} "
                 f"(connect, read, write, timeout), {non2xx} non-2xx")  # fmt: skip
    n = max(requests, 1)
    # The load generator's own TIME-WAIT sockets (it closed first): tens of thousands of them
    # make its connect() scan the whole port range (docs/bench.md, the close-mode degradation)
    # and slow every later run from that namespace.
    tw = s.host.run(["ss", "-tanH", "state", "time-wait"], check=False).stdout
    return {
        "system": s.name, "mode": mode, "size": size, "rep": rep, "ok": error is None,
        "error": error, "seconds": round(seconds, 4), "requests": requests, "errors": errors,
        "non_2xx": non2xx, "rps": requests / seconds if seconds > 0 else 0.0,
        "cpu_s": round(cpu, 4), "generator_cpu_s": round(gen_cpu, 4),
        "own_cpu_s": round(own, 4) if own is not None else None,
        "server_cpu_s": round(srv, 4),
        "cpu_per_req_us": (cpu - gen_cpu) / n * 1e6 if requests else None,
        "cpu_per_req_own_us": own / n * 1e6 if requests and own is not None else None,
        "server_cpu_per_req_us": srv / n * 1e6 if requests else None,
        "client_time_wait": sum(1 for ln in tw.splitlines() if ln.strip()),
    }  # fmt: skip


def latency_run(
    plan: Plan, bed: Bed, s: System, mode: str, size: int, rate: float
) -> dict[str, Any]:
    """h2load at a fixed offered rate; percentiles of its per-request log. Keep-alive: --rps per
    client (h2load holds it). One request per connection: h2load's --rps does not hold a rate
    once the server closes (it reconnects at once, measured: 2000 requests at "--rps 100" x 8
    clients took 0.1 s), so new connections are opened at a fixed rate instead (-r per
    --rate-period, one request each)."""
    logf = bed.work / f"h2load-{s.name}-{mode}-{size}.tsv"
    url = s.url(file_name(size))
    total = max(1, int(rate * plan.latency_seconds))
    if mode == "keepalive":
        clients = plan.latency_clients
        total = max(clients, total // clients * clients)
        args = ["-c", str(clients), "-n", str(total), "--rps", f"{rate / clients:.3f}"]
        offered = rate
    else:
        period_ms = max(1, round(1000 / rate))
        per = max(1, round(rate * period_ms / 1000))
        offered = per * 1000 / period_ms
        total = max(1, int(offered * plan.latency_seconds))
        args = ["-c", str(total), "-n", str(total), "-r", str(per), "--rate-period",
                f"{period_ms}ms", "-H", "Connection: close"]  # fmt: skip
    argv = [*ns(s.host), *pin(plan, GEN_CPU), path_of("h2load"), "--h1", "-t1", *args,
            "-N", "5s", "--log-file", str(logf), url]  # fmt: skip
    rc, out, _gen, timed_out = run_measured(argv, plan.latency_seconds * 3 + 30)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) "
                  r"failed, (\d+) errored, (\d+) timeout", out)  # fmt: skip
    lat: list[float] = []
    starts: list[int] = []
    non2xx = 0
    with contextlib.suppress(OSError):
        for line in logf.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            if not parts[1].startswith("2"):
                non2xx += 1
                continue
            starts.append(int(parts[0]))
            lat.append(float(parts[2]))
    lat.sort()
    span = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else 0.0
    cm = re.search(r"time for connect:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)",
                   out)  # fmt: skip
    connect_mean = _us(float(cm.group(5)), cm.group(6)) if cm else None
    errors = (int(m.group(5)) + int(m.group(6)) + int(m.group(7))) if m else 0
    done_ok = int(m.group(4)) if m else 0
    error = None
    if timed_out or rc != 0 or not m:
        error = f"h2load exit {rc}{' (timed out)' if timed_out else ''}: {_words(out)}"
    elif errors or non2xx or done_ok != total or len(lat) != total:
        error = (f"{done_ok} of {total} requests succeeded ({errors} failed/errored/timed out, "
                 f"{non2xx} non-2xx)")  # fmt: skip
    with contextlib.suppress(OSError):
        logf.unlink()
    return {
        "system": s.name, "mode": mode, "size": size, "ok": error is None, "error": error,
        "offered_rps": round(offered, 1),
        "achieved_rps": round(len(lat) / span, 1) if span else 0.0,
        "requests": len(lat), "errors": errors, "non_2xx": non2xx,
        "p50_us": schema.percentile(lat, 0.50), "p90_us": schema.percentile(lat, 0.90),
        "p99_us": schema.percentile(lat, 0.99), "max_us": lat[-1] if lat else None,
        "connect_mean_us": connect_mean,
    }  # fmt: skip


def _words(text: str, n: int = 300) -> str:
    """The end of a tool's output on one line."""
    return " ".join(text.split())[-n:]


def _us(v: float, unit: str) -> float:
    return v * {"us": 1.0, "ms": 1e3, "s": 1e6}[unit]


def answers(s: System, timeout: float = 3.0) -> bool:
    """Whether s answers one request now (curl closes first: no TIME_WAIT left at the server)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(timeout),
            s.url("/index.html")]  # fmt: skip
    cp = s.host.run(argv, check=False, timeout=timeout + 10)
    return cp.stdout.strip() == "200"


def not_answering(s: System, mode: str, size: int, rep: int) -> dict[str, Any]:
    """A run not made: the server did not answer a probe after its previous run failed."""
    return {
        "system": s.name, "mode": mode, "size": size, "rep": rep, "ok": False,
        "error": "not run: the server did not answer a probe request within 3 s after its "
        "previous run failed", "seconds": 0.0, "requests": 0, "errors": 0, "non_2xx": 0,
        "rps": 0.0, "cpu_s": 0.0, "generator_cpu_s": 0.0, "own_cpu_s": None,
        "server_cpu_s": 0.0, "cpu_per_req_us": None, "cpu_per_req_own_us": None,
        "server_cpu_per_req_us": None,
    }  # fmt: skip


# -- the test bed and the measurement loop --------------------------------------------------------


@contextlib.contextmanager
def testbed(plan: Plan, log: Any) -> Iterator[Bed]:
    if os.geteuid() != 0:
        raise BenchError("the HTTP benchmark needs root (network namespaces, XDP)")
    for tool in ("wrk", "h2load", "nginx", "curl"):
        path_of(tool)
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="mst-bench-http-"))
        work.chmod(0o755)  # nginx's worker (nobody) reads the files
        stack.callback(shutil.rmtree, work, True)
        # GRO on at the remote ends, as on any real NIC (design.md section 7: the switch's
        # XDP DEVMAP egress fast path needs it on veth, and only frames that arrive that way
        # are merged; the kernel servers' TSO skbs cross the veth whole either way).
        a = stack.enter_context(remote_host_cm(remote_gro=True))
        b = stack.enter_context(remote_host_cm(remote_gro=True))
        for h in (a, b):
            # The load generators reuse their TIME-WAIT ports, as load generators do: a server
            # that lets the client close first (nginx's response, then its FIN) otherwise
            # fills the client's port range with TIME-WAIT within seconds, and from then on
            # wrk's connect() scans the whole range for a free port on the sending core —
            # every later run towards that server slows down (docs/bench.md).
            h.run(["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"])
        if not BPFFS.is_dir() or not os.path.ismount(BPFFS):
            subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)
        pins = BPFFS / unique_name("-bpf")
        stack.callback(unpin_tree, pins)
        pins.mkdir()
        run_dir = work / "run"
        run_dir.mkdir()
        run_dir.chmod(0o755)
        cg = CpuGroup(unique_name("-cpu"))
        stack.callback(cg.remove)  # registered first: runs after every process has stopped
        d = stack.enter_context(start_mstackd(a, pins, run_dir))
        cg.add(d.proc.pid)
        www = work / "www"
        digests = make_root(www, plan.sizes)
        bed = Bed(a, b, d, work, www, digests, {}, cg)
        start_systems(plan, bed, stack, log)
        yield bed


def egress_paths(bed: Bed) -> dict[str, Any]:
    """Which egress path host A's UTCP frames took: the NIC's fast-path state and the switch's
    egress counters at the end of the run (docs/mstackd.md, "Egress")."""
    out: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        st = bed.d.admin("status")
        out["fast_path"] = {n["iface"]: n.get("fast_path") for n in st.get("nics", [])}
    with contextlib.suppress(Exception):
        out["counters"] = bed.d.admin("stats").get("egress")
    return out


def measure(plan: Plan, bed: Bed, log: Any) -> tuple[list[Any], list[Any], list[Any]]:
    verify_log: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    live = [s for s in bed.systems.values() if s.status == "ok"]
    for s in live:
        verify_log += verify(bed, s, "before")
    failing: set[str] = set()  # systems whose last run failed: probed before the next one
    # Keep-alive first (see schema.MODES).
    for mode in sorted(plan.modes, key=lambda m: m != "keepalive"):
        for size in plan.sizes:
            for rep in range(plan.reps):
                k = rep % len(live) if live else 0
                for s in live[k:] + live[:k]:  # rep 1 of every system, then rep 2, ...
                    if s.name in failing and not answers(s):
                        r = not_answering(s, mode, size, rep)
                    else:
                        r = rps_run(plan, bed.cg, s, mode, size, rep)
                    (failing.discard if r["ok"] else failing.add)(s.name)
                    runs.append(r)
                    cpu = r["cpu_per_req_us"]
                    log(f"{mode:<9} {size // 1024:>2} KB rep {rep + 1}/{plan.reps} {s.name:<19} "
                        f"{r['rps']:9.0f} req/s  "
                        + (f"CPU/req {cpu:6.1f} us, own {r['cpu_per_req_own_us']:6.1f} us"
                           if cpu is not None else "")
                        + f"  client TIME-WAIT {r.get('client_time_wait', '-')}"
                        + ("" if r["ok"] else f"  FAILED: {r['error']}"))  # fmt: skip
            # One offered rate for every system at this size and mode: a fraction of the
            # slowest system's median requests/s (systems whose runs all failed left out).
            medians = []
            for s in live:
                ok = sorted(r["rps"] for r in runs if (r["system"], r["mode"], r["size"]) ==
                            (s.name, mode, size) and r["ok"])  # fmt: skip
                if ok:
                    medians.append(ok[len(ok) // 2] if len(ok) % 2 else
                                   (ok[len(ok) // 2 - 1] + ok[len(ok) // 2]) / 2)  # fmt: skip
            if not medians:
                continue
            rate = max(10.0, plan.latency_fraction * min(medians))
            for s in live:
                if s.name in failing and not answers(s):
                    continue  # its results row says why (its runs failed)
                x = latency_run(plan, bed, s, mode, size, rate)
                latency.append(x)
                log(f"{mode:<9} {size // 1024:>2} KB latency at {x['offered_rps']:.0f} req/s "
                    f"{s.name:<19} p50 {x['p50_us'] or 0:.0f} p99 {x['p99_us'] or 0:.0f} us"
                    + ("" if x["ok"] else f"  FAILED: {x['error']}"))  # fmt: skip
    for s in live:
        verify_log += verify(bed, s, "after")
    return verify_log, runs, latency


# -- output ----------------------------------------------------------------------------------------


def dumps(doc: dict[str, Any]) -> str:
    """JSON with one line per list entry of the long lists: readable and diffable."""
    long_keys = ("systems", "verify", "runs", "latency", "results")
    head = {k: v for k, v in doc.items() if k not in long_keys}
    text = json.dumps(head, indent=1)[: -len("\n}")]
    for key in long_keys:
        rows = ",\n".join("  " + json.dumps(r, separators=(", ", ": ")) for r in doc[key])
        text += f',\n "{key}": [\n{rows}\n ]' if rows else f',\n "{key}": []'
    return text + "\n}\n"


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    lines = [
        f"HTTP benchmark  {doc['created']}  kernel {doc['machine']['kernel']}  "
        f"{doc['machine']['cpus']} CPUs  reps {cfg['repetitions']} x {cfg['seconds']} s, "
        f"{cfg['connections']} connections; latency at {cfg['latency_fraction']:.0%} of the "
        f"slowest system's req/s",
        "",
        f"{'mode':<9} {'size':>5} {'system':<19} {'req/s':>8} {'min':>7} {'max':>7} "
        f"{'/ngx':>5} {'CPU/req':>8} {'/ngx':>5} {'own':>6} {'/ngx':>5} {'@rate':>6} {'p50':>6} "
        f"{'p90':>6} {'p99':>6} {'/ngx':>5}  status",
        f"{'':<9} {'':>5} {'':<19} {'median':>8} {'':>7} {'':>7} {'':>5} {'us':>8} {'':>5} "
        f"{'us':>6} {'':>5} {'req/s':>6} {'us':>6} {'us':>6} {'us':>6}",
    ]
    for r in doc["results"]:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        if r["status"] == "skipped" and r["size"] != doc["config"]["sizes"][0]:
            continue  # said once per mode
        if len(status) > 110:
            status = status[:107] + "..."
        lines.append(
            f"{r['mode']:<9} {r['size'] // 1024:>3}KB {r['system']:<19} "
            f"{_f(r['rps_median'], '8.0f'):>8} {_f(r['rps_min'], '7.0f'):>7} "
            f"{_f(r['rps_max'], '7.0f'):>7} {_f(r['rps_ratio'], '5.2f'):>5} "
            f"{_f(r['cpu_per_req_us_median'], '8.1f'):>8} {_f(r['cpu_ratio'], '5.2f'):>5} "
            f"{_f(r['cpu_per_req_own_us_median'], '6.1f'):>6} "
            f"{_f(r['cpu_own_ratio'], '5.2f'):>5} "
            f"{_f(r['latency_offered_rps'], '6.0f'):>6} {_f(r['p50_us'], '6.0f'):>6} "
            f"{_f(r['p90_us'], '6.0f'):>6} {_f(r['p99_us'], '6.0f'):>6} "
            f"{_f(r['p99_ratio'], '5.2f'):>5}  {status}"
        )
    bad = [v for v in doc["verify"] if not v["ok"]]
    lines += ["", f"bodies verified (sha256, before and after): {len(doc['verify']) - len(bad)} "
              f"of {len(doc['verify'])} fetches byte-exact"]  # fmt: skip
    lines += [f"  FAILED: {v['system']} {v['size']} B ({v['when']}): {v['detail']}" for v in bad]
    lines += [
        "CPU/req: all cores (/proc/stat) minus the load generator, per request (design.md 8); "
        "own: servers + mstackd (a cgroup) + kernel threads, per request (a shared machine)"
    ]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> bool:
    """Figure 6's shape: median requests/s against response size, one line per system, one
    panel per mode; below, CPU per request the same way. Only if matplotlib is importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    modes = [m for m in schema.MODES if m in doc["config"]["modes"]]
    if not modes:
        return False
    fig, axes = plt.subplots(2, len(modes), figsize=(6.2 * len(modes), 8.0), squeeze=False)
    titles = {"close": "one request per connection", "keepalive": "keep-alive"}
    styles = {"nginx-kernel": "-o", "nginx-kernel-switch": "--s", "httpd-kernel": "-^",
              "httpd-utcp": "-D", "nginx-mstack-run": ":v"}  # fmt: skip
    for col, mode in enumerate(modes):
        panels = (("rps_median", "requests/s (median)"),
                  ("cpu_per_req_us_median", "CPU per request (us)"))  # fmt: skip
        for row, (key, label) in enumerate(panels):
            ax = axes[row][col]
            for system in schema.SYSTEMS:
                pts = sorted(
                    (r["size"] // 1024, r[key]) for r in doc["results"]
                    if r["system"] == system and r["mode"] == mode and r["status"] == "ok"
                    and r[key] is not None
                )  # fmt: skip
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[system],
                            label=system, ms=4)  # fmt: skip
            ax.set_xscale("log", base=2)
            sizes = sorted({r["size"] // 1024 for r in doc["results"]})
            ax.set_xticks(sizes)
            ax.set_xticklabels([str(s) for s in sizes])
            ax.set_xlabel("response size (KB)")
            ax.set_ylabel(label)
            ax.set_title(f"{titles[mode]}: {label.split(' (')[0]}")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"HTTP benchmark {doc['created']} ({doc['machine']['cpus']} CPUs, veth)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- entry point ----------------------------------------------------------------------------------


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv: Sequence[str]) -> tuple[Plan, Path, bool]:
    ap = argparse.ArgumentParser(
        prog="python -m bench http",
        description="requests/s, CPU per request and fixed-rate latency of kernel nginx, "
        "mstack-httpd (kernel and UTCP) and nginx under mstack-run (docs/bench.md).",
    )
    ap.add_argument("--quick", action="store_true", help="short form (~4 minutes)")
    ap.add_argument("--sizes", type=_ints, help="response sizes in KB, e.g. 1,2,4,8,16,32")
    ap.add_argument("--systems", help=f"comma-separated subset of {','.join(schema.SYSTEMS)}")
    ap.add_argument("--modes", help="close and/or keepalive (default both)")
    ap.add_argument("--reps", type=int, help="repetitions of every requests/s run")
    ap.add_argument("--seconds", type=int, help="whole seconds per requests/s run (wrk)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--latency-seconds", type=float, help="seconds per latency run")
    ap.add_argument(
        "--latency-fraction",
        type=float,
        default=0.5,
        help="offered rate: this fraction of the slowest system's median req/s",
    )
    ap.add_argument("--latency-clients", type=int, default=8,
                    help="h2load clients in the keep-alive latency runs")  # fmt: skip
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin (default: servers on CPU 1, load generators on CPU 0)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON and PNG")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(list(argv))
    base = quick_plan() if a.quick else full_plan()
    for k, v in (("sizes_kb", a.sizes), ("reps", a.reps), ("seconds", a.seconds),
                 ("latency_seconds", a.latency_seconds)):  # fmt: skip
        if v is not None:
            base[k] = v
    systems = a.systems.split(",") if a.systems else list(schema.SYSTEMS)
    modes = a.modes.split(",") if a.modes else list(schema.MODES)
    if any(s not in schema.SYSTEMS for s in systems) or not systems:
        ap.error(f"--systems: a subset of {','.join(schema.SYSTEMS)}")
    if any(m not in schema.MODES for m in modes) or not modes:
        ap.error("--modes: close and/or keepalive")
    if not base["sizes_kb"] or any(not 1 <= s <= 1024 for s in base["sizes_kb"]):
        ap.error("--sizes: KB in 1..1024")
    if not 1 <= base["reps"] <= 50 or not 1 <= base["seconds"] <= 120:
        ap.error("--reps 1..50, --seconds 1..120")
    if not 0.2 <= base["latency_seconds"] <= 120 or not 0 < a.latency_fraction <= 1:
        ap.error("--latency-seconds 0.2..120, --latency-fraction (0, 1]")
    if not 1 <= a.connections <= 1000 or not 1 <= a.latency_clients <= 1000:
        ap.error("--connections and --latency-clients: 1..1000")
    plan = Plan(
        sizes=[k * 1024 for k in sorted(set(base["sizes_kb"]))],
        systems=[s for s in schema.SYSTEMS if s in systems],
        modes=[m for m in schema.MODES if m in modes],
        reps=base["reps"], seconds=base["seconds"], connections=a.connections,
        latency_seconds=base["latency_seconds"], latency_fraction=a.latency_fraction,
        latency_clients=a.latency_clients,
        pin=not a.no_pin and (os.cpu_count() or 1) >= 2, quick=a.quick,
    )  # fmt: skip
    return plan, a.out, not a.no_plot


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    plan, out_dir, want_plot = parse_args(argv)
    # SIGTERM and SIGINT unwind the test bed: servers, mstackd, namespaces, links and pins go.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {msg}", file=sys.stderr, flush=True)

    machine = system_info()
    try:
        with testbed(plan, log) as bed:
            log(f"test bed: A {bed.a.host_if}/{bed.a.ns} (mstackd pid {bed.d.proc.pid} attached), "
                f"B {bed.b.host_if}/{bed.b.ns}; systems: "
                + ", ".join(f"{s.name}={s.status}" for s in bed.systems.values()))  # fmt: skip
            verify_log, runs, latency = measure(plan, bed, log)
            systems = [s.entry() for s in bed.systems.values()]
            egress = egress_paths(bed)
    except BenchError as e:
        print(f"bench http: {e}", file=sys.stderr)
        return 1
    bad: dict[str, str] = {}
    for v in verify_log:
        # Wrong bytes void every figure of the system. Not answering at the start does too;
        # not answering at the end (a server that stopped taking connections) fails the runs
        # that met it, not those measured before it.
        wrong = "sha256" in v["detail"]
        if not v["ok"] and v["system"] not in bad and (wrong or v["when"] == "before"):
            what = "wrong bytes" if wrong else "verification fetch failed"
            bad[v["system"]] = f"{what} ({v['when']}, {v['size']} B): {v['detail']}"
    notes = [
        "CPU per request: all cores' user+nice+system+irq+softirq (/proc/stat) over the run, "
        "minus wrk's own user+system time (wait4 rusage), over the requests completed "
        "(design.md section 8); 'own': the CPU time of the benchmark's own processes (servers "
        "and mstackd, in a cgroup of their own; cpuacct) plus all kernel threads, per request: "
        "the machine is shared with other people's builds and tests, whose work /proc/stat "
        "counts too. On veth the receive-side kernel work runs in the sender's context, so "
        "neither figure splits client and server kernel work exactly",
        "latency: h2load's per-request time (request sent to last byte), at one offered rate per "
        "size and mode for every system; connect time is not in it (connect_mean_us is)",
        "servers pinned to CPU 1, load generators to CPU 0" if plan.pin else "not pinned",
    ]
    if plan.quick:
        notes.append("quick form: fewer sizes and repetitions, shorter runs")
    machine["loadavg_end"] = list(os.getloadavg())
    nginx_version = subprocess.run(
        [path_of("nginx"), "-v"], capture_output=True, text=True, timeout=30
    ).stderr.strip()
    doc: dict[str, Any] = {
        "schema": schema.SCHEMA_ID,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - started, 1),
        "quick": plan.quick,
        "machine": machine,
        "config": {
            "sizes": plan.sizes,
            "modes": plan.modes,
            "systems": plan.systems,
            "repetitions": plan.reps,
            "seconds": plan.seconds,
            "connections": plan.connections,
            "latency_seconds": plan.latency_seconds,
            "latency_fraction": plan.latency_fraction,
            "latency_clients": plan.latency_clients,
            "pinned": plan.pin,
            "rps_generator": f"wrk -t1 -c{plan.connections} -d{plan.seconds}s --timeout 2s "
            "(+ -H 'Connection: close' for one request per connection)",
            "latency_generator": "h2load --h1 -t1: keep-alive --rps per client; one request per "
            "connection -r/--rate-period (new connections at a fixed rate), -N 5s",
            "cpu_counted": "user+nice+system+irq+softirq, all cores, minus the generator",
            "nginx": nginx_version,
            "remote_gro": True,
            "switch_egress": egress,
        },
        "systems": systems,
        "verify": verify_log,
        "runs": runs,
        "latency": latency,
        "results": schema.summarize(systems, plan.sizes, plan.modes, runs, latency, bad),
        "notes": notes,
    }
    errors = schema.validate(doc)
    if errors:  # a bug here, not a property of the machine: say so, keep the data
        doc["notes"].append("schema errors: " + "; ".join(errors[:10]))
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"http-{stamp}.json"
    path.write_text(dumps(doc))
    print(table(doc))
    print(f"\nJSON: {path}")
    if want_plot:
        png = out_dir / f"http-{stamp}.png"
        print(f"plot: {png}" if plot(doc, png) else "plot: skipped (matplotlib is not installed)")
    return 1 if errors else 0
