"""`make demo`: Debian's nginx, unmodified, on UTCP through `mstack-run`, on a test bed of its own.

A "remote host" in a network namespace reaches this host over a veth pair; mstackd attaches the
switch to this host's end. nginx (master, 2 workers as www-data, `daemon on`, sendfile) starts
under `mstack-run --strict` with a policy that lists its listener; its workers get UTCP stacks
on AF_XDP ports of their own and join the listener's listen group. The remote host fetches
files of 0 B to 10 MB (sha256 checked), holds a connection open while `mstackctl conns` shows
it, and the demo proves UTCP carried the traffic (the kernel's `ss` never saw a connection of
the remote host on that port; the switch counters rose). A short wrk run against it and against
the same nginx on the kernel gives a smoke figure (`make bench` is the measurement). Everything
is removed at the end, pass or fail; the exit status is 0 only if every check passed.

Needs root. MSTACK_BUILD_DIR selects the build that mstack-run and mstackd use (default: build/
of this checkout). Runs on the product's runtime dependencies only (no pytest): its helpers are
scripts/demo_kit.py and tests/testbed/netns.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_kit import (
    BIN,
    CURL,
    NGINX,
    WRK,
    DemoError,
    Nginx,
    SsWatch,
    alive,
    bpffs,
    held_connection,
    mstackd,
    remote_curl,
    remote_wrk,
    running_nginx,
    wait_group,
)

from mstack.paths import ShimNotFound, shim_path
from testbed.netns import link_exists, netns_list, remote_host_cm
from testbed.web import make_docroot

UTCP_PORT, KERNEL_PORT = 8080, 8081
WORKERS = 2
SIZES = {"0.bin": 0, "1.bin": 1, "1k.bin": 1 << 10, "64k.bin": 64 << 10,
         "1m.bin": 1 << 20, "10m.bin": 10 << 20}  # fmt: skip
BENCH_FILE, BENCH_SECS, BENCH_ROUNDS, BENCH_CONNS = "1k.bin", 2, 3, 16
STEPS = 9


def say(msg: str = "") -> None:
    print(msg, flush=True)


def indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + ln for ln in text.rstrip().splitlines())


def human(n: int) -> str:
    for unit, size in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n // size} {unit}"
    return f"{n} B"


class Demo:
    def __init__(self) -> None:
        self.step_no = 0
        self.passed: list[str] = []
        self.failed: list[str] = []

    def step(self, title: str) -> None:
        self.step_no += 1
        say()
        say(f"[{self.step_no}/{STEPS}] {title}")

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        """One check: printed as ok/FAILED; the demo's exit status is their conjunction."""
        (self.passed if ok else self.failed).append(what)
        say(f"  {'ok' if ok else 'FAILED'}: {what}" + (f" — {detail}" if detail else ""))
        return ok

    def require(self, ok: bool, what: str, detail: str = "") -> None:
        """A check the following steps depend on: a failure ends the demo (after cleanup)."""
        if not self.check(ok, what, detail):
            raise DemoError(what + (f": {detail}" if detail else ""))


def preflight() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("make demo needs root (network namespaces, XDP, AF_XDP)")
    try:
        shim_path()
    except ShimNotFound as e:
        problems.append(str(e))
    for prog in (NGINX, CURL, WRK):
        if not prog.exists():
            problems.append(f"{prog} is not installed (make deps installs it)")
    for entry in ("mstackd", "mstackctl", "mstack-run"):
        if not (BIN / entry).exists():
            problems.append(f"{BIN / entry} is missing: run make deps")
    return problems


STEERED = ("to_port_new", "to_port_flow", "to_port_conn")


def counters(stats: dict[str, Any]) -> dict[str, int]:
    """The switch counters the demo looks at, from `mstackctl stats --json`."""
    ing, eg = stats.get("ingress", {}), stats.get("egress", {})
    return {
        "steered": sum(int(ing.get(k, 0)) for k in STEERED),
        "new_flows": int(ing.get("to_port_new", 0)),
        "sent": int(eg.get("sent", 0)),
        # every other egress counter but `frames` is a drop by reason (daemon/bpf/mstack_abi.h)
        "dropped": sum(int(v) for k, v in eg.items() if k not in ("sent", "frames")),
        "group_empty": int(ing.get("group_empty", 0)),
    }


def run(demo: Demo, work: Path, stack: contextlib.ExitStack, made: Made) -> None:
    demo.step('test bed: a "remote host" in a network namespace, a veth pair to this host')
    host = stack.enter_context(remote_host_cm())
    made.netns.append(host.ns)
    made.links.append(host.host_if)
    say(f"  remote host {host.remote_ip} (namespace {host.ns})  <-- veth -->  this host "
        f"{host.host_ip} ({host.host_if})")  # fmt: skip

    demo.step(f"mstackd: the switch attached to {host.host_if} (XDP demux, per-port egress check)")
    run_dir = work / "run"
    run_dir.mkdir(mode=0o755)
    d = stack.enter_context(mstackd(host.host_if, run_dir))
    made.daemon = d.proc
    made.netns.append(d.ports_netns)
    made.pins.append(d.bpf_dir.parent)
    say(f"  mstackd pid {d.proc.pid}, run dir {run_dir}")
    say(indent(d.ctl("status")))

    demo.step(f"Debian's nginx under mstack-run, its listener {host.host_ip}:{UTCP_PORT} listed "
              "for UTCP")  # fmt: skip
    policy = work / "policy.toml"
    policy.write_text(
        f'[apps.web]\nexe = ["nginx"]\nlisten = ["{host.host_ip}:{UTCP_PORT}"]\n\n'
        '[apps.web.tcp]\ncongestion_control = "cubic"\nsack = true\nwindow_scaling = true\n'
        "timestamps = true\ninitial_window = 10\n"
    )
    d.ctl("policy", "check", str(policy))
    say(f"  {policy} (checked with mstackctl policy check):")
    say(indent(policy.read_text(), "    | "))
    (work / "utcp").mkdir(mode=0o755)
    files = make_docroot(work / "utcp" / "www", SIZES)
    wrap = [str(BIN / "mstack-run"), "--strict", "--policy", str(policy), "--app", "web", "--"]
    ng = Nginx(work / "utcp", host.host_ip, UTCP_PORT, WORKERS, wrap, d.env())
    cmd = " ".join(ng.argv()[len(wrap) :])
    say(f"  $ mstack-run --strict --policy {policy.name} --app web -- {cmd}")
    stack.enter_context(running_nginx(ng))
    workers = ng.worker_procs()
    assert ng.master is not None
    made.nginx(ng)
    say(f"  nginx.conf: user www-data; worker_processes {WORKERS}; daemon on; sendfile on; "
        "tcp_nopush on; gzip on; mime types")  # fmt: skip
    users = {w.pid: w.username() for w in workers}
    say(
        f"  master pid {ng.master.pid} ({ng.master.username()}), workers "
        + ", ".join(f"{p} ({u})" for p, u in users.items())
    )
    maps_ok = all("libmstack.so" in Path(f"/proc/{p.pid}/maps").read_text()
                  for p in [ng.master, *workers])  # fmt: skip
    demo.check(maps_ok, "libmstack.so is loaded in the master and in both workers")
    members = wait_group(d, UTCP_PORT, WORKERS)
    demo.require(len(members) >= WORKERS, "both workers joined the listen group",
                 f"ports {members}; the master, which never waits, is not in it")  # fmt: skip
    before = counters(d.ctl_json("stats"))

    watch = stack.enter_context(SsWatch(host.remote_ip, UTCP_PORT))

    demo.step("pages fetched from the remote host with curl, sha256 checked against the files")
    names = sorted(SIZES, key=lambda n: SIZES[n])
    base = f"http://{host.host_ip}:{UTCP_PORT}"
    t0 = time.monotonic()
    for keepalive in (True, False):
        got = remote_curl(host, base, names, work / "out", keepalive)
        bad = [f"{f.name}: HTTP {f.code}, {f.size} B" for f in got
               if f.code != 200 or f.sha != files[f"/{f.name}"]]  # fmt: skip
        conns = sum(f.connects for f in got)
        mode = "one keep-alive connection" if keepalive else "Connection: close, one each"
        demo.check(not bad and conns == (1 if keepalive else len(got)),
                   f"{len(got)} files ({', '.join(human(SIZES[n]) for n in names)}) over {mode}",
                   "; ".join(bad) or f"{conns} connection(s), every body byte-exact")  # fmt: skip
    say(f"  ({time.monotonic() - t0:.1f} s for both rounds, {human(2 * sum(SIZES.values()))})")

    demo.step("mstackctl ports and bindings: one AF_XDP port per worker, the listen group")
    say("  $ mstackctl ports")
    say(indent(d.ctl("ports")))
    say("  $ mstackctl bindings")
    say(indent(d.ctl("bindings")))
    ports = d.ctl_json("ports")
    port_pids = {p["pid"] for p in ports}
    demo.check(port_pids >= set(users) and ng.master.pid not in port_pids,
               "each worker has a port of its own, the master none",
               f"port owners {sorted(port_pids)}")  # fmt: skip

    demo.step("a connection held open from the remote host: mstackctl conns")
    with held_connection(host, host.host_ip, UTCP_PORT, "/64k.bin") as rport:
        say(f"  the remote host holds {host.remote_ip}:{rport} -> {host.host_ip}:{UTCP_PORT} "
            "open (keep-alive, after a 64 KB GET)")  # fmt: skip
        ss_now = watch.sample()
        mine: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5  # stacks publish their connections every 250 ms
        while not mine and time.monotonic() < deadline:
            mine = [c for c in d.ctl_json("conns")
                    if c.get("remote") == f"{host.remote_ip}:{rport}"
                    and c.get("state") == "ESTABLISHED"]  # fmt: skip
            if not mine:
                time.sleep(0.1)
        say("  $ mstackctl conns")
        say(indent(d.ctl("conns")))
        demo.check(not ss_now, "the kernel does not have it (ss, sampled while it is open)",
                   "; ".join(ss_now))  # fmt: skip
        if demo.check(bool(mine), "mstackctl conns shows it ESTABLISHED in a worker's stack"):
            c, o = mine[0], mine[0].get("options", {})
            rtt = c["srtt_us"] / 1000
            say(f"    pid {c.get('pid')}: cwnd {c.get('cwnd')} bytes, srtt {rtt:.2f} ms, "
                f"mss {o.get('mss')}, wscale {o.get('wscale')}, cc {c.get('cc')}")  # fmt: skip
            demo.check(c.get("pid") in users and c.get("cc") == "cubic"
                       and bool(o.get("sack")) and bool(o.get("timestamps"))
                       and bool(o.get("wscale")),
                       "the policy's transport was negotiated: cubic, SACK, timestamps, "
                       "window scaling")  # fmt: skip
    demo.check(True, "the held connection served a second request afterwards")

    demo.step("proof it was UTCP: the kernel never held these connections, the switch did")
    after = counters(d.ctl_json("stats"))
    delta = {k: after[k] - before[k] for k in after}
    demo.check(not watch.seen, f"ss: no established kernel connection from {host.remote_ip} to "
               f":{UTCP_PORT}", f"{watch.samples} samples during the run"
               + (f"; seen: {sorted(watch.seen)[:3]}" if watch.seen else ""))  # fmt: skip
    demo.check(delta["new_flows"] >= len(names) + 2 and delta["steered"] > 0 and delta["sent"] > 0,
               "switch counters rose", f"{delta['new_flows']} new flows (SYNs) steered to ports, "
               f"{delta['steered']} frames steered in, {delta['sent']} frames sent out by the "
               "ports")  # fmt: skip
    demo.check(
        delta["dropped"] == 0 and delta["group_empty"] == 0,
        "nothing dropped by the egress check, no flow left to the kernel's shadow",
        f"egress drops {delta['dropped']}, empty-group passes {delta['group_empty']}",
    )
    msgs = ng.shim_messages()
    demo.check(not msgs, "the shim reported no listed socket left on the kernel",
               "; ".join(msgs[:3]))  # fmt: skip

    demo.step(f"side by side with nginx on the kernel (same config, port {KERNEL_PORT}): wrk, "
              "a smoke figure")  # fmt: skip
    (work / "kernel").mkdir(mode=0o755)
    (work / "kernel" / "www").symlink_to(work / "utcp" / "www")
    kng = Nginx(work / "kernel", host.host_ip, KERNEL_PORT, WORKERS)
    stack.enter_context(running_nginx(kng))
    assert kng.master is not None
    made.nginx(kng)
    kwatch = stack.enter_context(SsWatch(host.remote_ip, KERNEL_PORT))
    say(f"  wrk -t1 -c{BENCH_CONNS} -d{BENCH_SECS}s /{BENCH_FILE} (keep-alive) from the remote "
        f"host, interleaved, {BENCH_ROUNDS} rounds each")  # fmt: skip
    rps: dict[str, list[float]] = {"utcp": [], "kernel": []}
    errors: list[str] = []
    for _ in range(BENCH_ROUNDS):
        for label, port in (("utcp", UTCP_PORT), ("kernel", KERNEL_PORT)):
            r = remote_wrk(host, f"http://{host.host_ip}:{port}/{BENCH_FILE}", BENCH_SECS,
                           BENCH_CONNS)  # fmt: skip
            rps[label].append(r.rps)
            if r.errors:
                errors.append(f"{label}: {r.errors}")
    med = {k: statistics.median(v) for k, v in rps.items()}
    for label, name in (("utcp", "nginx on UTCP (mstack-run)"), ("kernel", "nginx on the kernel")):
        say(f"  {name:28} {med[label]:9.0f} requests/s (median; runs: "
            f"{', '.join(f'{x:.0f}' for x in rps[label])})")  # fmt: skip
    ratio = med["utcp"] / med["kernel"] if med["kernel"] else float("nan")
    say(f"  ratio UTCP / kernel: {ratio:.2f}")
    say("  A smoke figure only: a few seconds, one load generator on the same 2 cores as the")
    say("  servers. `make bench` is the measurement (interleaved runs, CPU per request,")
    say("  latency at a fixed rate; docs/bench.md).")
    demo.check(not errors, "wrk saw no socket errors and no error responses", "; ".join(errors))
    demo.check(not watch.seen, f"still no kernel connection on :{UTCP_PORT} under load")
    demo.check(bool(kwatch.seen), f"ss does see the kernel nginx's connections on :{KERNEL_PORT}",
               f"{len(kwatch.seen)} seen — the watch sees what it looks for")  # fmt: skip


@dataclass
class Made:
    """What the demo created, to prove after the teardown that none of it is left."""

    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    pins: list[Path] = field(default_factory=list)
    procs: list[psutil.Process] = field(default_factory=list)
    daemon: subprocess.Popen[str] | None = None

    def nginx(self, ng: Nginx) -> None:
        assert ng.master is not None
        self.procs += [ng.master, *ng.worker_procs()]

    def report(self, demo: Demo) -> None:
        """After the teardown: one check per kind of thing created, proving it is gone."""
        if self.procs:
            left = [f"{p.pid} ({' '.join(p.cmdline())[:40]})" for p in self.procs if alive(p)]
            pids = ", ".join(str(p.pid) for p in self.procs)
            demo.check(not left, f"nginx: {len(self.procs)} processes stopped by pid ({pids})",
                       f"still running: {'; '.join(left)}" if left else "")  # fmt: skip
        if self.daemon is not None:
            rc = self.daemon.returncode
            demo.check(rc == 0, f"mstackd (pid {self.daemon.pid}) stopped by SIGTERM, exit {rc}")
        left = [f"namespace {n}" for n in self.netns if n in netns_list()]
        left += [f"link {n}" for n in self.links if link_exists(n)]
        left += [f"pins {p}" for p in self.pins if p.exists()]
        gone = [*self.netns, *self.links, *map(str, self.pins)]
        if gone:
            demo.check(not left, f"test bed removed: {', '.join(gone)}", "; ".join(left))


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    t0 = time.monotonic()
    say("MultiStack demo: Debian's nginx, unmodified, on UTCP through mstack-run")
    problems = preflight()
    if problems:
        for p in problems:
            say(f"FAILED: {p}")
        return 1
    say(f"shim {shim_path()}; mstackd, mstackctl, mstack-run from {BIN}; nginx {NGINX}")
    demo, made = Demo(), Made()
    work = Path(tempfile.mkdtemp(prefix="mstack-demo-"))
    work.chmod(0o755)  # nginx's workers (www-data) read the docroot below it
    error = ""
    # SIGTERM (a CI timeout, `kill`) tears down like Ctrl-C does: through every context manager.
    signal.signal(signal.SIGTERM, interrupted)
    try:
        with bpffs(), contextlib.ExitStack() as stack:
            run(demo, work, stack, made)
            demo.step("clean up: nginx stopped by pid, mstackd stopped, test bed removed")
    except DemoError as e:
        error = str(e)
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception as e:  # a bug or an unexpected tool failure: still a clear message
        error = f"{type(e).__name__}: {e}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if error:
        say()
        say(f"[{demo.step_no}/{STEPS}] FAILED: {indent(error, '  ').strip()}")
        say()
        say("clean up, after the failure:")
    made.report(demo)
    ok = not error and not demo.failed
    say()
    say(f"result: {'OK' if ok else 'FAILED'} — {len(demo.passed)} checks passed, "
        f"{len(demo.failed)} failed{', stopped by an error' if error else ''} "
        f"({time.monotonic() - t0:.0f} s)")  # fmt: skip
    for f in demo.failed:
        say(f"  failed: {f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
