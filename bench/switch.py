"""The switch benchmark (the paper's Figure 4 counterpart): frames/s NIC -> port and port -> NIC
through the MultiStack switch with 1..250 ports attached, beside limit lines measured on the same
kind of link in the same run, and what attaching the switch costs the kernel's own bulk TCP.

Test bed (tests/testbed): host A (namespace + veth) with mstackd attached to its root end; host B,
the same, with nothing of the switch on it. mstack-swbench (bench/c) plays every part:
  NIC -> port: `gen` (an XSK in A's namespace, sending on A's remote end) -> switch -> N ports
               held by `ports`, which drains and counts them. Limit: the same `gen` from B's
               namespace into `sink` (a counting XDP_DROP) on B's root end, no switch.
  port -> NIC: `ports` sends from its ports -> TC egress check -> A's root end -> `sink` on A's
               remote end. Limit: `gen` on A's root end (an XSK straight on the NIC) -> the sink.
  attach cost: 400 MB of kernel TCP from B's namespace to the root namespace, with the switch
               detached from B's root end and attached in mstackd's default mode (native) and
               in generic mode, the order rotated.
Each repetition visits every attached count; within one, limit lines and switch runs alternate
(A B A B ...), in reversed order every other repetition. The results are medians."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import schema

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from mstack_testkit import Mstackd, start_mstackd  # noqa: E402
from mstackd.config import Config  # noqa: E402
from testbed.netns import (  # noqa: E402
    RemoteHost,
    remote_host_cm,
    stop_process,
    unique_name,
    unpin_tree,
)

BPFFS = Path("/sys/fs/bpf")
RESULTS = Path(__file__).resolve().parent / "results"
FULL_SIZES = (64, 128, 256, 512, 1024, 1514)
BASE_PORT = 20000  # ports' bindings: host A's address, BASE_PORT + i
SINK_PORT = 9  # destination port of port -> NIC frames (discard; the sink drops them anyway)
GEN_SPORT = 40000
REPLY_TIMEOUT = 60.0  # bound on any one reply of a tool (growing 250 ports takes a while)


class BenchError(RuntimeError):
    """The benchmark could not run (a tool failed, a reply did not come)."""


def build_dir() -> Path:
    """Where mstack-swbench and the sink program are: MSTACK_BENCH_BUILD (e.g. the ASan
    build; mstackd keeps using MSTACK_BUILD_DIR for its own objects), else MSTACK_BUILD_DIR,
    else build/."""
    default = os.environ.get("MSTACK_BUILD_DIR", str(REPO / "build"))
    return Path(os.environ.get("MSTACK_BENCH_BUILD", default))


# -- the C tool -------------------------------------------------------------------------------


class Tool:
    """An interactive mstack-swbench (`ports`, `sink`): one command line in, one line out,
    every reply bounded in time. Stopped by pid, and reaped, on close()."""

    def __init__(self, argv: Sequence[str], name: str, log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.stderr"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        self._buf = bytearray()

    def readline(self, timeout: float = REPLY_TIMEOUT) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise BenchError(f"{self.name}: no reply in {timeout} s; {self.stderr()}")
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise BenchError(f"{self.name}: exited ({self.proc.poll()}); {self.stderr()}")
                self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        return line.decode(errors="replace").strip()

    def cmd(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.readline(timeout)

    def json_cmd(self, line: str, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        out = self.cmd(line, timeout)
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as e:
            raise BenchError(f"{self.name}: {line!r} -> {out!r}; {self.stderr()}") from e
        if "error" in doc:
            raise BenchError(f"{self.name}: {line!r} -> {doc['error']}")
        return dict(doc)

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-1500:]
        return ""

    def close(self) -> int:
        """Ask it to quit, wait (bounded), stop it by pid if it hangs; its exit status."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        stop_process(self.proc)
        return int(self.proc.returncode)


def run_gen(argv: Sequence[str], seconds: float) -> dict[str, Any]:
    """A one-shot `gen`: its JSON line, bounded in time."""
    cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=seconds + 30)
    if cp.returncode != 0:
        raise BenchError(f"gen failed ({cp.returncode}): {cp.stderr.strip()[-1000:]}")
    return dict(json.loads(cp.stdout.strip().splitlines()[-1]))


# -- plan and results --------------------------------------------------------------------------


@dataclass
class Plan:
    sizes: list[int]
    attached: list[int]
    used: list[int]
    reps: int
    seconds: float
    bulk_mb: int
    bulk_reps: int
    port_frames: int
    port_ring: int
    pin: bool
    quick: bool
    directions: list[str]
    attach_cost: bool
    spin: bool = False
    idle_sweeps: int = 2000
    sweep_interval: float = 0.0  # mstackd's claim sweep; 0: its default
    attach_modes: tuple[str, ...] = ("native", "generic")  # the daemon's default goes first
    switch_mode: str = ""  # mstackd --mode for host A ("": its default)


def quick_plan() -> dict[str, Any]:
    return dict(
        sizes=[64, 1514], attached=[1, 16, 250], used=[1, 16, 250], reps=3, seconds=0.5,
        bulk_mb=100, bulk_reps=3,
    )  # fmt: skip


def full_plan() -> dict[str, Any]:
    return dict(
        sizes=list(FULL_SIZES), attached=[1, 16, 64, 250], used=[1, 16, 250], reps=5,
        seconds=1.0, bulk_mb=400, bulk_reps=5,
    )  # fmt: skip


def system_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count() or 0,
        "cpu_model": cpu_model,
        "git_commit": commit,
        "loadavg_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "link": "veth (test bed), AF_XDP copy mode",
    }


# -- the test bed ----------------------------------------------------------------------------


@dataclass
class Bed:
    a: RemoteHost
    b: RemoteHost
    d: Mstackd
    work: Path


@contextlib.contextmanager
def testbed(plan: Plan) -> Iterator[Bed]:
    if os.geteuid() != 0:
        raise BenchError("the switch benchmark needs root (network namespaces, XDP)")
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="mst-bench-"))
        work.chmod(0o755)
        stack.callback(shutil.rmtree, work, True)
        a = stack.enter_context(remote_host_cm())
        b = stack.enter_context(remote_host_cm())
        if not BPFFS.is_dir() or not os.path.ismount(BPFFS):
            subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)
        pins = BPFFS / unique_name("-bpf")
        stack.callback(unpin_tree, pins)
        pins.mkdir()
        run_dir = work / "run"
        run_dir.mkdir()
        run_dir.chmod(0o755)
        cfg = work / "mstackd.toml"
        n = max(plan.attached) + 4
        cfg.write_text(
            f"[daemon]\nmax_ports_per_process = {n}\numem_frames = {plan.port_frames}\n"
            f"ring_size = {plan.port_ring}\n"
            + (f"sweep_interval = {plan.sweep_interval}\n" if plan.sweep_interval else "")
        )
        mode = ["--mode", plan.switch_mode] if plan.switch_mode else []
        d = stack.enter_context(start_mstackd(a, pins, run_dir, "--config", str(cfg), *mode))
        yield Bed(a, b, d, work)


# -- the phases --------------------------------------------------------------------------------

BULK_SENDER = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = memoryview(bytearray(1 << 20))
with socket.create_connection((host, port), timeout=30) as s:
    while n > 0:
        k = min(n, len(buf))
        s.sendall(buf[:k])
        n -= k
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
"""


def bulk_once(b: RemoteHost, nbytes: int, timeout: float = 120.0) -> float:
    """Seconds for the kernel to move nbytes of TCP from B's namespace to the root namespace
    (timed at the receiver, from accept to the sender's FIN)."""
    with socket.socket() as ls:
        ls.bind((b.host_ip, 0))
        ls.listen(1)
        ls.settimeout(30)
        port = ls.getsockname()[1]
        p = b.python_popen(BULK_SENDER, b.host_ip, str(port), str(nbytes))
        try:
            conn, _ = ls.accept()
            with conn:
                conn.settimeout(timeout)
                buf = bytearray(1 << 20)
                got = 0
                t0 = time.perf_counter()
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    k = conn.recv_into(buf)
                    if not k:
                        break
                    got += k
                elapsed = time.perf_counter() - t0
                conn.sendall(b"k")
            p.wait(timeout=30)
        finally:
            stop_process(p)
    if got != nbytes:
        raise BenchError(f"bulk transfer: received {got} of {nbytes} bytes")
    return elapsed


def phase_attach_cost(bed: Bed, plan: Plan, log: Any) -> dict[str, Any]:
    """Detached and each attach mode, the order rotated every repetition. The first mode is
    the one mstackd picks by default (the daemon says which); "generic" works on veth as it
    comes (GRO is off by default there, and generic XDP needs it off)."""
    nbytes = plan.bulk_mb * 1_000_000
    times: dict[str, list[float]] = {"detached": []}
    # mstackd's default mode (its Config; the bench's config file does not set one) first.
    default = Config().mode
    modes = [default, *(m for m in plan.attach_modes if m != default)]
    bulk_once(bed.b, min(nbytes, 20_000_000))  # warm-up (neighbours, memory)
    for rep in range(plan.bulk_reps):
        order = ["detached", *modes]
        k = rep % len(order)
        for which in order[k:] + order[:k]:
            if which == "detached":
                times["detached"].append(bulk_once(bed.b, nbytes))
            else:
                bed.d.admin("attach", iface=bed.b.host_if, mode=which)
                time.sleep(0.2)
                try:
                    times.setdefault(which, []).append(bulk_once(bed.b, nbytes))
                finally:
                    bed.d.admin("detach", iface=bed.b.host_if)
                    time.sleep(0.2)
            log(f"attach cost rep {rep}: {which} {plan.bulk_mb} MB {times[which][-1]:.3f} s")
    return schema.attach_summary(nbytes, times["detached"], {m: times[m] for m in modes})


def _taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def phase_frames(bed: Bed, plan: Plan, log: Any) -> list[dict[str, Any]]:
    a, b = bed.a, bed.b
    exe = str(build_dir() / "bin" / "mstack-swbench")
    obj = str(build_dir() / "bench" / "sink.bpf.o")
    for f in (exe, obj):
        if not Path(f).exists():
            raise BenchError(f"{f} is missing: make -C bench/c BUILD={build_dir()}")
    # The sending core does the receive-side work too (veth): generators on CPU 0, the ports'
    # application on CPU 1; the port -> NIC limit line runs where the ports' sender runs.
    gen_cpu, app_cpu = (0, 1) if plan.pin and (os.cpu_count() or 1) >= 2 else (None, None)
    geom = ["--frames", str(plan.port_frames), "--ring", str(plan.port_ring)]
    bound = str(int(plan_seconds(plan) * 3 + 600))

    def ns(host: RemoteHost) -> list[str]:
        return ["ip", "netns", "exec", host.ns]

    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        app = Tool(
            [*_taskset(app_cpu), exe, "ports", "--run-dir", str(bed.d.run_dir),
             "--addr", a.host_ip, "--base-port", str(BASE_PORT), "--daddr", a.remote_ip,
             "--dport", str(SINK_PORT), "--dmac", a.remote_mac, *geom, "--max-seconds", bound,
             "--idle-sweeps", str(plan.idle_sweeps)],
            "ports", bed.work,
        )  # fmt: skip
        stack.callback(app.close)
        if app.readline() != "ready 0":
            raise BenchError(f"ports did not start: {app.stderr()}")
        sink_a = Tool(
            [*ns(a), exe, "sink", "--ifname", a.remote_if, "--obj", obj, "--max-seconds", bound],
            "sink-remote", bed.work,
        )  # fmt: skip
        stack.callback(sink_a.close)
        sink_b = Tool(
            [exe, "sink", "--ifname", b.host_if, "--obj", obj, "--max-seconds", bound],
            "sink-limit", bed.work,
        )  # fmt: skip
        stack.callback(sink_b.close)
        for t in (sink_a, sink_b):
            if t.readline() != "ready":
                raise BenchError(f"{t.name} did not start: {t.stderr()}")

        def gen_argv(host: RemoteHost, size: int, flows: int) -> list[str]:
            return [
                *ns(host), *_taskset(gen_cpu), exe, "gen", "--ifname", host.remote_if,
                "--smac", host.remote_mac, "--dmac", host.host_mac, "--saddr", host.remote_ip,
                "--daddr", host.host_ip, "--sport", str(GEN_SPORT), "--dport", str(BASE_PORT),
                "--flows", str(flows), "--size", str(size), "--seconds", str(plan.seconds),
                *geom,
            ]  # fmt: skip

        def ingress(system: str, size: int, attached: int, used: int, rep: int) -> None:
            counter, host = (app, a) if system == "switch" else (sink_b, b)
            spin = system == "switch" and plan.spin
            sw0 = switch_counters() if system == "switch" else {}
            before = counter.json_cmd(f"snap {plan.seconds + 2}" if spin else "snap")
            g = run_gen(gen_argv(host, size, used), plan.seconds)
            time.sleep(0.05)  # what is in flight lands
            after = counter.json_cmd("snap")
            sw1 = switch_counters() if system == "switch" else {}
            key = "rx_frames" if system == "switch" else "frames"
            delivered = int(after[key]) - int(before[key])
            detail: dict[str, Any] = {"gen": g}
            if system == "switch":
                # The switch's own count: frames its XDP program redirected to a port.
                detail["switch_to_port"] = sw1["to_port"] - sw0["to_port"]
                detail["ports_hit"] = after["ports_hit"]
                for k in ("k_rx_dropped", "k_rx_fill_ring_empty", "k_rx_ring_full"):
                    detail[k] = int(after[k]) - int(before[k])
            # Frames the switch put into the ports' XSKs: taken by the application, or dropped
            # by the XSK because the application was behind (no free fill-ring frame).
            switched = delivered + int(detail.get("k_rx_dropped", 0))
            runs.append(_run("nic_to_port", system, size, attached, used, rep, g, delivered,
                             switched, detail))  # fmt: skip

        def switch_counters() -> dict[str, int]:
            st = bed.d.admin("stats")
            eg = st["egress"]
            return {
                "to_port": int(st["ingress"]["to_port_conn"]),
                "egress_sent": int(eg["sent"]),
                "egress_fast": int(eg.get("fast", 0)),
                "egress_dropped": int(eg["frames"]) - int(eg["sent"]),
            }

        fast_state = False  # the XDP egress fast path as egress() last set it

        def egress(system: str, size: int, attached: int, used: int, rep: int) -> None:
            nonlocal fast_state
            switch = system in schema.SWITCHES
            # On for switch_xdp's runs alone (the limit line's too run without it).
            if fast_state != (system == "switch_xdp"):
                fast_state = system == "switch_xdp"
                if not set_fast_path(fast_state):
                    raise BenchError(
                        f"the egress fast path did not turn {'on' if fast_state else 'off'}"
                    )
            sw0 = switch_counters() if switch else {}
            probes0 = probes()
            before = sink_a.json_cmd("snap")
            if switch:
                g = app.json_cmd(f"send {size} {plan.seconds} {used}", plan.seconds + 30)
            else:
                g = run_gen(
                    [*_taskset(app_cpu), exe, "gen", "--ifname", a.host_if, "--smac", a.host_mac,
                     "--dmac", a.remote_mac, "--saddr", a.host_ip, "--daddr", a.remote_ip,
                     "--sport", str(BASE_PORT), "--dport", str(SINK_PORT), "--flows", "1",
                     "--size", str(size), "--seconds", str(plan.seconds), *geom],
                    plan.seconds,
                )  # fmt: skip
            time.sleep(0.05)
            after = sink_a.json_cmd("snap")
            # The fast path's probe frames (one per NIC every few seconds while it is on) land
            # in the sink too; they are not the run's.
            delivered = int(after["frames"]) - int(before["frames"]) - (probes() - probes0)
            detail: dict[str, Any] = {"gen": g}
            if switch:
                # The egress checks' own counts: frames let out (of them by the XDP fast path)
                # and frames dropped.
                sw1 = switch_counters()
                detail.update({k: sw1[k] - sw0[k] for k in ("egress_sent", "egress_fast",
                                                             "egress_dropped")})  # fmt: skip
            runs.append(_run("port_to_nic", system, size, attached, used, rep, g, delivered,
                             delivered, detail))  # fmt: skip

        def nic_fast_path() -> bool:
            nics = bed.d.admin("status")["nics"]
            return any((n.get("fast_path") or {}).get("on") for n in nics)

        def probes() -> int:
            nics = bed.d.admin("status")["nics"]
            return sum(int((n.get("fast_path") or {}).get("probes", 0)) for n in nics)

        def set_fast_path(on: bool) -> bool:
            """The XDP egress fast path on or off over admin.sock; True if it is as asked (on
            needs the NIC's probe to pass: here the sink's XDP program on A's remote end)."""
            bed.d.admin("fast_path", on=on)
            t0 = time.monotonic()
            while on and not nic_fast_path() and time.monotonic() - t0 < 10:
                time.sleep(0.1)
            return nic_fast_path() == on

        # mstackd runs the TC path by default ("switch"); where the fast path can be on, the same
        # ports are measured with it on too ("switch_xdp"), interleaved (docs/bench.md).
        try:
            fast_path_ok = set_fast_path(True)
        except RuntimeError:  # MSTACK_EGRESS_FAST=0: not available in this daemon
            fast_path_ok = False
        with contextlib.suppress(RuntimeError):
            set_fast_path(False)
        log(f"egress fast path {'available' if fast_path_ok else 'not available'}: "
            + ("switch_xdp measured" if fast_path_ok else "switch_xdp left out"))  # fmt: skip

        def hold(n: int) -> None:
            t0 = time.monotonic()
            reply = app.cmd(f"ports {n}", timeout=60 + 2.0 * max(plan.attached))
            if reply != f"ready {n}":
                raise BenchError(f"ports: ports {n}: {reply}; {app.stderr()}")
            log(f"{n} ports attached ({time.monotonic() - t0:.1f} s)")

        # Every repetition visits every attached count (ascending, then descending, ...), so
        # that phases with different numbers of ports are interleaved too, not run hours apart.
        counts = sorted(set(plan.attached))
        for rep in range(plan.reps):
            for attached in counts if rep % 2 == 0 else list(reversed(counts)):
                hold(attached)
                used_list = [u for u in plan.used if u <= attached]
                jobs: list[tuple[Any, str, int]] = []
                for direction in plan.directions:
                    fn = ingress if direction == "nic_to_port" else egress
                    jobs.append((fn, schema.LIMIT[direction], 1))
                    jobs += [(fn, "switch", u) for u in used_list]
                    if direction == "port_to_nic" and fast_path_ok:
                        jobs += [(fn, "switch_xdp", u) for u in used_list]
                for size in plan.sizes:
                    # A B A B ..., and the order turned round every other repetition.
                    for fn, system, used in jobs if rep % 2 == 0 else list(reversed(jobs)):
                        fn(system, size, attached, used, rep)
            log(f"  rep {rep + 1}/{plan.reps} done")
        # A tool that ends badly (a sanitizer's report, a leak) fails the benchmark.
        for t in (app, sink_a, sink_b):
            rc = t.close()
            if rc != 0:
                raise BenchError(f"{t.name} exited with status {rc}: {t.stderr()}")
    return runs


def _run(
    direction: str,
    system: str,
    size: int,
    attached: int,
    used: int,
    rep: int,
    g: dict[str, Any],
    delivered: int,
    switched: int,
    detail: dict[str, Any],
) -> dict[str, Any]:
    seconds = float(g["seconds"])
    return {
        "direction": direction,
        "system": system,
        "size": size,
        "ports_attached": attached,
        "ports_used": used,
        "rep": rep,
        "seconds": seconds,
        "sent": int(g["sent"]),
        "delivered": delivered,
        "switched": switched,
        "fps": delivered / seconds if seconds > 0 else 0.0,
        "switched_fps": switched / seconds if seconds > 0 else 0.0,
        "offered_fps": float(g["fps"]),
        "detail": detail,
    }


def plan_seconds(plan: Plan) -> float:
    """A rough bound on the frame phases' length (for the tools' own --max-seconds)."""
    per = len(plan.sizes) * plan.reps * (plan.seconds + 0.4)
    return sum(per * 2 * (1 + len([u for u in plan.used if u <= n])) for n in plan.attached)


# -- output ------------------------------------------------------------------------------------


def _fmt_fps(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.3f}"


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def dumps(doc: dict[str, Any]) -> str:
    """JSON with one line per run and per result row: readable, diffable, a tenth the size."""
    head = {k: v for k, v in doc.items() if k not in ("runs", "results")}
    text = json.dumps(head, indent=1)[: -len("\n}")]
    for key in ("results", "runs"):
        rows = ",\n".join("  " + json.dumps(r, separators=(", ", ": ")) for r in doc[key])
        text += f',\n "{key}": [\n{rows}\n ]' if rows else f',\n "{key}": []'
    return text + "\n}\n"


def table(doc: dict[str, Any]) -> str:
    lines = [
        f"switch benchmark  {doc['created']}  kernel {doc['system']['kernel']}  "
        f"{doc['system']['cpus']} CPUs  reps {doc['config']['repetitions']}  "
        f"{doc['config']['seconds']} s per run",
        "",
        f"{'direction':<12} {'system':<15} {'size':>5} {'attached':>8} {'used':>5} "
        f"{'Mfps med':>9} {'min':>7} {'max':>7} {'offered':>8} {'/limit':>7} {'/1 port':>8} "
        f"{'switched':>8} {'/limit':>7}",
    ]
    for r in doc["results"]:
        lines.append(
            f"{r['direction']:<12} {r['system']:<15} {r['size']:>5} {r['ports_attached']:>8} "
            f"{r['ports_used']:>5} {_fmt_fps(r['median_fps']):>9} {_fmt_fps(r['min_fps']):>7} "
            f"{_fmt_fps(r['max_fps']):>7} {_fmt_fps(r['median_offered_fps']):>8} "
            f"{_fmt_ratio(r['ratio_to_limit']):>7} {_fmt_ratio(r['ratio_to_one_port']):>8} "
            f"{_fmt_fps(r['median_switched_fps']):>8} "
            f"{_fmt_ratio(r['switched_ratio_to_limit']):>7}"
        )
    ac = doc["attach_cost"]
    if ac:
        lines += [
            "",
            f"attach cost: kernel TCP, {ac['bytes'] / 1e6:.0f} MB, {ac['repetitions']} reps: "
            f"detached {ac['median_detached_s']:.3f} s, attached ({ac['mode']}) "
            f"{ac['median_attached_s']:.3f} s (medians); rate with the switch = "
            f"{_fmt_ratio(ac['rate_ratio'])} of the rate without",
        ]
        for m in ac["modes"][1:]:
            lines.append(
                f"             {m['mode']}: {m['median_attached_s']:.3f} s, rate "
                f"{_fmt_ratio(m['rate_ratio'])} of the rate without"
            )
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> bool:
    """Figure 4's shape: median frames/s against frame size, one line per (ports attached,
    ports used), limit lines dashed; one panel per direction. Only if matplotlib is there."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    dirs = [d for d in schema.DIRECTIONS if any(r["direction"] == d for r in doc["results"])]
    if not dirs:
        return False
    fig, axes = plt.subplots(1, len(dirs), figsize=(6.5 * len(dirs), 4.5), squeeze=False)
    for ax, d in zip(axes[0], dirs, strict=True):
        series: dict[tuple[str, int, int], list[tuple[int, float]]] = {}
        for r in doc["results"]:
            if r["direction"] != d:
                continue
            sw = r["system"] in schema.SWITCHES
            key = (r["system"], r["ports_attached"] if sw else 0,
                   r["ports_used"] if sw else 0)  # fmt: skip
            series.setdefault(key, []).append((r["size"], r["median_fps"] / 1e6))
        for (system, att, used), pts in sorted(series.items()):
            pts = sorted(pts)
            if system == "switch":
                label, style = f"switch, {att} attached, {used} used", "-o"
            elif system == "switch_xdp":
                label, style = f"switch (XDP fast path), {att} attached, {used} used", ":s"
            else:
                # The limit line is measured in every phase: show the median over phases.
                by: dict[int, list[float]] = {}
                for s, v in pts:
                    by.setdefault(s, []).append(v)
                pts = [(s, sorted(v)[len(v) // 2]) for s, v in sorted(by.items())]
                label, style = system.replace("_", " "), "--k"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, ms=3)
        ax.set_title("NIC -> port" if d == "nic_to_port" else "port -> NIC")
        ax.set_xlabel("frame size (bytes, without FCS)")
        ax.set_ylabel("Mframes/s (median)")
        top = max((r["median_fps"] for r in doc["results"] if r["direction"] == d), default=1)
        ax.set_ylim(0, 1.6 * top / 1e6)  # room above the limit line for the legend
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- entry point ----------------------------------------------------------------------------------


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv: Sequence[str]) -> tuple[Plan, Path, bool]:
    ap = argparse.ArgumentParser(
        prog="python -m bench switch",
        description="Frames/s through the MultiStack switch, NIC -> port and port -> NIC, "
        "against limit lines; and the attach cost on kernel bulk TCP (docs/bench.md).",
    )
    ap.add_argument("--quick", action="store_true", help="short form (a few minutes)")
    ap.add_argument("--sizes", type=_ints, help="frame sizes, bytes without FCS (60..1514)")
    ap.add_argument("--attached", type=_ints, help="ports attached, e.g. 1,16,64,250")
    ap.add_argument("--used", type=_ints, help="ports the traffic is spread over, e.g. 1,16,250")
    ap.add_argument("--reps", type=int, help="repetitions of every run")
    ap.add_argument("--seconds", type=float, help="seconds of traffic per run")
    ap.add_argument("--bulk-mb", type=int, help="MB of kernel TCP per attach-cost run")
    ap.add_argument("--bulk-reps", type=int, help="attach-cost repetitions (each way)")
    ap.add_argument("--port-frames", type=int, default=2048, help="UMEM frames per port")
    ap.add_argument("--port-ring", type=int, default=1024, help="ring entries per port")
    ap.add_argument(
        "--no-pin", action="store_true",
        help="do not pin (default: generators on CPU 0, the ports' application on CPU 1; "
        "unpinned, the scheduler may put both on one CPU and the application falls behind)",
    )  # fmt: skip
    ap.add_argument(
        "--only", choices=["nic_to_port", "port_to_nic", "attach"], action="append",
        help="run only these parts (repeatable)",
    )  # fmt: skip
    ap.add_argument(
        "--spin", action="store_true",
        help="the ports' application busy-polls through every run instead of sleeping in "
        "poll() when its rings are empty",
    )  # fmt: skip
    ap.add_argument("--idle-sweeps", type=int, default=2000, help=argparse.SUPPRESS)
    ap.add_argument(
        "--attach-modes",
        default="native,generic",
        help="attach cost: the modes to measure (mstackd's default always, first)",
    )
    ap.add_argument(
        "--switch-mode", choices=["native", "generic"],
        help="the mode mstackd attaches host A's NIC in for the frame runs (default: its own)",
    )  # fmt: skip
    ap.add_argument(
        "--daemon-sweep", type=float, default=0.0, metavar="SECONDS",
        help="mstackd's sweep_interval for the run (default: mstackd's own default)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON and PNG")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(list(argv))
    base = quick_plan() if a.quick else full_plan()
    for k in ("sizes", "attached", "used", "reps", "seconds", "bulk_mb", "bulk_reps"):
        v = getattr(a, k)
        if v is not None:
            base[k] = v
    only = a.only or ["nic_to_port", "port_to_nic", "attach"]
    plan = Plan(
        sizes=base["sizes"], attached=base["attached"], used=base["used"], reps=base["reps"],
        seconds=base["seconds"], bulk_mb=base["bulk_mb"], bulk_reps=base["bulk_reps"],
        port_frames=a.port_frames, port_ring=a.port_ring, pin=not a.no_pin, quick=a.quick,
        directions=[d for d in schema.DIRECTIONS if d in only], attach_cost="attach" in only,
        spin=a.spin, idle_sweeps=a.idle_sweeps, sweep_interval=a.daemon_sweep,
        attach_modes=tuple(m for m in a.attach_modes.split(",") if m),
        switch_mode=a.switch_mode or "",
    )  # fmt: skip
    bad = [s for s in plan.sizes if not 60 <= s <= 1514]
    if bad or not plan.sizes:
        ap.error(f"--sizes: every size in 60..1514 (got {plan.sizes})")
    if not plan.attached or min(plan.attached) < 1 or max(plan.attached) > 1000:
        ap.error("--attached: 1..1000 ports")
    if not plan.used or min(plan.used) < 1:
        ap.error("--used: at least 1")
    if not 1 <= plan.reps <= 100 or not 0 < plan.seconds <= 60:
        ap.error("--reps 1..100, --seconds (0, 60]")
    if any(m not in ("native", "generic") for m in plan.attach_modes):
        ap.error("--attach-modes: native and/or generic")
    if not 1 <= plan.bulk_mb <= 4000 or not 1 <= plan.bulk_reps <= 50:
        ap.error("--bulk-mb 1..4000, --bulk-reps 1..50")
    return plan, a.out, not a.no_plot


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    plan, out_dir, want_plot = parse_args(argv)
    # SIGTERM (timeout, kill) and SIGINT, even if the shell left it ignored, unwind the test
    # bed's context managers: tools, mstackd, namespaces, links and pins go, pass or fail.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {msg}", file=sys.stderr, flush=True)

    notes: list[str] = []
    runs: list[dict[str, Any]] = []
    attach: dict[str, Any] | None = None
    sysinfo = system_info()
    try:
        with testbed(plan) as bed:
            log(f"test bed: A {bed.a.host_if}/{bed.a.ns}, B {bed.b.host_if}/{bed.b.ns}; "
                f"mstackd pid {bed.d.proc.pid}")  # fmt: skip
            if plan.attach_cost:
                attach = phase_attach_cost(bed, plan, log)
            if plan.directions:
                runs = phase_frames(bed, plan, log)
    except BenchError as e:
        print(f"bench switch: {e}", file=sys.stderr)
        return 1
    if plan.quick:
        notes.append("quick form: fewer sizes, port counts and repetitions, shorter runs")
    notes.append(
        "limit lines: NIC -> port against the same generator into a bare XDP_DROP on a twin "
        "veth (host B); port -> NIC against an XSK sending straight on host A's root end"
    )
    sysinfo["loadavg_end"] = list(os.getloadavg())
    doc: dict[str, Any] = {
        "schema": schema.SCHEMA_ID,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - started, 1),
        "quick": plan.quick,
        "system": sysinfo,
        "config": {
            "sizes": plan.sizes,
            "ports_attached": plan.attached,
            "ports_used": plan.used,
            "repetitions": plan.reps,
            "seconds": plan.seconds,
            "bulk_bytes": plan.bulk_mb * 1_000_000,
            "bulk_repetitions": plan.bulk_reps,
            "port_frames": plan.port_frames,
            "port_ring": plan.port_ring,
            "pinned": plan.pin,
            "counter_spin": plan.spin,
            "switch_mode": plan.switch_mode or None,
            "daemon_sweep_interval": plan.sweep_interval or None,
            "generator": "mstack-swbench gen: AF_XDP (copy mode) on the sending veth end, "
            "libmsport rings, 64-frame batches, one sendto per batch",
        },
        "runs": runs,
        "results": schema.summarize(runs),
        "attach_cost": attach,
        "notes": notes,
    }
    errors = schema.validate(doc)
    if errors:  # a bug here, not a property of the machine: say so, keep the data
        doc["notes"].append("schema errors: " + "; ".join(errors[:10]))
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"switch-{stamp}.json"
    path.write_text(dumps(doc))
    print(table(doc))
    print(f"\nJSON: {path}")
    if want_plot:
        png = out_dir / f"switch-{stamp}.png"
        if plot(doc, png):
            print(f"plot: {png}")
        else:
            print("plot: skipped (matplotlib is not installed)")
    return 1 if errors else 0
