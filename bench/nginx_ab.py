"""A/B driver for nginx under mstack-run: several builds of libmstack.so, each carrying its own
nginx (one worker, the benchmark's configuration) on the HTTP benchmark's test bed, wrk runs
interleaved across them (A B A B ...), optionally a perf profile or a syscall count of a
variant's nginx worker during chosen runs. For finding and showing a shim change's effect, not
for the published figures (`python -m bench http` makes those).

  python -m bench.nginx_ab --variant old=/tmp/libmstack-old.so \
      --variant new=/work/build/lib/libmstack.so --size 1 --mode keepalive --runs 5

Variant i listens on host A (the switch's host) at port 8100+i, its listener listed for UTCP
by a policy; nginx is started as the benchmark starts it (MSTACK_SHIM selects the library).
Servers on CPU 1, wrk on CPU 0. --env NAME:KEY=VALUE gives one variant's nginx an environment
variable of its own (the same library twice, e.g. MSTACK_AUTOCORK=0 for one). --nginx adds
kernel nginx on host B, --httpd mstack-httpd on UTCP (host A), as references. --perf NAME:RUNS
records `perf record -g` of that variant's worker during those runs; --strace NAME:RUNS counts
its worker's syscalls (strace -c -f; it slows the run: the counts per request are what it is
for). Files go to --out."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench import http as H
from bench.httpd_ab import ab_plan, runs_of, server_pids, stack_view, summarize, timed_log


def start_variant(plan: H.Plan, bed: H.Bed, name: str, shim: Path, port: int,
                  stack: contextlib.ExitStack, extra_env: dict[str, str] | None = None,
                  ) -> H.System:  # fmt: skip
    s = H.System(name, bed.a, bed.a.host_ip, port, f"nginx under mstack-run, {shim}", True)
    prefix = bed.work / f"nginx-{name}"
    prefix.mkdir()
    policy = prefix / "policy.toml"
    policy.write_text(f'[apps.bench-nginx]\nexe = ["nginx"]\nlisten = ["{s.ip}:{s.port}"]\n')
    env = {
        **os.environ,
        "MSTACK_RUN_DIR": str(bed.d.run_dir),
        "MSTACK_SHIM": str(shim),
        **(extra_env or {}),
    }
    run = [str(H.BIN / "mstack-run"), "--policy", str(policy), "--app", "bench-nginx", "--"]
    p = H.start_nginx(plan, bed, prefix, [f"{s.ip}:{s.port}"], run, env)
    stack.callback(H.stop_process, p, 10.0)
    s.procs = [p]
    H.wait_listening(s.ip, s.port, [p], f"nginx ({name})")
    carried, why = H.probe_utcp(bed, s)
    if not carried:
        raise H.BenchError(f"{name}: UTCP does not carry its connections ({why}): "
                           f"{H._tail(prefix / 'stderr')}")  # fmt: skip
    return s


def worker_pid(s: H.System) -> int:
    """nginx's worker: the youngest nginx process under the variant's master."""
    kids = [q for q in psutil.Process(s.pids()[0]).children(recursive=True)
            if q.name() == "nginx"]  # fmt: skip
    return max(kids, key=lambda q: q.create_time()).pid if kids else s.pids()[0]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.nginx_ab")
    ap.add_argument("--variant", action="append", default=[], help="NAME=PATH to libmstack.so")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME:KEY=VALUE, an environment variable for that variant's nginx "
                         "(e.g. off:MSTACK_AUTOCORK=0; repeatable)")  # fmt: skip
    ap.add_argument("--nginx", action="store_true", help="kernel nginx on host B too")
    ap.add_argument("--httpd", action="store_true", help="mstack-httpd on UTCP too")
    ap.add_argument("--size", type=int, default=1, help="KB")
    ap.add_argument("--mode", default="keepalive", choices=["close", "keepalive"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warm", type=int, default=1, help="unlogged runs of each first")
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--perf", action="append", default=[], help="NAME:1,3 (repeatable)")
    ap.add_argument("--perf-freq", type=int, default=2000)
    ap.add_argument("--strace", action="append", default=[], help="NAME:RUNS (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nginx-ab"))
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)

    perf_runs, strace_runs = runs_of(a.perf), runs_of(a.strace)
    refs = (["nginx-kernel"] if a.nginx else []) + (["httpd-utcp"] if a.httpd else [])
    plan = ab_plan(a, [a.size * 1024], refs)
    log = timed_log()

    rows: list[dict[str, Any]] = []
    with H.testbed(plan, log) as bed, contextlib.ExitStack() as stack:
        systems = list(bed.systems.values())
        for i, v in enumerate(a.variant):
            name, path = v.split("=", 1)
            env = dict(
                e.split(":", 1)[1].split("=", 1) for e in a.env if e.split(":", 1)[0] == name
            )
            systems.append(start_variant(plan, bed, name, Path(path), 8100 + i, stack, env))
        for s in systems:
            bad = [v for v in H.verify(bed, s, "before") if not v["ok"]]
            if bad:
                log(f"{s.name}: verification failed: {bad[0]['detail']}")
        for _ in range(a.warm):
            for s in systems:
                r = H.rps_run(plan, bed.cg, s, a.mode, a.size * 1024, -1)
                log(f"warm {s.name:<14} {r['rps']:8.0f} req/s")
        for run in range(1, a.runs + 1):
            k = (run - 1) % len(systems)
            for s in systems[k:] + systems[:k]:
                tool, is_strace = None, False
                if run in perf_runs.get(s.name, ()):
                    tool = subprocess.Popen(
                        ["perf", "record", "-g", "-F", str(a.perf_freq), "-p",
                         str(worker_pid(s)), "-o", str(a.out / f"perf-{s.name}-run{run}.data"),
                         "--", "sleep", str(a.seconds + 0.6)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(0.3)
                elif run in strace_runs.get(s.name, ()):
                    is_strace = True
                    tool = subprocess.Popen(
                        ["strace", "-c", "-f", "-o", str(a.out / f"strace-{s.name}-run{run}.txt"),
                         "-p", str(worker_pid(s))],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(0.5)
                r = H.rps_run(plan, bed.cg, s, a.mode, a.size * 1024, run)
                if tool is not None:
                    if is_strace:
                        tool.send_signal(2)
                    tool.wait(timeout=60)
                r["run"] = run
                r["server_pids"] = server_pids(s.pids())
                if s.port >= 8100:
                    r["server_stack"] = stack_view(worker_pid(s))
                rows.append(r)
                log(f"run {run} {s.name:<14} {r['rps']:8.0f} req/s  own "
                    f"{r['cpu_per_req_own_us'] or 0:7.1f} us/req  server "
                    f"{r['server_cpu_per_req_us'] or 0:7.1f} us/req  requests {r['requests']}"
                    + ("" if r["ok"] else f"  FAILED {r['error']}"))  # fmt: skip
        for s in systems:
            bad = [v for v in H.verify(bed, s, "after") if not v["ok"]]
            if bad:
                log(f"{s.name}: verification after failed: {bad[0]['detail']}")
    print(f"\n{a.mode} {a.size} KB, {a.runs} runs x {a.seconds} s interleaved")
    summarize([s.name for s in systems], rows)
    (a.out / "runs.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
