"""A/B driver for mstack-httpd on UTCP: several builds of mstack-httpd (and kernel nginx) on the
HTTP benchmark's test bed, wrk runs interleaved across them (A B A B ...), optionally a perf
profile or a packet capture during chosen runs. For finding and showing a change's effect, not
for the published figures (`python -m bench http` makes those).

  python -m bench.httpd_ab --variant old=/work/b-old/bin/mstack-httpd \
      --variant new=/work/b-new/bin/mstack-httpd --nginx --size 32 --mode close --runs 5

Each variant is its own mstack-httpd process with its own port from mstackd (listen port 8090+i
on host A, the switch's host); nginx (with --nginx) listens on host B (no switch), as in the
benchmark. Servers on CPU 1, wrk on CPU 0. Per run: req/s, own CPU µs per request (the
servers' cgroup + kernel threads, as bench http counts it), the server process's own CPU µs per
request, the client namespace's TCP states towards the server and the server's UTCP counters.

--warm 1x8,4x5 makes runs of other sizes first (the benchmark's order); --client-ports LO-HI
narrows the load generator's ephemeral range (the close-mode degradation of docs/bench.md shows
up within a minute with 40000-47999); --perf NAME:RUNS records `perf record -g` of that server
(or of a whole CPU with --perf-cpu, or tracepoints with --perf-events) during those runs;
--tcpdump RUN captures the client side of that run. Files go to --out."""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import http as H


def start_variant(plan: H.Plan, bed: H.Bed, exe: Path, port: int, extra: list[str]) -> Any:
    log = bed.work / f"httpd-{port}.stderr"
    with open(log, "wb") as err:
        p = subprocess.Popen(
            [*H.pin(plan, H.SERVER_CPU), str(exe), "--listen", f"{bed.a.host_ip}:{port}",
             "--root", str(bed.www), "--run-dir", str(bed.d.run_dir), *extra],
            stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=bed.cg.enter,
        )  # fmt: skip
    try:
        H.wait_line(p, "ready", 20)
    except Exception as e:
        raise H.BenchError(f"{exe} did not start: {e}; {log.read_text()[-1000:]}") from e
    return p


def flow_entries(bed: H.Bed) -> int | None:
    """Entries in the switch's flow map (bpftool; None if it cannot be read)."""
    with contextlib.suppress(Exception):
        for m in json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True,
                                           text=True, timeout=30).stdout):  # fmt: skip
            if "flow" in m.get("name", ""):
                out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(m["id"])],
                                     capture_output=True, text=True, timeout=60).stdout  # fmt: skip
                return len(json.loads(out))
    return None


def ss_states(host: H.RemoteHost, port: int) -> dict[str, int]:
    """The client side's (wrk's namespace) TCP states towards one server port."""
    out = host.run(["ss", "-tanH", f"dport = :{port}"], check=False).stdout
    st: dict[str, int] = {}
    for ln in out.splitlines():
        if ln.split():
            st[ln.split()[0]] = st.get(ln.split()[0], 0) + 1
    return st


def stack_view(pid: int) -> dict[str, Any] | None:
    """The server's own statistics region (the memfd it shares with mstackd): UTCP's counters
    and its connections' states."""
    import mmap
    import os

    from mstackd import statsregion

    with contextlib.suppress(Exception):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if "mstack-stats" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                with open(f"/proc/{pid}/fd/{fd}", "rb") as f:
                    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                r = statsregion.read(m)
                states: dict[str, int] = {}
                for c in r["conns"]:
                    states[c["state"]] = states.get(c["state"], 0) + 1
                st = r["stack"]
                return {"states": states, **{k: st[k] for k in (
                    "conns_in_use", "time_wait_in_use", "retransmits", "rto_timeouts",
                    "tx_dropped", "frames_out", "frames_in") if k in st}}  # fmt: skip
    return None


def server_pids(pids: list[int]) -> list[int]:
    """The servers' processes and their children (nginx's workers): perf samples are theirs."""
    import psutil

    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            out += [p.pid] + [c.pid for c in p.children(recursive=True)]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.httpd_ab")
    ap.add_argument("--variant", action="append", default=[], help="NAME=PATH to mstack-httpd")
    ap.add_argument("--nginx", action="store_true", help="kernel nginx on host B too")
    ap.add_argument("--size", type=int, default=32, help="KB")
    ap.add_argument("--mode", default="close", choices=["close", "keepalive"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warm", default="", help="KBxRUNS,... run before (e.g. 1x8,4x5), logged")
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument(
        "--perf",
        action="append",
        default=[],
        help="NAME:1,3 perf record -g of that server in those runs (repeatable)",
    )
    ap.add_argument("--perf-freq", type=int, default=2000)
    ap.add_argument(
        "--perf-stat",
        action="store_true",
        help="perf stat -e PERF_EVENTS on the server instead of perf record",
    )
    ap.add_argument("--perf-cpu", default="", help="with -g: the whole of this CPU, not the server")
    ap.add_argument(
        "--perf-events",
        default="",
        help="instead of -g on the server: perf record -a -C 1 -e EVENTS",
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/httpd-ab"))
    ap.add_argument("--tcpdump", type=int, default=0, help="capture wrk's side in this run")
    ap.add_argument("--client-ports", default="", help="LO-HI: the client's ephemeral range")
    ap.add_argument(
        "--latency",
        type=float,
        default=0,
        help="h2load at this rate (req/s) against each system after each run",
    )
    ap.add_argument(
        "--alternate-gro",
        action="store_true",
        help="GRO on the client's veth end in even runs, off in odd ones (an "
        "experiment: how much of the cost is the client's per-segment receive)",
    )
    ap.add_argument(
        "--alternate-fast-path",
        action="store_true",
        help="GRO on at the client ends; mstackd's XDP egress fast path on in even runs, off "
        "(TC only, `mstackctl fast-path off`) in odd ones",
    )
    ap.add_argument("--flows", action="store_true", help="count the switch's flow entries")
    a = ap.parse_args(argv)
    variants = [(v.split("=", 1)[0], Path(v.split("=", 1)[1])) for v in a.variant]
    a.out.mkdir(parents=True, exist_ok=True)
    perf_runs = runs_of(a.perf)
    warm_kb = {int(w.split("x")[0]) for w in a.warm.split(",") if w}
    plan = ab_plan(a, sorted({a.size * 1024} | {k * 1024 for k in warm_kb}),
                   ["nginx-kernel"] if a.nginx else [])  # fmt: skip
    log = timed_log()
    rows: list[dict[str, Any]] = []
    with H.testbed(plan, log) as bed, contextlib.ExitStack() as stack:
        systems = list(bed.systems.values())
        if a.client_ports:
            lo, hi = a.client_ports.split("-")
            for h in (bed.a, bed.b):
                h.run(["sysctl", "-q", f"net.ipv4.ip_local_port_range={lo} {hi}"])
        for i, (name, exe) in enumerate(variants):
            p = start_variant(plan, bed, exe, 8090 + i, [])
            stack.callback(H.stop_process, p, 10.0)
            systems.append(H.System(name, bed.a, bed.a.host_ip, 8090 + i, str(exe), True, [p]))
        for s in systems:
            bad = [v for v in H.verify(bed, s, "before") if not v["ok"]]
            if bad:
                log(f"{s.name}: verification failed: {bad[0]['detail']}")
        for w in filter(None, a.warm.split(",")):
            kb, n = (int(x) for x in w.split("x"))
            for i in range(n):
                for s in systems:
                    r = H.rps_run(plan, bed.cg, s, a.mode, kb * 1024, -1)
                    r["warm"] = True
                    r["client_states"] = ss_states(bed.a, s.port) if s.port >= 8090 else {}
                    rows.append(r)
                    log(f"warm {kb} KB {i + 1} {s.name:<14} {r['rps']:8.0f} req/s  own "
                        f"{r['cpu_per_req_own_us'] or 0:7.1f} us/req"
                        + ("" if r["ok"] else f"  FAILED {r['error']}"))  # fmt: skip
        if a.alternate_fast_path:
            for h in (bed.a, bed.b):
                h.run(["ethtool", "-K", h.remote_if, "gro", "on"])
        for run in range(1, a.runs + 1):
            if a.alternate_fast_path:
                bed.d.admin("fast_path", on=run % 2 == 0)
                wait_fast_path(bed, run % 2 == 0, log)
            if a.alternate_gro:
                for h in (bed.a, bed.b):
                    h.run(["ethtool", "-K", h.remote_if, "gro", "on" if run % 2 == 0 else "off"])
                wait_fast_path(bed, run % 2 == 0, log)
            k = (run - 1) % len(systems)
            for s in systems[k:] + systems[:k]:
                perf = None
                if run in perf_runs.get(s.name, ()):
                    data = a.out / f"perf-{s.name}-run{run}.data"
                    what = (
                        ["-e", a.perf_events, "-p", str(s.pids()[0])]
                        if a.perf_stat
                        else (
                            ["-a", "-C", H.SERVER_CPU, "-e", a.perf_events]
                            if a.perf_events
                            else ["-g", "-F", str(a.perf_freq), "-a", "-C", a.perf_cpu]
                            if a.perf_cpu
                            else ["-g", "-F", str(a.perf_freq), "-p", str(s.pids()[0])]
                        )
                    )
                    perf = subprocess.Popen(
                        ["perf", "stat" if a.perf_stat else "record", *what, "-o", str(data),
                         "--", "sleep",
                         str(a.seconds + 0.6)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(0.3)
                dump = None
                if a.tcpdump == run and s.port >= 8090:
                    dump = subprocess.Popen(
                        [*H.ns(s.host), "tcpdump", "-i", s.host.remote_if, "-s", "96", "-w",
                         str(a.out / f"{s.name}-run{run}.pcap"), f"tcp port {s.port}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(0.5)
                r = H.rps_run(plan, bed.cg, s, a.mode, a.size * 1024, run)
                if dump is not None:
                    time.sleep(0.3)
                    dump.terminate()
                    dump.wait(timeout=10)
                if perf is not None:
                    perf.wait(timeout=60)
                r["run"] = run
                r["client_gro"] = a.alternate_gro and run % 2 == 0
                r["fast_path"] = a.alternate_fast_path and run % 2 == 0
                r["server_pids"] = server_pids(s.pids())
                extra = ""
                if s.port >= 8090:
                    time.sleep(0.2)
                    r["client_states"] = ss_states(bed.a, s.port)
                    r["server_stack"] = stack_view(s.pids()[0])
                    extra = f" client {r['client_states']} server {r['server_stack']}"
                if a.flows:
                    r["flows"] = flow_entries(bed)
                    extra += f" flows {r['flows']}"
                if a.latency:
                    x = H.latency_run(plan, bed, s, a.mode, a.size * 1024, a.latency)
                    r["latency"] = {k: x[k] for k in ("ok", "p50_us", "p90_us", "p99_us",
                                                      "max_us")}  # fmt: skip
                    extra += f" latency p50 {x['p50_us']} p90 {x['p90_us']} p99 {x['p99_us']}"
                rows.append(r)
                log(f"run {run} {s.name:<14} {r['rps']:8.0f} req/s  own "
                    f"{r['cpu_per_req_own_us'] or 0:7.1f} us/req  server "
                    f"{r['server_cpu_per_req_us'] or 0:7.1f} us/req"
                    + ("" if r["ok"] else f"  FAILED {r['error']}") + extra)  # fmt: skip
        for s in systems:
            bad = [v for v in H.verify(bed, s, "after") if not v["ok"]]
            if bad:
                log(f"{s.name}: verification after failed: {bad[0]['detail']}")
    print(f"\n{a.mode} {a.size} KB, {a.runs} runs x {a.seconds} s interleaved")
    summarize([s.name for s in systems], rows)
    (a.out / "runs.json").write_text(json.dumps(rows, indent=1))
    return 0


def wait_fast_path(bed: H.Bed, on: bool, log: Any, timeout: float = 15.0) -> None:
    """mstackd's egress fast path follows the client end's GRO (its probe, every 5 s): wait
    until it has, so a run measures one path (a daemon without one is left alone)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        nics = bed.d.admin("status")["nics"]
        states = [n["fast_path"]["on"] for n in nics if n.get("fast_path", {}).get("enabled")]
        if not states or all(s == on for s in states):
            if states:
                log(f"egress fast path {'on' if on else 'off'}")
            return
        time.sleep(0.2)
    log(f"egress fast path did not turn {'on' if on else 'off'} within {timeout:.0f} s")


def ab_plan(a: argparse.Namespace, sizes: list[int], systems: list[str]) -> H.Plan:
    """The benchmark's plan for an A/B tool's options (--mode, --runs, --seconds,
    --connections): its own systems beside the reference ones, pinned, short latency runs."""
    return H.Plan(sizes=sizes, systems=systems, modes=[a.mode], reps=a.runs, seconds=a.seconds,
                  connections=a.connections, latency_seconds=1, latency_fraction=0.5,
                  latency_clients=8, pin=True, quick=True)  # fmt: skip


def timed_log() -> Callable[[str], None]:
    """A log to stderr, each line stamped with the seconds since this call."""
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}] {msg}", file=sys.stderr, flush=True)

    return log


def runs_of(specs: list[str]) -> dict[str, set[int]]:
    """`SYSTEM:1,3` options: the run numbers to profile, per system."""
    out: dict[str, set[int]] = {}
    for p in specs:
        name, r = p.split(":")
        out[name] = {int(x) for x in r.split(",")}
    return out


def summarize(names: list[str], rows: list[dict[str, Any]]) -> None:
    """Medians per system of an interleaved run, and ratios to the first (warm-up runs left
    out)."""
    print(f"{'system':<14} {'req/s med':>9} {'own us':>7} {'srv us':>7}   per run req/s")
    base = None
    for n in names:
        rs = [r for r in rows if r["system"] == n and r["ok"] and not r.get("warm")]
        if not rs:
            print(f"{n:<14} no ok run")
            continue
        rps = statistics.median(r["rps"] for r in rs)
        own = statistics.median(r["cpu_per_req_own_us"] or 0 for r in rs)
        srv = statistics.median(r["server_cpu_per_req_us"] or 0 for r in rs)
        base = base or (rps, own, srv)
        print(f"{n:<14} {rps:9.0f} {own:7.1f} {srv:7.1f}   "
              + " ".join(f"{r['rps']:.0f}" for r in rs)
              + f"   (vs {names[0]}: x{rps / base[0]:.2f} rps, x{own / base[1]:.2f} own CPU, "
              f"x{srv / base[2]:.2f} server CPU)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
